//! SONiC's side of the contract: where the databases are, how to reach
//! them, how keys are written, and the warm-restart tables.

pub mod connect;
pub mod db_config;
pub mod device_metadata;
pub mod logger_table;
pub mod producer;
pub mod redis_value;
pub mod warm_table;
