//! The configuration file (`--config PATH`, TOML), read generically over
//! the command-line definition so that every flag, present and future, is a
//! file key without touching this loader:
//!
//! - the key is the flag's name with `_` for `-`: `queue_capacity = 1024`
//!   is `--queue-capacity 1024`;
//! - a switch takes a boolean (`no_metrics = true`), a repeatable flag an
//!   array, every other flag a string or a number;
//! - clap's own value parsers validate each value, and errors name the key
//!   and the file;
//! - a flag given on the command line wins over the file;
//! - the environment never wins over the file silently: a key set in the
//!   file whose flag also has its environment variable set to a different
//!   value is refused.
//!
//! Unknown keys, values of the wrong type, out-of-range values and
//! contradictions (clap's conflicts) are all refused at start-up.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::bounded_file::{self, CONFIG_CAP};
use crate::config::Cli;

/// The flag that names the file; it cannot itself be a key in the file.
const CONFIG_ARG: &str = "config";

/// Why the command line could not be turned into settings.
#[derive(Debug)]
pub enum LoadError {
    /// clap's own outcome (also `--help` and `--version`): let clap print it.
    Cli(clap::Error),
    /// A problem with the configuration file or its interplay with the
    /// command line and the environment.
    Config(anyhow::Error),
}

/// Parses the command line, then the file it names (if any), into [`Cli`].
pub fn load<I, T>(args: I) -> Result<Cli, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(LoadError::Cli)?;
    let Some(path) = matches.get_one::<PathBuf>(CONFIG_ARG).cloned() else {
        return Cli::from_arg_matches(&matches).map_err(LoadError::Cli);
    };
    let text = bounded_file::read_to_string(&path, "configuration file", CONFIG_CAP)
        .map_err(|e| LoadError::Config(e.into()))?;
    merge(&args, &matches, &text, &path).map_err(LoadError::Config)
}

/// The settings from the file text alone (no flags on the command line),
/// e.g. for fuzzing; `path` names the file in errors.
pub fn from_file_text(text: &str, path: &Path) -> Result<Cli> {
    let args = [OsString::from("portsyncd")];
    let matches = Cli::command().try_get_matches_from(&args)?;
    merge(&args, &matches, text, path)
}

/// The settings from `text` (the file at `path`) under the command line
/// `args` (already parsed into `matches`).
fn merge(args: &[OsString], matches: &ArgMatches, text: &str, path: &Path) -> Result<Cli> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let command = Cli::command();
    let mut from_file: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let arg = file_arg(&command, key).ok_or_else(|| unknown_key(&command, key, path))?;
        let flag_args =
            to_flag_args(arg, value).with_context(|| format!("{}: key `{key}`", path.display()))?;
        check_alone(&flag_args).with_context(|| format!("{}: key `{key}`", path.display()))?;
        check_environment(arg, &flag_args, path, |var| std::env::var_os(var))?;
        if matches.value_source(arg.get_id().as_str()) != Some(ValueSource::CommandLine) {
            from_file.extend(flag_args);
        }
    }
    let mut merged = vec![args.first().cloned().unwrap_or_else(|| "portsyncd".into())];
    merged.extend(from_file);
    merged.extend(args.iter().skip(1).cloned());
    let matches = command.try_get_matches_from(&merged).map_err(|e| {
        anyhow!(
            "{} together with the command line: {} (file keys are flag names with `_` for `-`)",
            path.display(),
            e.render().to_string().trim()
        )
    })?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The command-line argument that file key `key` sets, if there is one.
fn file_arg<'a>(command: &'a clap::Command, key: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|arg| {
        let long = arg.get_long().unwrap_or_default();
        !long.is_empty()
            && arg.get_id() != CONFIG_ARG
            && arg.get_id() != "help"
            && arg.get_id() != "version"
            && long.replace('-', "_") == key
    })
}

fn unknown_key(command: &clap::Command, key: &str, path: &Path) -> anyhow::Error {
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, CONFIG_ARG | "help" | "version"))
        .map(|l| l.replace('-', "_"))
        .collect();
    anyhow!(
        "{}: unknown key `{key}`; the keys are: {}",
        path.display(),
        known.join(", ")
    )
}

/// The command-line words that say what `value` says for `arg`.
fn to_flag_args(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>> {
    let flag = format!("--{}", arg.get_long().expect("file args have a long name"));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
            Ok(if *on { vec![flag.into()] } else { Vec::new() })
        }
        (ArgAction::SetTrue | ArgAction::SetFalse, _) => {
            bail!("is a switch: write true or false")
        }
        (ArgAction::Append, toml::Value::Array(items)) => items
            .iter()
            .map(|item| Ok([flag.clone().into(), scalar(item)?]))
            .collect::<Result<Vec<_>>>()
            .map(|pairs| pairs.into_iter().flatten().collect()),
        (ArgAction::Append, _) => bail!("may be repeated: write an array, e.g. [\"a\", \"b\"]"),
        (_, toml::Value::Array(_)) => bail!("takes one value, not an array"),
        (_, item) => Ok(vec![flag.into(), scalar(item)?]),
    }
}

