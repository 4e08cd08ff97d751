//! Log output: text or JSON lines to syslog, stdout or stderr, filtered by a
//! level that can change while the daemon runs.
//!
//! On a switch the level and the output come from CONFIG_DB
//! `LOGGER|portsyncd` (see `sonic::logger_table`), as for every swss daemon;
//! `--log-level` and `--log-output` on the command line win over it.

pub mod panic_exit;
pub mod severity;
pub mod syslog;

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use tracing::level_filters::LevelFilter;
use tracing::{Subscriber, info};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, reload};

pub use severity::{LogOutput, Severity};
pub use syslog::SyslogWriter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the logger is set up with (the command line and the file, as
/// the configuration reads them): kept here so the logger does not depend on
/// the command line's definition.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `--log-level` as given; it wins over CONFIG_DB.
    pub level: Option<String>,
    /// `--log-output` as given; it wins over CONFIG_DB.
    pub output: Option<LogOutput>,
    pub syslog_socket: std::path::PathBuf,
}

/// The output every log line goes to right now (a [`LogOutput`] as u8).
static OUTPUT: AtomicU8 = AtomicU8::new(LogOutput::DEFAULT as u8);
static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Changes the level and output of the installed logger at run time.
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `--log-level` as given; it wins over CONFIG_DB.
    level_flag: Option<String>,
    /// `--log-output` as given; it wins over CONFIG_DB.
    output_flag: Option<LogOutput>,
    /// What CONFIG_DB said last, so that only changes are logged.
    db_level: Mutex<Option<Severity>>,
    db_output: Mutex<Option<LogOutput>>,
}

/// The logger's controls, once [`init`] has installed it.
pub fn control() -> Option<&'static LogControl> {
    CONTROL.get()
}

fn current_output() -> LogOutput {
    match OUTPUT.load(Ordering::Relaxed) {
        x if x == LogOutput::Stdout as u8 => LogOutput::Stdout,
        x if x == LogOutput::Stderr as u8 => LogOutput::Stderr,
        _ => LogOutput::Syslog,
    }
}

/// Installs the logger. Until CONFIG_DB is read, the level is the flag's or
/// NOTICE and the output the flag's or SYSLOG, as for upstream daemons.
pub fn init(cli: &LogSettings) -> Result<()> {
    let level = cli.level.as_deref();
    let filter = match level {
        Some(text) => flag_filter(text)?,
        None => level_filter(Severity::DEFAULT),
    };
    let output = cli.output.unwrap_or(LogOutput::DEFAULT);
    OUTPUT.store(output as u8, Ordering::Relaxed);
    let (filter, handle) = reload::Layer::new(filter);
    let to_std = fmt_layer(cli.format, StdStreams, true)
        .with_filter(filter_fn(|_| current_output() != LogOutput::Syslog));
    let to_syslog = fmt_layer(
        cli.format,
        SyslogWriter::new(cli.syslog_socket.clone()),
        false,
    )
    .with_filter(filter_fn(|_| current_output() == LogOutput::Syslog));
    tracing_subscriber::registry()
        .with(filter)
        .with(to_std)
        .with(to_syslog)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    let _ = CONTROL.set(LogControl {
        filter: handle,
        level_flag: cli.level.clone(),
        output_flag: cli.output,
        db_level: Mutex::new(None),
        db_output: Mutex::new(None),
    });
    match level {
        Some(text) => info!(level = text, source = "--log-level", "log level set"),
        None => info!(
            level = Severity::DEFAULT.as_str(),
            source = "default until CONFIG_DB LOGGER|portsyncd is read",
            "log level set"
        ),
    }
    Ok(())
}

/// `--log-level`: a SONiC level name (NOTICE, debug, ...) or a tracing
/// filter such as `portsyncd=debug`.
pub fn check_level(text: &str) -> Result<()> {
    flag_filter(text).map(drop)
}

fn flag_filter(text: &str) -> Result<EnvFilter> {
    if let Some(severity) = Severity::from_flag(text) {
        return Ok(level_filter(severity));
    }
    let wrong = || {
        format!(
            "{text:?} is neither a SONiC level (EMERG, ALERT, CRIT, ERROR, WARN, \
             NOTICE, INFO, DEBUG) nor a tracing filter (trace, off, portsyncd=debug, ...)"
        )
    };
    // A bare word would parse as a target name and silently show nothing.
    let bare_word = !text.contains(['=', ',', '[']);
    if bare_word && !["trace", "off"].contains(&text.to_ascii_lowercase().as_str()) {
        anyhow::bail!(wrong());
    }
    EnvFilter::try_new(text).with_context(wrong)
}

