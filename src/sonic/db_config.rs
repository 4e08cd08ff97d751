//! SONiC's `database_config.json`: where each logical database lives.
//!
//! SONiC never hard-codes database numbers or separators; every daemon reads
//! them from this file, so we do too. Multi-ASIC switches keep one file per
//! namespace; inside a namespace's containers that file is at the default
//! path. On the host, `database_global.json` lists them under `INCLUDES`.
//! Both files are read through [`crate::bounded_file`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::bounded_file::{self, CONFIG_CAP};

/// Default location of the single-namespace configuration on a switch.
pub const DEFAULT_DB_CONFIG: &str = "/var/run/redis/sonic-db/database_config.json";
/// File name of the multi-ASIC index that sits beside the default config.
pub const GLOBAL_CONFIG_NAME: &str = "database_global.json";

/// One Redis server as the file describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// TCP host, used only when the operator asks for TCP.
    #[serde(default)]
    pub hostname: Option<String>,
    /// TCP port, used only when the operator asks for TCP.
    #[serde(default)]
    pub port: Option<u16>,
    /// The unix socket the stock daemons connect through by default.
    #[serde(default)]
    pub unix_socket_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RawDatabase {
    id: i64,
    separator: String,
    instance: String,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(rename = "INSTANCES")]
    instances: HashMap<String, Instance>,
    #[serde(rename = "DATABASES")]
    databases: HashMap<String, RawDatabase>,
}

#[derive(Debug, Deserialize)]
struct RawInclude {
    #[serde(default)]
    namespace: Option<String>,
    include: String,
}

#[derive(Debug, Deserialize)]
struct RawGlobal {
    #[serde(rename = "INCLUDES")]
    includes: Vec<RawInclude>,
}

/// A logical database resolved to its server, number and key separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The name in the file, e.g. `STATE_DB`, kept for error messages.
    pub name: String,
    /// The Redis database number (`SELECT id`).
    pub id: i64,
    /// Between table name and key: `:` in APPL_DB, `|` in CONFIG_DB and STATE_DB.
    pub separator: String,
    /// Name of the instance, so callers can tell whether two databases share a server.
    pub instance_name: String,
    /// Where that server listens.
    pub instance: Instance,
}

impl Database {
    /// The full Redis key of `key` in `table`, e.g. `PORT_TABLE|Ethernet0`.
    pub fn key(&self, table: &str, key: &str) -> String {
        format!("{table}{}{key}", self.separator)
    }
}

/// The three databases portsyncd uses.
#[derive(Debug, Clone)]
pub struct DbLayout {
    pub appl: Database,
    pub config: Database,
    pub state: Database,
}

