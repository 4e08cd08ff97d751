//! Reading the files the daemon is given (database config, TOML config,
//! certificates, keys, CRLs) without trusting what the path points at.
//!
//! A path may name `/dev/zero` (which would grow the process without end),
//! a FIFO (whose `open` blocks until a writer appears, hanging start-up
//! silently) or a directory. Every file the daemon reads goes through
//! [`read`]: it opens without blocking, refuses anything but a regular
//! file, and refuses a file larger than the caller's cap, each with an
//! error that names the path and what to do.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The cap for configuration files (database_config.json, the TOML file):
/// SONiC's largest stock database config is a few KiB.
pub const CONFIG_CAP: u64 = 1024 * 1024;

/// The cap for PEM files (certificates, keys, CA bundles, CRLs). A CRL of a
/// large CA runs to a few MiB; nothing legitimate comes near this.
pub const PEM_CAP: u64 = 16 * 1024 * 1024;

/// Reads the whole of `path`, which must be a regular file of at most `cap`
/// bytes. `what` names the file's role in errors ("database config").
pub fn read(path: &Path, what: &str, cap: u64) -> io::Result<Vec<u8>> {
    let context = |e: io::Error, doing: &str| {
        io::Error::new(
            e.kind(),
            format!("cannot {doing} {what} {}: {e}", path.display()),
        )
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer. It has no effect on regular files.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| context(e, "open"))?;
    let meta = file.metadata().map_err(|e| context(e, "stat"))?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} {} is not a regular file (a directory, device, FIFO or socket); point it at a regular file",
                path.display()
            ),
        ));
    }
    if meta.len() > cap {
        return Err(too_large(path, what, cap));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the stat and the read: read one byte past
    // the cap so that growth is refused too.
    (&mut file)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| context(e, "read"))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, what, cap));
    }
    Ok(bytes)
}

/// [`read`], then UTF-8 (JSON and TOML are text).
pub fn read_to_string(path: &Path, what: &str, cap: u64) -> io::Result<String> {
    String::from_utf8(read(path, what, cap)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{what} {} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn too_large(path: &Path, what: &str, cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{what} {} is larger than {cap} bytes; is this the right file?",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_under_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read(&path, "test file", 5).unwrap(), b"hello");
        let err = read(&path, "test file", 4).unwrap_err();
        assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [Path::new("/dev/zero"), &fifo, dir.path()] {
            let err = read(path, "test file", CONFIG_CAP).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }

    #[test]
    fn a_missing_file_names_the_path_and_role() {
        let err = read(Path::new("/nonexistent/x.json"), "database config", 10).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("database config /nonexistent/x.json"),
            "{text}"
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ab\xffcd").unwrap();
        let err = read_to_string(&path, "TOML config", 100).unwrap_err();
        assert!(err.to_string().contains("offset 2"), "{err}");
    }
}
