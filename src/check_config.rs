//! `portsyncd check-config [--config PATH] [FLAGS]`: validates what the
//! daemon would run with, without starting it, for deployment pipelines
//! and `ExecStartPre=`. Exit 0 and a summary on stdout when it would start;
//! exit 1 and the reason (naming the key or file at fault) otherwise.
//!
//! It runs the daemon's own validation ([`crate::config::validate`]), so
//! whatever the daemon refuses, this refuses with the same words; on top
//! it checks the metrics certificates, which the daemon only keeps the
//! endpoint closed for.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::CommandFactory;

use crate::config::{Cli, validate};
use crate::config_file::{LoadError, load};

/// The word that selects this command (first argument).
pub const SUBCOMMAND: &str = "check-config";

const ABOUT: &str = "Checks what portsyncd would run with, without starting it: the \
configuration file and flags (every key and value), the database config it names, the Redis \
user's password file and the metrics certificates. Prints a summary and exits 0 when the \
daemon would start; prints the reason, naming the key or file at fault, and exits 1 otherwise.";

/// `portsyncd check-config --help`: its own usage, then the flags it takes
/// (the daemon's, since it checks exactly those).
fn help() -> String {
    Cli::command()
        .name("portsyncd check-config")
        .bin_name("portsyncd check-config")
        .about(ABOUT)
        .override_usage("portsyncd check-config [--config PATH] [FLAGS]")
        .after_help(
            "Exit status: 0 the daemon would start; 1 it would not (the reason is on stderr).",
        )
        .render_help()
        .to_string()
}

/// Runs the check for `args` (`portsyncd check-config ...`).
pub fn main(args: Vec<OsString>) -> ExitCode {
    if args.iter().skip(2).any(|a| a == "--help" || a == "-h") {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    // The rest parses exactly like the daemon's own command line.
    let daemon_args = args.iter().take(1).chain(args.iter().skip(2)).cloned();
    let cli = match load(daemon_args) {
        Ok(cli) => cli,
        Err(LoadError::Cli(e)) => e.exit(),
        Err(LoadError::Config(e)) => return refuse(&e),
    };
    match check(&cli) {
        Ok(summary) => {
            println!("portsyncd check-config: OK\n{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => refuse(&e),
    }
}

fn refuse(e: &anyhow::Error) -> ExitCode {
    eprintln!("portsyncd check-config: {e:#}");
    ExitCode::FAILURE
}

/// Everything that can be checked before starting; a summary of it.
pub fn check(cli: &Cli) -> Result<String> {
    let namespace = cli.effective_namespace();
    let checked = validate(cli)?;
    let layout = checked.layout;
    let metrics = check_metrics_certificates(cli)?;
    let redis = match (&checked.access.user, &checked.access.password_file) {
        (Some(user), Some(file)) => {
            format!("Redis user {user:?}, password from {}", file.display())
        }
        (None, Some(file)) => format!("Redis user \"default\", password from {}", file.display()),
        _ => "Redis user \"default\", no password".to_string(),
    };
    Ok(format!(
        "  config file: {}\n  database config: {}{}\n  APPL_DB {} on instance {:?}, CONFIG_DB {} on {:?}, STATE_DB {} on {:?}\n  {redis}{}\n  queue capacity {} keys, netlink buffer {} bytes, shutdown timeout {} s\n  {metrics}",
        cli.config
            .as_deref()
            .map_or("(none: flags and defaults only)".into(), |p| p
                .display()
                .to_string()),
        cli.db_config.display(),
        namespace.map_or(String::new(), |ns| format!(" (namespace {ns})")),
        layout.appl.id,
        layout.appl.instance_name,
        layout.config.id,
        layout.config.instance_name,
        layout.state.id,
        layout.state.instance_name,
        if cli.redis_tcp {
            ", over TCP"
        } else {
            ", over unix sockets"
        },
        cli.queue_capacity,
        cli.netlink_rcvbuf,
        cli.shutdown_timeout,
    ))
}

/// The metrics endpoint's files, checked exactly as start-up checks them:
/// readable PEM, key private to its owner and matching the certificate, an
/// ECDSA P-384 key under the cnsa profile, nothing expired, CA and CRLs
/// usable. Returns the summary line.
pub fn check_metrics_certificates(cli: &Cli) -> Result<String> {
    if cli.no_metrics {
        return Ok("metrics endpoint: off (--no-metrics)".into());
    }
    let args = &cli.metrics;
    args.validate()?;
    let not_after = crate::metrics::check_tls_files(args)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(format!(
        "metrics endpoint: https://{} ({:?} profile), {} allowed client name(s) (compared as \
         certificates store them: DNS names in lower case, A-labels), certificates valid for {} \
         more day(s)",
        args.metrics_listen,
        args.tls_profile,
        args.metrics_allow_client.len(),
        (not_after - now) / 86_400
    ))
}
