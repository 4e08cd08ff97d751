//! SONiC's log levels and outputs, as written in CONFIG_DB `LOGGER|<daemon>`
//! by `swssloglevel`, and how they map onto tracing and syslog.

use clap::ValueEnum;
use tracing::Level;
use tracing::level_filters::LevelFilter;

/// The `LOGLEVEL` values of CONFIG_DB `LOGGER|portsyncd`, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Emerg,
    Alert,
    Crit,
    Error,
    Warn,
    Notice,
    Info,
    Debug,
}

impl Severity {
    /// What SONiC uses when `LOGLEVEL` is missing or not understood.
    pub const DEFAULT: Severity = Severity::Notice;

    const ALL: [Severity; 8] = [
        Severity::Emerg,
        Severity::Alert,
        Severity::Crit,
        Severity::Error,
        Severity::Warn,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];

    /// The exact spelling SONiC stores in CONFIG_DB.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Emerg => "EMERG",
            Severity::Alert => "ALERT",
            Severity::Crit => "CRIT",
            Severity::Error => "ERROR",
            Severity::Warn => "WARN",
            Severity::Notice => "NOTICE",
            Severity::Info => "INFO",
            Severity::Debug => "DEBUG",
        }
    }

    /// Parses a CONFIG_DB value; SONiC writes these in upper case only.
    pub fn from_db(value: &str) -> Option<Severity> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Parses a `--log-level` value, in any case (`notice`, `DEBUG`, ...).
    pub fn from_flag(value: &str) -> Option<Severity> {
        Self::from_db(&value.to_ascii_uppercase())
    }

    /// The most verbose tracing level shown at this severity. tracing has
    /// five levels to SONiC's eight: the four worst share ERROR, and NOTICE
    /// and INFO share INFO (the daemon's `info!` lines are its notices, which
    /// SONiC shows by default).
    pub fn level_filter(self) -> LevelFilter {
        match self {
            Severity::Emerg | Severity::Alert | Severity::Crit | Severity::Error => {
                LevelFilter::ERROR
            }
            Severity::Warn => LevelFilter::WARN,
            Severity::Notice | Severity::Info => LevelFilter::INFO,
            Severity::Debug => LevelFilter::DEBUG,
        }
    }
}

/// Where log lines go: the `LOGOUTPUT` values of CONFIG_DB `LOGGER|portsyncd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogOutput {
    Syslog,
    Stdout,
    Stderr,
}

impl LogOutput {
    /// What SONiC uses when `LOGOUTPUT` is missing or not understood.
    pub const DEFAULT: LogOutput = LogOutput::Syslog;

    pub fn as_str(self) -> &'static str {
        match self {
            LogOutput::Syslog => "SYSLOG",
            LogOutput::Stdout => "STDOUT",
            LogOutput::Stderr => "STDERR",
        }
    }

    /// Parses a CONFIG_DB value (upper case, as SONiC writes it).
    pub fn from_db(value: &str) -> Option<LogOutput> {
        [LogOutput::Syslog, LogOutput::Stdout, LogOutput::Stderr]
            .into_iter()
            .find(|o| o.as_str() == value)
    }
}

/// The syslog severity (RFC 5424 numbering) of a tracing event. INFO lines
/// are the daemon's notices (see [`Severity::level_filter`]), so they go out
/// as `notice`.
pub fn syslog_severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 5,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sonic_name_round_trips() {
        for s in Severity::ALL {
            assert_eq!(Severity::from_db(s.as_str()), Some(s));
        }
        assert_eq!(
            Severity::from_db("debug"),
            None,
            "CONFIG_DB values are upper case"
        );
        assert_eq!(Severity::from_db("VERBOSE"), None);
        assert_eq!(Severity::from_flag("notice"), Some(Severity::Notice));
    }

    #[test]
    fn levels_map_onto_tracing() {
        assert_eq!(Severity::Emerg.level_filter(), LevelFilter::ERROR);
        assert_eq!(Severity::Crit.level_filter(), LevelFilter::ERROR);
        assert_eq!(Severity::Warn.level_filter(), LevelFilter::WARN);
        assert_eq!(Severity::Notice.level_filter(), LevelFilter::INFO);
        assert_eq!(Severity::Info.level_filter(), LevelFilter::INFO);
        assert_eq!(Severity::Debug.level_filter(), LevelFilter::DEBUG);
        assert_eq!(Severity::DEFAULT, Severity::Notice);
    }

    #[test]
    fn outputs_parse_and_default_to_syslog() {
        assert_eq!(LogOutput::from_db("STDERR"), Some(LogOutput::Stderr));
        assert_eq!(LogOutput::from_db("FILE"), None);
        assert_eq!(LogOutput::DEFAULT, LogOutput::Syslog);
    }

    #[test]
    fn syslog_severities_match() {
        assert_eq!(syslog_severity(&Level::ERROR), 3);
        assert_eq!(syslog_severity(&Level::WARN), 4);
        assert_eq!(syslog_severity(&Level::INFO), 5);
        assert_eq!(syslog_severity(&Level::DEBUG), 7);
    }
}
