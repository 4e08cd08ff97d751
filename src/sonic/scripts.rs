//! The Lua scripts that make each write atomic, and how to invoke them.
//!
//! Both run by EVALSHA; after a Redis restart the script cache is empty and
//! the writer reloads them on NOSCRIPT.

use redis::{Cmd, Script};

use super::db_config::DbLayout;
use crate::queue::{Target, Write};

/// APPL_DB and STATE_DB table portsyncd writes.
pub const PORT_TABLE: &str = "PORT_TABLE";

const STATE_PORT_LUA: &str = include_str!("lua/state_port.lua");
const PRODUCER_LUA: &str = include_str!("lua/producer.lua");

/// Loaded scripts and the key names they use, fixed for the daemon's life.
pub struct Scripts {
    state_port: Script,
    producer: Script,
    appl_id: String,
    state_id: String,
    appl_separator: String,
    state_separator: String,
    channel: String,
    key_set: String,
    del_set: String,
}

impl Scripts {
    pub fn new(layout: &DbLayout) -> Self {
        Scripts {
            state_port: Script::new(STATE_PORT_LUA),
            producer: Script::new(PRODUCER_LUA),
            appl_id: layout.appl.id.to_string(),
            state_id: layout.state.id.to_string(),
            appl_separator: layout.appl.separator.clone(),
            state_separator: layout.state.separator.clone(),
            channel: format!("{PORT_TABLE}_CHANNEL@{}", layout.appl.id),
            key_set: format!("{PORT_TABLE}_KEY_SET"),
            del_set: format!("{PORT_TABLE}_DEL_SET"),
        }
    }

    /// `SCRIPT LOAD` for every script, for a fresh connection or NOSCRIPT.
    pub fn load_commands(&self) -> [Cmd; 2] {
        [PRODUCER_LUA, STATE_PORT_LUA].map(|src| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(src);
            cmd
        })
    }

    /// The one EVALSHA that applies `write` to `target`.
    pub fn command(&self, target: &Target, write: &Write) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        let del = if write.delete_first { "1" } else { "0" };
        match target {
            Target::StatePort(port) => {
                cmd.arg(self.state_port.get_hash()).arg(2);
                cmd.arg(format!("{PORT_TABLE}{}{port}", self.appl_separator));
                cmd.arg(format!("{PORT_TABLE}{}{port}", self.state_separator));
                cmd.arg(&self.state_id_pair()).arg(del);
            }
            Target::ApplPort(key) => {
                cmd.arg(self.producer.get_hash()).arg(4);
                cmd.arg(&self.channel).arg(&self.key_set);
                cmd.arg(format!("_{PORT_TABLE}{}{key}", self.appl_separator));
                cmd.arg(&self.del_set);
                cmd.arg(&self.appl_id).arg(key).arg(del);
            }
        }
        for (field, value) in &write.fields {
            cmd.arg(field).arg(value);
        }
        cmd
    }

    fn state_id_pair(&self) -> [&str; 2] {
        [self.appl_id.as_str(), self.state_id.as_str()]
    }
}