fn scalar(value: &toml::Value) -> Result<OsString> {
    match value {
        toml::Value::String(s) => Ok(s.into()),
        toml::Value::Integer(n) => Ok(n.to_string().into()),
        toml::Value::Float(x) => Ok(x.to_string().into()),
        toml::Value::Boolean(b) => Ok(b.to_string().into()),
        other => bail!("a {} is not a value this key takes", other.type_str()),
    }
}

/// Validates one key's words with clap's own value parser, before they are
/// merged, so that the error names the key rather than a flag.
fn check_alone(flag_args: &[OsString]) -> Result<()> {
    if flag_args.is_empty() {
        return Ok(());
    }
    let words = std::iter::once(OsString::from("portsyncd")).chain(flag_args.iter().cloned());
    Cli::command()
        .try_get_matches_from(words)
        .map(drop)
        .map_err(|e| anyhow!("{}", without_flag(&e)))
}

/// clap's message for one key, without its "Usage:" and "For more
/// information" lines and without the flag's name (the caller names the
/// key), keeping the possible values and the tip.
fn without_flag(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut message = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(flag) = e.get(clap::error::ContextKind::InvalidArg) {
        message = message.replace(&format!(" for '{flag}'"), "");
    }
    message.trim_start_matches("error: ").to_string()
}

