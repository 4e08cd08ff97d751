//! Loading and checking the endpoint's certificate, key, CA and CRLs.
//!
//! Everything is checked before it is used, and every failure names the file
//! and the fix: a missing, unreadable, unparsable or expired file, and a key
//! that group or others may read, keep the endpoint closed (and are refused
//! by a reload, which keeps the files already in service). Every file is
//! read as a regular file under a size cap (`crate::bounded_file`).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::args::MetricsArgs;
use super::x509::not_after;
use crate::bounded_file;

/// The files behind one TLS configuration, parsed and checked.
#[derive(Debug)]
pub struct TlsMaterial {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
    /// Server certificate first, then any intermediates from the same file.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: RootCertStore,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// `notAfter` (Unix seconds) of the server certificate.
    pub cert_not_after: i64,
    /// Earliest `notAfter` (Unix seconds) among the CA certificates.
    pub ca_not_after: i64,
}

/// How a fix is phrased for each file.
const GENERATE_HINT: &str = "certs-example/gen-certs.sh shows how to make a set";

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads a file, turning the usual failures into errors that say what to do.
fn read(path: &Path, what: &str, flag: &str) -> Result<Vec<u8>> {
    bounded_file::read(path, what, bounded_file::PEM_CAP).map_err(|e| match e.kind() {
        ErrorKind::NotFound => anyhow!(
            "the {what} {} is missing: install it there or point {flag} at it ({GENERATE_HINT})",
            path.display()
        ),
        ErrorKind::PermissionDenied => anyhow!(
            "the {what} {} is not readable by this process: make it readable by the \
             portsyncd user (owner, mode 0600 for keys)",
            path.display()
        ),
        // bounded_file's own message names the file and the fix.
        _ => anyhow!("{e}"),
    })
}

/// Certificates in a PEM file; at least one.
fn read_certs(path: &Path, what: &str, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the {what} {} is not valid PEM: {e:?}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----); \
             {GENERATE_HINT}",
            path.display()
        );
    }
    Ok(certs)
}

/// Refuses a certificate that has expired or cannot be read; returns its
/// `notAfter`.
fn check_not_expired(der: &[u8], path: &Path, what: &str) -> Result<i64> {
    let end = not_after(der).ok_or_else(|| {
        anyhow!(
            "the {what} {} is not a readable X.509 certificate",
            path.display()
        )
    })?;
    let now = now_unix();
    if end <= now {
        bail!(
            "the {what} {} expired {} day(s) ago: renew it and reload (SIGHUP)",
            path.display(),
            (now - end) / 86_400
        );
    }
    Ok(end)
}

/// Refuses a private key that group or others may read.
fn check_key_permissions(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| {
        anyhow!(
            "the metrics key {} cannot be examined: {e}; install it with mode 0600",
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the metrics key {} has mode {mode:04o}, readable by group or others: \
             run `chmod 600 {}` (and keep it owned by the portsyncd user)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Loads and checks every file named by the arguments.
pub fn load(args: &MetricsArgs) -> Result<TlsMaterial> {
    let chain = read_certs(&args.metrics_cert, "metrics certificate", "--metrics-cert")?;
    let cert_not_after = check_not_expired(&chain[0], &args.metrics_cert, "metrics certificate")?;

    let key_pem = read(&args.metrics_key, "metrics key", "--metrics-key")?;
    check_key_permissions(&args.metrics_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow!(
            "the metrics key {} holds no PEM private key ({e:?}); {GENERATE_HINT}",
            args.metrics_key.display()
        )
    })?;

    let ca_certs = read_certs(&args.metrics_ca, "metrics CA", "--metrics-ca")?;
    let mut roots = RootCertStore::empty();
    let mut ca_not_after = i64::MAX;
    for ca in ca_certs {
        ca_not_after = ca_not_after.min(check_not_expired(&ca, &args.metrics_ca, "metrics CA")?);
        roots.add(ca).map_err(|e| {
            anyhow!(
                "the metrics CA {} holds a certificate that cannot be a trust anchor: {e}",
                args.metrics_ca.display()
            )
        })?;
    }

    let mut crls = Vec::new();
    for path in &args.metrics_crl {
        let pem = read(path, "metrics CRL", "--metrics-crl")?;
        let found = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("the metrics CRL {} is not valid PEM: {e:?}", path.display()))?;
        if found.is_empty() {
            bail!(
                "the metrics CRL {} holds no PEM CRL (-----BEGIN X509 CRL-----)",
                path.display()
            );
        }
        crls.extend(found);
    }

    Ok(TlsMaterial {
        cert_path: args.metrics_cert.clone(),
        key_path: args.metrics_key.clone(),
        ca_path: args.metrics_ca.clone(),
        chain,
        key,
        roots,
        crls,
        cert_not_after,
        ca_not_after,
    })
}

/// What identifies the current contents of every file, cheaply: a change of
/// any of these means "reload".
pub fn files_stamp(args: &MetricsArgs) -> Vec<Option<(u64, i64, i64, u64)>> {
    let paths = [&args.metrics_cert, &args.metrics_key, &args.metrics_ca]
        .into_iter()
        .chain(args.metrics_crl.iter());
    paths
        .map(|p| {
            fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        fs::write(&key, "x").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_key_permissions(&key).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        check_key_permissions(&key).unwrap();
    }

    #[test]
    fn a_missing_file_names_the_flag() {
        let err = read(
            Path::new("/nonexistent/ca.crt"),
            "metrics CA",
            "--metrics-ca",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/ca.crt") && err.contains("--metrics-ca"),
            "{err}"
        );
    }
}