fn level_filter(severity: Severity) -> EnvFilter {
    EnvFilter::default().add_directive(severity.level_filter().into())
}

impl LogControl {
    /// Applies CONFIG_DB's `LOGLEVEL` unless `--log-level` was given; logs
    /// each change with its source.
    pub fn apply_db_level(&self, severity: Severity, source: &str) {
        let flag = self.level_flag.as_deref().map(|v| ("--log-level", v));
        if !db_wins(&self.db_level, severity, severity.as_str(), flag, source) {
            return;
        }
        // Said after the change when the new level shows it (so every line
        // after it follows the new level), before the change otherwise.
        let shows_info = severity.level_filter() >= LevelFilter::INFO;
        if !shows_info {
            info!(
                level = severity.as_str(),
                source,
                event = "log_level_changed",
                "log level set"
            );
        }
        if let Err(e) = self.filter.reload(level_filter(severity)) {
            tracing::error!(error = %e, "cannot change the log level");
        }
        if shows_info {
            info!(
                level = severity.as_str(),
                source,
                event = "log_level_changed",
                "log level set"
            );
        }
    }

    /// Applies CONFIG_DB's `LOGOUTPUT` unless `--log-output` was given.
    pub fn apply_db_output(&self, output: LogOutput, source: &str) {
        let flag = self.output_flag.map(|o| ("--log-output", o.as_str()));
        if !db_wins(&self.db_output, output, output.as_str(), flag, source) {
            return;
        }
        if current_output() != output {
            info!(output = output.as_str(), source, "log output moves");
            OUTPUT.store(output as u8, Ordering::Relaxed);
        }
        info!(output = output.as_str(), source, "log output set");
    }
}

/// Whether CONFIG_DB's `value` (called `name`) is to be applied: it differs
/// from the last one seen in `slot`, and no command-line `flag` (name, value)
/// overrides it. An overridden change is said once.
fn db_wins<T: PartialEq>(
    slot: &Mutex<Option<T>>,
    value: T,
    name: &str,
    flag: Option<(&str, &str)>,
    source: &str,
) -> bool {
    let mut last = slot.lock().unwrap_or_else(|e| e.into_inner());
    if last.as_ref() == Some(&value) {
        return false;
    }
    *last = Some(value);
    match flag {
        None => true,
        Some((flag, kept)) => {
            info!(
                kept,
                ignored = name,
                source = flag,
                "{flag} wins over {source}"
            );
            false
        }
    }
}

/// One formatting layer; syslog stamps its own time, so it gets none.
fn fmt_layer<S, W>(format: LogFormat, writer: W, with_time: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = fmt::layer().with_writer(writer).with_target(false);
    match (format, with_time) {
        (LogFormat::Text, true) => layer.with_ansi(io::stderr().is_terminal()).boxed(),
        (LogFormat::Text, false) => layer.with_ansi(false).without_time().boxed(),
        (LogFormat::Json, true) => layer.json().flatten_event(true).boxed(),
        (LogFormat::Json, false) => layer.json().flatten_event(true).without_time().boxed(),
    }
}

/// stdout or stderr, whichever [`current_output`] names.
#[derive(Clone, Copy)]
struct StdStreams;

enum StdStream {
    Out(io::Stdout),
    Err(io::Stderr),
}

impl<'a> MakeWriter<'a> for StdStreams {
    type Writer = StdStream;

    fn make_writer(&'a self) -> StdStream {
        match current_output() {
            LogOutput::Stdout => StdStream::Out(io::stdout()),
            _ => StdStream::Err(io::stderr()),
        }
    }
}

impl Write for StdStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StdStream::Out(s) => s.write(buf),
            StdStream::Err(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            StdStream::Out(s) => s.flush(),
            StdStream::Err(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_flag_takes_sonic_names_and_tracing_filters() {
        for ok in [
            "NOTICE",
            "debug",
            "Crit",
            "trace",
            "off",
            "portsyncd=trace,info",
        ] {
            assert!(flag_filter(ok).is_ok(), "{ok} refused");
        }
        for bad in ["loud", "verbose", "portsyncd=loud"] {
            let e = flag_filter(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
