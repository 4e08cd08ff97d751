//! swss-common's ProducerStateTable for APPL_DB `PORT_TABLE`: the one place
//! a script remains, because the protocol needs its steps to be atomic.
//!
//! The script runs by EVALSHA on the APPL_DB connection; after a Redis
//! restart the script cache is empty and the writer reloads it on NOSCRIPT.

use redis::{Cmd, Script};

use super::db_config::Database;

/// APPL_DB and STATE_DB table portsyncd writes.
pub const PORT_TABLE: &str = "PORT_TABLE";

const PRODUCER_LUA: &str = include_str!("lua/producer.lua");

/// The script and the key names it uses, fixed for the daemon's life.
pub struct Producer {
    script: Script,
    channel: String,
    key_set: String,
    del_set: String,
    /// `_PORT_TABLE:`: the staging hash of a key is this prefix and the key.
    staging_prefix: Vec<u8>,
}

impl Producer {
    pub fn new(appl: &Database) -> Self {
        Producer {
            script: Script::new(PRODUCER_LUA),
            channel: format!("{PORT_TABLE}_CHANNEL@{}", appl.id),
            key_set: format!("{PORT_TABLE}_KEY_SET"),
            del_set: format!("{PORT_TABLE}_DEL_SET"),
            staging_prefix: format!("_{PORT_TABLE}{}", appl.separator).into_bytes(),
        }
    }

    /// `SCRIPT LOAD`, for a fresh connection or after NOSCRIPT.
    pub fn load_command(&self) -> Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(PRODUCER_LUA);
        cmd
    }

    /// The one EVALSHA that sets `fields` of `key`, byte for byte.
    pub fn set(&self, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) -> Cmd {
        let mut staging = self.staging_prefix.clone();
        staging.extend_from_slice(key);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(4);
        cmd.arg(&self.channel).arg(&self.key_set);
        cmd.arg(staging).arg(&self.del_set);
        cmd.arg(key).arg("0");
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        cmd
    }
}

/// `<table><separator><name>` as bytes: Redis keys need not be UTF-8.
pub fn table_key(db: &Database, table: &str, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(table.len() + db.separator.len() + name.len());
    key.extend_from_slice(table.as_bytes());
    key.extend_from_slice(db.separator.as_bytes());
    key.extend_from_slice(name);
    key
}