/// Refuses a file key whose flag's environment variable says otherwise.
fn check_environment(
    arg: &Arg,
    flag_args: &[OsString],
    path: &Path,
    env: impl Fn(&OsStr) -> Option<OsString>,
) -> Result<()> {
    let Some(var) = arg.get_env() else {
        return Ok(());
    };
    let Some(env_value) = env(var) else {
        return Ok(());
    };
    let file_values: Vec<&OsStr> = flag_args
        .iter()
        .skip(1)
        .step_by(2)
        .map(|v| v.as_os_str())
        .collect();
    if file_values == [env_value.as_os_str()] {
        return Ok(());
    }
    bail!(
        "{}: key `{}` is set in the file and by the environment variable {} to something else; \
         set it in one place (the file wins over the environment only when they agree)",
        path.display(),
        arg.get_long().unwrap_or_default().replace('-', "_"),
        var.to_string_lossy()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(args: &[&str], text: &str) -> Result<Cli> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let matches = Cli::command().try_get_matches_from(&args).unwrap();
        merge(
            &args,
            &matches,
            text,
            Path::new("/etc/portsyncd/portsyncd.toml"),
        )
    }

    fn error(args: &[&str], text: &str) -> String {
        format!(
            "{:#}",
            load_text(args, text).expect_err("should be refused")
        )
    }

    #[test]
    fn every_key_sets_its_flag() {
        let cli = load_text(
            &["portsyncd"],
            r#"
                db_config = "/x/database_config.json"
                namespace = "asic1"
                redis_tcp = true
                no_metrics = true
                log_format = "json"
                log_level = "debug"
                netlink_rcvbuf = 4194304
                queue_capacity = 1024
                shutdown_timeout = 10
            "#,
        )
        .unwrap();
        assert_eq!(cli.db_config, PathBuf::from("/x/database_config.json"));
        assert_eq!(cli.namespace.as_deref(), Some("asic1"));
        assert!(cli.redis_tcp && cli.no_metrics);
        assert_eq!(cli.log_format, crate::config::LogFormat::Json);
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        assert_eq!(cli.netlink_rcvbuf, 4_194_304);
        assert_eq!(cli.queue_capacity, 1024);
        assert_eq!(cli.shutdown_timeout, 10);
    }

    /// Every key of the file, not a list kept by hand (a new flag is
    /// covered the day it is added): set alone in the file to a value its
    /// flag takes and that changes something, it gives the settings the
    /// flag gives on the command line.
    #[test]
    fn every_key_of_every_flag_sets_what_its_flag_sets() {
        use clap::Parser;
        let command = Cli::command();
        let parse = |words: &[String]| {
            let words = std::iter::once("portsyncd".to_string()).chain(words.iter().cloned());
            Cli::try_parse_from(words)
                .ok()
                .map(|cli| format!("{cli:?}"))
        };
        let defaults = parse(&[]).unwrap();
        let mut keys = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, CONFIG_ARG | "help" | "version") {
                continue;
            }
            let key = long.replace('-', "_");
            let flag = format!("--{long}");
            // (file text, command line) pairs to try, first one that the
            // flag takes and that changes a setting wins.
            let mut tries: Vec<(String, Vec<String>)> = Vec::new();
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                tries.push((format!("{key} = true"), vec![flag.clone()]));
            }
            let mut values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            values.extend(
                [
                    "17",
                    "1024",
                    "4194304",
                    "30",
                    "7",
                    "2",
                    "/x/file",
                    "asic1",
                    "[::1]:9999",
                ]
                .map(String::from),
            );
            for v in values {
                let text = if matches!(arg.get_action(), ArgAction::Append) {
                    format!("{key} = [\"{v}\"]")
                } else if v.parse::<i64>().is_ok() {
                    format!("{key} = {v}")
                } else {
                    format!("{key} = \"{v}\"")
                };
                tries.push((text, vec![flag.clone(), v]));
            }
            let Some((text, words, flags)) = tries.into_iter().find_map(|(text, words)| {
                parse(&words)
                    .filter(|cli| *cli != defaults)
                    .map(|cli| (text, words, cli))
            }) else {
                panic!("no value of {flag} to try in the file; add one to this test");
            };
            let from_file = load_text(&["portsyncd"], &format!("{text}\n"))
                .unwrap_or_else(|e| panic!("`{text}` refused, {words:?} taken: {e:#}"));
            assert_eq!(
                format!("{from_file:?}"),
                flags,
                "`{text}` does not set what {words:?} sets"
            );
            keys += 1;
        }
        assert!(keys >= 20, "only {keys} keys");
        eprintln!("{keys} keys checked");
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let cli = load_text(
            &[
                "portsyncd",
                "--queue-capacity",
                "2048",
                "--log-level",
                "warn",
            ],
            "queue_capacity = 1024\nlog_level = \"debug\"\nshutdown_timeout = 7\n",
        )
        .unwrap();
        assert_eq!(cli.queue_capacity, 2048);
        assert_eq!(cli.log_level.as_deref(), Some("warn"));
        assert_eq!(cli.shutdown_timeout, 7);
    }

    #[test]
    fn a_switch_set_false_in_the_file_stays_off() {
        let cli = load_text(&["portsyncd"], "no_metrics = false\n").unwrap();
        assert!(!cli.no_metrics);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_list_of_keys() {
        let e = error(&["portsyncd"], "queue_capacty = 1024\n");
        assert!(e.contains("unknown key `queue_capacty`"), "{e}");
        assert!(e.contains("queue_capacity"), "{e}");
        let e = error(&["portsyncd"], "config = \"/other.toml\"\n");
        assert!(e.contains("unknown key `config`"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let e = error(&["portsyncd"], "queue_capacity = 1\n");
        assert!(e.contains("key `queue_capacity`"), "{e}");
        assert!(e.contains("16..=1048576") || e.contains("16"), "{e}");
        let e = error(&["portsyncd"], "shutdown_timeout = 61\n");
        assert!(e.contains("key `shutdown_timeout`"), "{e}");
        let e = error(&["portsyncd"], "log_format = \"xml\"\n");
        assert!(e.contains("key `log_format`"), "{e}");
        let e = error(&["portsyncd"], "tls_profile = \"CNSA\"\n");
        assert!(
            e.contains("key `tls_profile`") && e.contains("[possible values: cnsa, modern]"),
            "{e}"
        );
        assert!(
            !e.contains("--tls-profile"),
            "names the key, not the flag: {e}"
        );
        let e = error(&["portsyncd"], "queue_capacity = \"lots\"\n");
        assert!(
            e.contains("key `queue_capacity`: invalid value 'lots'") && !e.contains("--queue"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = error(&["portsyncd"], "no_metrics = \"yes\"\n");
        assert!(
            e.contains("key `no_metrics`") && e.contains("true or false"),
            "{e}"
        );
        let e = error(&["portsyncd"], "queue_capacity = [1, 2]\n");
        assert!(
            e.contains("key `queue_capacity`") && e.contains("array"),
            "{e}"
        );
        let e = error(&["portsyncd"], "namespace = { name = \"asic0\" }\n");
        assert!(e.contains("key `namespace`"), "{e}");
    }

    #[test]
    fn the_environment_never_silently_contradicts_the_file() {
        let arg = Arg::new("metrics_cert")
            .long("metrics-cert")
            .env("PORTSYNCD_METRICS_CERT");
        let words: Vec<OsString> = vec!["--metrics-cert".into(), "/etc/a.crt".into()];
        let path = Path::new("/etc/portsyncd/portsyncd.toml");
        let unset = |_: &OsStr| None;
        let same = |_: &OsStr| Some(OsString::from("/etc/a.crt"));
        let other = |_: &OsStr| Some(OsString::from("/tmp/b.crt"));
        assert!(check_environment(&arg, &words, path, unset).is_ok());
        assert!(check_environment(&arg, &words, path, same).is_ok());
        let e = format!(
            "{:#}",
            check_environment(&arg, &words, path, other).unwrap_err()
        );
        assert!(
            e.contains("key `metrics_cert`") && e.contains("PORTSYNCD_METRICS_CERT"),
            "{e}"
        );
    }

    #[test]
    fn broken_toml_is_refused_with_the_file_name() {
        let e = error(&["portsyncd"], "queue_capacity = \n");
        assert!(e.contains("portsyncd.toml is not valid TOML"), "{e}");
    }
}
