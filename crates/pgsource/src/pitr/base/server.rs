//! The SQL side of a base backup, over one tokio-postgres connection kept
//! open from `pg_backup_start` to `pg_backup_stop` (a non-exclusive backup
//! ends if its session does): the server's facts, the start and the stop.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// What the server says before the copy.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// `server_version_num` (150020).
    pub version_num: i32,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: u64,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
    /// `data_directory` (needs superuser or pg_read_all_settings).
    pub data_directory: Option<String>,
    /// A standby (in recovery).
    pub in_recovery: bool,
    /// `archive_mode` (`off`, `on`, `always`).
    pub archive_mode: String,
    /// `wal_level`.
    pub wal_level: String,
    /// Tablespaces other than pg_default and pg_global: oid and location.
    pub tablespaces: Vec<(u32, String)>,
}

/// Reads the server's facts.
pub async fn facts(client: &Client) -> Result<ServerFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')::bigint, \
                    (SELECT setting FROM pg_settings WHERE name = 'data_directory'), \
                    pg_is_in_recovery(), current_setting('archive_mode'), current_setting('wal_level')",
            &[],
        )
        .await
        .map_err(|e| Error::query("reading the server's settings for a base backup", e))?;
    let sysid: String = row.get(1);
    let system_identifier = sysid
        .parse()
        .map_err(|_| Error::Invalid(format!("the server reported system identifier {sysid:?}, not a number")))?;
    let segment: i64 = row.get(2);
    let tablespaces = client
        .query(
            "SELECT oid, pg_tablespace_location(oid) FROM pg_tablespace \
             WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing tablespaces", e))?
        .iter()
        .map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1)))
        .collect();
    Ok(ServerFacts {
        version_num: row.get(0),
        system_identifier,
        wal_segment_size: segment.max(0) as u64,
        data_directory: row.get(3),
        in_recovery: row.get(4),
        archive_mode: row.get(5),
        wal_level: row.get(6),
        tablespaces,
    })
}

/// `pg_backup_start` (PostgreSQL 15+) or `pg_start_backup(..., false)`:
/// returns the start LSN. `fast`: an immediate checkpoint instead of a
/// spread one.
pub async fn start(client: &Client, version_num: i32, label: &str, fast: bool) -> Result<String> {
    client
        .batch_execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .await
        .map_err(|e| Error::query("preparing the base backup session", e))?;
    let sql = if version_num >= 150000 {
        "SELECT pg_backup_start($1, $2)::text"
    } else {
        "SELECT pg_start_backup($1, $2, false)::text"
    };
    let row = client.query_one(sql, &[&label, &fast]).await.map_err(|e| Error::query("starting the base backup", e))?;
    Ok(row.get(0))
}

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The stop LSN.
    pub lsn: String,
    /// `backup_label`, byte for byte.
    pub backup_label: String,
    /// `tablespace_map`, byte for byte (`None` when empty).
    pub tablespace_map: Option<String>,
}

/// `pg_backup_stop(wait_for_archive => true)`: on a primary it returns once
/// the WAL the backup needs is archived.
pub async fn stop(client: &Client, version_num: i32) -> Result<Stopped> {
    let sql = if version_num >= 150000 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, true)"
    };
    let row = client.query_one(sql, &[]).await.map_err(|e| Error::query("stopping the base backup", e))?;
    let map: Option<String> = row.get(2);
    Ok(Stopped { lsn: row.get(0), backup_label: row.get(1), tablespace_map: map.filter(|m| !m.is_empty()) })
}
