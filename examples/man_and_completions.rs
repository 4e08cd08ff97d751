//! Writes portsyncd's man page and shell completions into a directory,
//! generated from the daemon's own command-line definition
//! (`portsyncd::config::Cli`, through clap's `CommandFactory`):
//!
//! ```text
//! cargo run --locked --example man_and_completions -- OUTDIR
//! ```
//!
//! `scripts/package.sh` runs it before `cargo deb`, which packages what it
//! writes. It is an example rather than a build script because the
//! definition lives in the library (it names types from `metrics` and
//! `logging`), and an example is built by every `--all-targets` clippy and
//! test run: a flag added to `Cli` reaches the man page and the completions
//! on the next package build, with nothing to keep in step by hand.
//!
//! Written: `portsyncd.8` (section 8: a daemon), `portsyncd.bash`,
//! `_portsyncd` (zsh), `portsyncd.fish`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// The sections clap cannot know: FILES, SIGNALS, EXIT STATUS (roff).
const SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/portsyncd/portsyncd.toml\fR
The configuration file of the systemd unit (\fB\-\-config\fR); each key is a flag's name with _ for \-. Check it with \fBportsyncd check\-config \-\-config\fR \fIFILE\fR.
.TP
\fI/var/run/redis/sonic\-db/database_config.json\fR
SONiC's Redis layout (\fB\-\-db\-config\fR); \fIdatabase_global.json\fR beside it for \fB\-\-namespace\fR.
.TP
\fI/etc/portsyncd/metrics/\fR
The metrics endpoint's \fIserver.crt\fR, \fIserver.key\fR (mode 0600, owned by the daemon's user) and \fIca.crt\fR; the directory owned by that user, mode 0700.
.TP
\fB\-\-redis\-password\-file\fR
The Redis ACL user's password, mode 0600; never logged.
.TP
\fI/dev/log\fR
The syslog socket (\fB\-\-syslog\-socket\fR).
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop: pending writes are flushed to Redis for at most \fB\-\-shutdown\-timeout\fR seconds, then the daemon exits 0.
.TP
\fBSIGHUP\fR
Reload the metrics endpoint's certificate, key, CA and CRLs (a burst of signals is one reload; a bad set keeps the old one in service). Without the endpoint it is logged and ignored.
.SH "EXIT STATUS"
.TP
\fB0\fR
Stopped by SIGTERM or SIGINT; \fBcheck\-config\fR: the daemon would start.
.TP
\fB1\fR
A fatal error at run time (the netlink socket cannot be opened, ...); \fBcheck\-config\fR: the daemon would not start, or the endpoint would stay closed (the reason is on stderr).
.TP
\fB2\fR
A configuration the daemon refuses (a flag, a key of the file, the database config, the Redis password file), named on stderr. The shipped unit does not restart on it.
.TP
\fB101\fR
A panic in any thread (a bug: please report it).
"#;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: man_and_completions OUTDIR");
        return ExitCode::from(2);
    };
    match write_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man_and_completions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = portsyncd::config::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("portsyncd {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_extra_section(&mut page)?;
    page.extend_from_slice(SECTIONS.as_bytes());
    man.render_version_section(&mut page)
        .context("cannot render the man page")?;
    let path = dir.join("portsyncd.8");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "portsyncd", dir).with_context(|| {
            format!("cannot write the {shell} completion into {}", dir.display())
        })?;
    }
    Ok(())
}
