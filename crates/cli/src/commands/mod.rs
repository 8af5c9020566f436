//! One module per subcommand.

pub mod backup;
pub mod cat;
pub mod check;
pub mod config;
pub mod copy;
pub mod diff;
pub mod dist;
pub mod dump;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod mount;
pub mod pg;
pub mod pg_wal;
pub mod prune;
pub mod repair;
pub mod report;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod snapshots;
pub mod stats;
pub mod status;
pub mod tag;