/// Parses one `database_config.json` text; `origin` names it in errors.
pub fn parse_layout(text: &str, origin: &Path) -> Result<DbLayout> {
    let not_valid = || {
        format!(
            "{} is not a valid SONiC database_config.json (expected INSTANCES and DATABASES objects)",
            origin.display()
        )
    };
    let value: serde_json::Value = serde_json::from_str(text).with_context(not_valid)?;
    check_field_types(&value).with_context(|| format!("{}", origin.display()))?;
    let raw: RawConfig = serde_json::from_value(value).with_context(not_valid)?;
    let resolve = |name: &str| -> Result<Database> {
        let db = raw.databases.get(name).ok_or_else(|| {
            anyhow!(
                "{}: DATABASES has no {name}; portsyncd needs APPL_DB, CONFIG_DB and STATE_DB",
                origin.display()
            )
        })?;
        let instance = raw.instances.get(&db.instance).ok_or_else(|| {
            anyhow!(
                "{}: {name} names instance {:?}, which INSTANCES does not define",
                origin.display(),
                db.instance
            )
        })?;
        if !(0..=1_000_000).contains(&db.id) {
            bail!(
                "{}: {name} has id {}, which is not a Redis database number",
                origin.display(),
                db.id
            );
        }
        if db.separator.is_empty() {
            bail!("{}: {name} has an empty separator", origin.display());
        }
        Ok(Database {
            name: name.to_string(),
            id: db.id,
            separator: db.separator.clone(),
            instance_name: db.instance.clone(),
            instance: instance.clone(),
        })
    };
    let layout = DbLayout {
        appl: resolve("APPL_DB")?,
        config: resolve("CONFIG_DB")?,
        state: resolve("STATE_DB")?,
    };
    let mut names: Vec<&String> = raw.databases.keys().collect();
    names.sort();
    for name in names {
        let db = &raw.databases[name];
        if !raw.instances.contains_key(&db.instance) {
            bail!(
                "{}: {name} names instance {:?}, which INSTANCES does not define",
                origin.display(),
                db.instance
            );
        }
        // Two databases in one Redis database would overwrite each other.
        for ours in [&layout.appl, &layout.config, &layout.state] {
            let same_server = db.instance == ours.instance_name
                || (ours.instance.unix_socket_path.is_some()
                    && raw.instances[&db.instance].unix_socket_path
                        == ours.instance.unix_socket_path);
            if *name != ours.name && db.id == ours.id && same_server {
                bail!(
                    "{}: {name} and {} are both database {} on instance {:?}; they would \
                     overwrite each other's keys: give each its own id",
                    origin.display(),
                    ours.name,
                    ours.id,
                    ours.instance_name
                );
            }
        }
    }
    Ok(layout)
}

/// Names the field whose value has the wrong type (serde's own message
/// names only the expected type).
fn check_field_types(value: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    type Check = fn(&Value) -> bool;
    let fields: [(&str, &str, Check); 6] = [
        ("INSTANCES", "hostname", Value::is_string),
        ("INSTANCES", "port", |v| {
            v.as_u64().is_some_and(|p| p <= 65_535)
        }),
        ("INSTANCES", "unix_socket_path", Value::is_string),
        ("DATABASES", "id", Value::is_i64),
        ("DATABASES", "separator", Value::is_string),
        ("DATABASES", "instance", Value::is_string),
    ];
    for (section, field, ok) in fields {
        let entries = value
            .get(section)
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        for (name, entry) in entries {
            if let Some(v) = entry.get(field).filter(|v| !v.is_null() && !ok(v)) {
                bail!("{section}.{name}.{field} is {v}, which is not a valid {field}");
            }
        }
    }
    Ok(())
}

/// Reads the layout from `path`, or for a multi-ASIC `namespace` from the
/// config that `database_global.json` (beside `path`) lists for it.
pub fn load_layout(path: &Path, namespace: Option<&str>) -> Result<DbLayout> {
    let path = match namespace.filter(|ns| !ns.is_empty()) {
        None => path.to_path_buf(),
        Some(ns) => namespace_config_path(path, ns)?,
    };
    let text = bounded_file::read_to_string(&path, "database config", CONFIG_CAP)
        .context("is the SONiC database container running? (or pass --db-config PATH)")?;
    parse_layout(&text, &path)
}

fn namespace_config_path(path: &Path, namespace: &str) -> Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let global = dir.join(GLOBAL_CONFIG_NAME);
    let text = bounded_file::read_to_string(&global, "multi-ASIC index", CONFIG_CAP).with_context(
        || {
            format!(
                "--namespace {namespace} is resolved through {GLOBAL_CONFIG_NAME}, which exists \
                 only beside the host's database config; inside a swssN container drop \
                 --namespace (the default --db-config is already the namespace's own)"
            )
        },
    )?;
    let raw: RawGlobal = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid database_global.json (expected INCLUDES)",
            global.display()
        )
    })?;
    let include = raw
        .includes
        .iter()
        .find(|inc| inc.namespace.as_deref() == Some(namespace))
        .ok_or_else(|| anyhow!("{} lists no namespace {namespace:?}", global.display()))?;
    Ok(dir.join(&include.include))
}

/// The stock single-instance layout, for unit tests that need a layout.
#[cfg(test)]
pub(crate) const STOCK_LAYOUT: &str = r#"{
        "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": "/var/run/redis/redis.sock"}},
        "DATABASES": {
            "APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
            "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"},
            "STATE_DB": {"id": 6, "separator": "|", "instance": "redis"},
            "COUNTERS_DB": {"id": 2, "separator": ":", "instance": "redis"}
        },
        "VERSION": "1.0"
    }"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stock_layout() {
        let layout = parse_layout(STOCK_LAYOUT, Path::new("x.json")).unwrap();
        assert_eq!(layout.appl.id, 0);
        assert_eq!(layout.config.id, 4);
        assert_eq!(layout.state.id, 6);
        assert_eq!(
            layout.state.key("PORT_TABLE", "Ethernet0"),
            "PORT_TABLE|Ethernet0"
        );
        assert_eq!(
            layout.appl.key("PORT_TABLE", "Ethernet0"),
            "PORT_TABLE:Ethernet0"
        );
        assert_eq!(
            layout.appl.instance.unix_socket_path.as_deref(),
            Some(Path::new("/var/run/redis/redis.sock"))
        );
    }

    #[test]
    fn invalid_json_names_the_file() {
        let err = parse_layout("{not json", Path::new("/etc/bad.json")).unwrap_err();
        assert!(format!("{err:#}").contains("/etc/bad.json"), "{err:#}");
    }

    #[test]
    fn missing_database_is_named() {
        let text = STOCK_LAYOUT.replace("\"STATE_DB\"", "\"OTHER_DB\"");
        let err = parse_layout(&text, Path::new("c.json")).unwrap_err();
        assert!(format!("{err:#}").contains("no STATE_DB"), "{err:#}");
    }

    #[test]
    fn unknown_instance_is_named() {
        let text = STOCK_LAYOUT.replace("\"instance\": \"redis\"}", "\"instance\": \"redis9\"}");
        let err = parse_layout(&text, Path::new("c.json")).unwrap_err();
        assert!(format!("{err:#}").contains("redis9"), "{err:#}");
    }

    #[test]
    fn shared_ids_and_unknown_instances_are_refused() {
        let text = STOCK_LAYOUT.replace("\"id\": 6", "\"id\": 4");
        let err = format!(
            "{:#}",
            parse_layout(&text, Path::new("c.json")).unwrap_err()
        );
        assert!(
            err.contains("CONFIG_DB and STATE_DB are both database 4"),
            "{err}"
        );
        let text = STOCK_LAYOUT.replace(
            "\"id\": 2, \"separator\": \":\", \"instance\": \"redis\"",
            "\"id\": 2, \"separator\": \":\", \"instance\": \"redis3\"",
        );
        let err = format!(
            "{:#}",
            parse_layout(&text, Path::new("c.json")).unwrap_err()
        );
        assert!(
            err.contains("COUNTERS_DB names instance \"redis3\""),
            "{err}"
        );
    }

    #[test]
    fn namespace_resolves_through_the_global_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("asic1")).unwrap();
        std::fs::write(
            dir.path().join(GLOBAL_CONFIG_NAME),
            r#"{"INCLUDES": [{"include": "database_config.json"},
                {"namespace": "asic1", "include": "asic1/database_config.json"}]}"#,
        )
        .unwrap();
        let asic = STOCK_LAYOUT.replace("/var/run/redis/redis.sock", "/var/run/redis1/redis.sock");
        std::fs::write(dir.path().join("asic1/database_config.json"), asic).unwrap();
        let layout = load_layout(&dir.path().join("database_config.json"), Some("asic1")).unwrap();
        assert_eq!(
            layout.state.instance.unix_socket_path.as_deref(),
            Some(Path::new("/var/run/redis1/redis.sock"))
        );
        let err = load_layout(&dir.path().join("database_config.json"), Some("asic7")).unwrap_err();
        assert!(format!("{err:#}").contains("asic7"));
    }
}
