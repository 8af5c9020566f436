//! A restore drill: restore a snapshot into a fresh temporary database,
//! compare every table's row count with the manifest, run the operator's
//! check queries, measure the time, and drop the database whatever happened.
//!
//! The roles the snapshot's objects need (its manifest's `roles`: owners,
//! grantees) must exist on the drill server. Those missing are created
//! first (`NOLOGIN`, no password: they only own and hold privileges) and
//! dropped after the drill, or, when that is not wanted or not allowed,
//! the drill stops at once with the list ([`Error::MissingRoles`]).

use std::collections::HashMap;
use std::time::Instant;

use cairn_repo::TreeLoader;
use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::connect::{ConnSpec, qualified, quote_ident};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::restore::{self, OpenedSnapshot, RestoreOptions, RestoreProgress, RestoreReport};
use crate::schema::Tools;

/// How to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// A connection to the server with a role that may create databases
    /// (its database is only used to create and drop the drill's).
    pub admin: ConnSpec,
    /// Queries that must return `true` or at least one row.
    pub checks: Vec<String>,
    /// Connections loading tables at once.
    pub jobs: usize,
    /// Where pg_restore is.
    pub tools: Tools,
    /// Create the roles the snapshot needs that the server lacks (NOLOGIN),
    /// and drop them afterwards; when false, missing roles stop the drill
    /// with their list.
    pub create_roles: bool,
}

/// One table's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableCount {
    /// `"schema"."name"`.
    pub table: String,
    /// Rows the backup recorded.
    pub expected: u64,
    /// Rows in the restored table (`None` when it could not be counted).
    pub actual: Option<u64>,
    /// Whether they agree.
    pub ok: bool,
}

/// One check query's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CheckOutcome {
    /// The query.
    pub sql: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it returned, or its error.
    pub detail: String,
}

/// The drill's report.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The temporary database's name.
    pub database: String,
    /// The source database of the snapshot.
    pub source_database: String,
    /// Seconds to restore (the recovery time the drill measured).
    pub restore_secs: f64,
    /// The restore's own report, when it finished.
    pub restore: Option<RestoreReport>,
    /// Why the restore failed, when it did.
    pub restore_error: Option<String>,
    /// Row counts.
    pub tables: Vec<TableCount>,
    /// Check queries.
    pub checks: Vec<CheckOutcome>,
    /// Whether the temporary database was dropped.
    pub dropped: bool,
    /// Roles the drill created (NOLOGIN) because the server lacked them.
    pub roles_created: Vec<String>,
    /// Roles it created but could not drop afterwards, with the reason
    /// (another session's objects may depend on them by then).
    pub roles_not_dropped: Vec<String>,
    /// Whether everything passed.
    pub ok: bool,
}

/// Compares the manifest's counts with the restored ones (`actual` maps
/// `"schema"."name"` to a count; a missing table fails).
pub fn compare_counts(manifest: &Manifest, actual: &HashMap<String, u64>) -> Vec<TableCount> {
    manifest
        .tables
        .iter()
        .filter(|t| t.file.is_some())
        .map(|t| {
            let table = qualified(&t.schema, &t.name);
            let got = actual.get(&table).copied();
            TableCount { ok: got == Some(t.rows), expected: t.rows, actual: got, table }
        })
        .collect()
}

/// Whether a check query's result passes: at least one row, and when the
/// result is a single value, that value is not `false` or NULL.
pub fn check_passes(rows: &[Vec<Option<String>>]) -> bool {
    match rows {
        [] => false,
        [only] if only.len() == 1 => !matches!(only[0].as_deref(), None | Some("f") | Some("false")),
        _ => true,
    }
}

/// The roles of `needed` that the server lacks, in `needed`'s order.
pub async fn missing_roles(admin: &Client, needed: &[String]) -> Result<Vec<String>> {
    let needed: Vec<&str> = needed.iter().map(String::as_str).collect();
    let rows = admin
        .query(
            "SELECT r FROM unnest($1::text[]) WITH ORDINALITY AS n(r, i) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = n.r) ORDER BY n.i",
            &[&needed],
        )
        .await
        .map_err(|e| Error::query("looking for the roles the snapshot needs", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops `roles` (created by the drill); returns those that could not be
/// dropped, each with the reason.
async fn drop_roles(admin: &Client, roles: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    for role in roles {
        if let Err(e) = admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role))).await {
            kept.push(format!("{role} ({})", crate::error::describe(&e)));
        }
    }
    kept
}

fn temp_name() -> String {
    format!("cairn_drill_{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// Runs a drill of the opened snapshot.
pub async fn drill(loader: &TreeLoader, opened: &OpenedSnapshot, options: &DrillOptions) -> Result<DrillReport> {
    let admin = options.admin.connect().await?;
    let info = crate::catalog::server_info(&admin).await?;
    let missing = missing_roles(&admin, opened.manifest.roles.as_deref().unwrap_or_default()).await?;
    if !missing.is_empty() && !options.create_roles {
        return Err(Error::MissingRoles { roles: missing, reason: None });
    }
    let mut roles_created = Vec::new();
    for role in &missing {
        if let Err(e) = admin.batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote_ident(role))).await {
            drop_roles(&admin, &roles_created).await;
            return Err(Error::MissingRoles { roles: missing.clone(), reason: Some(crate::error::describe(&e)) });
        }
        roles_created.push(role.clone());
    }
    let name = temp_name();
    let target = options.admin.with_dbname(&name);
    let mut report = DrillReport {
        database: name.clone(),
        source_database: opened.manifest.database.clone(),
        restore_secs: 0.0,
        restore: None,
        restore_error: None,
        tables: Vec::new(),
        checks: Vec::new(),
        dropped: false,
        roles_created,
        roles_not_dropped: Vec::new(),
        ok: false,
    };
    let started = Instant::now();
    let restore_options = RestoreOptions {
        conn: target.clone(),
        create: true,
        clean: false,
        jobs: options.jobs,
        tables: Vec::new(),
        no_owner: false,
        tools: options.tools.clone(),
    };
    let outcome = restore::restore(loader, opened, &restore_options, &RestoreProgress::default()).await;
    report.restore_secs = started.elapsed().as_secs_f64();
    let examined = match outcome {
        Ok(r) => {
            report.restore = Some(r);
            examine(&target, opened, &options.checks, &mut report).await
        }
        Err(e) => {
            report.restore_error = Some(e.to_string());
            Ok(())
        }
    };
    // Drop the database whatever happened (it may not exist if the restore
    // failed before creating it).
    let dropped = restore::drop_database(&target, info.major()).await;
    report.dropped = dropped.is_ok();
    if dropped.is_ok() {
        report.roles_not_dropped = drop_roles(&admin, &report.roles_created).await;
    } else {
        report.roles_not_dropped = report.roles_created.clone();
    }
    examined?;
    dropped?;
    report.ok =
        report.restore_error.is_none() && report.tables.iter().all(|t| t.ok) && report.checks.iter().all(|c| c.ok);
    Ok(report)
}

async fn examine(
    target: &ConnSpec,
    opened: &OpenedSnapshot,
    checks: &[String],
    report: &mut DrillReport,
) -> Result<()> {
    let client = target.connect().await?;
    let mut actual = HashMap::new();
    for t in opened.manifest.tables.iter().filter(|t| t.file.is_some()) {
        let table = qualified(&t.schema, &t.name);
        // ONLY: an inheritance parent's count excludes its children, as its
        // COPY did; an extension's configuration table counts the rows its
        // filter selects (its script may have added others).
        let filter = t.extension.as_ref().map(|e| e.condition.as_str()).unwrap_or_default();
        if let Ok(row) = client.query_one(&format!("SELECT count(*) FROM ONLY {table} {filter}"), &[]).await {
            actual.insert(table, row.get::<_, i64>(0) as u64);
        }
    }
    report.tables = compare_counts(&opened.manifest, &actual);
    for sql in checks {
        report.checks.push(run_check(&client, sql).await);
    }
    Ok(())
}

pub(crate) async fn run_check(client: &Client, sql: &str) -> CheckOutcome {
    match client.simple_query(sql).await {
        Err(e) => CheckOutcome { sql: sql.to_owned(), ok: false, detail: crate::error::describe(&e) },
        Ok(messages) => {
            let rows: Vec<Vec<Option<String>>> = messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
                    _ => None,
                })
                .collect();
            let ok = check_passes(&rows);
            let detail = match rows.first() {
                None => "no rows".to_owned(),
                Some(first) => {
                    let shown: Vec<&str> = first.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                    format!("{} row(s), first: {}", rows.len(), shown.join(" | "))
                }
            };
            CheckOutcome { sql: sql.to_owned(), ok, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{SelectionEntry, TableEntry};

    fn manifest(tables: &[(&str, u64, bool)]) -> Manifest {
        Manifest {
            version: 1,
            kind: "postgresql".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            database: "d".into(),
            encoding: "UTF8".into(),
            snapshot_lsn: None,
            in_recovery: false,
            started: jiff::Timestamp::UNIX_EPOCH,
            finished: jiff::Timestamp::UNIX_EPOCH,
            pg_dump_version: "pg_dump (PostgreSQL) 15.0".into(),
            copy_format: "text".into(),
            schema_file: "schema.dump".into(),
            tables: tables
                .iter()
                .map(|(name, rows, data)| TableEntry {
                    schema: "public".into(),
                    name: (*name).into(),
                    columns: vec![],
                    file: data.then(|| format!("data/public/{name}")),
                    rows: *rows,
                    bytes: 0,
                    unlogged: false,
                    post_data: vec![],
                    extension: None,
                    order_by: vec![],
                })
                .collect(),
            sequences: vec![],
            large_objects: vec![],
            selection: SelectionEntry::default(),
            roles: None,
        }
    }

    #[test]
    fn counts_must_match() {
        let m = manifest(&[("a", 3, true), ("b", 5, true), ("skipped", 9, false)]);
        let mut actual = HashMap::from([("\"public\".\"a\"".to_owned(), 3), ("\"public\".\"b\"".to_owned(), 4)]);
        let r = compare_counts(&m, &actual);
        assert_eq!(r.len(), 2, "tables without data are not compared");
        assert!(r[0].ok);
        assert!(!r[1].ok);
        assert_eq!(r[1].actual, Some(4));
        actual.remove("\"public\".\"a\"");
        let r = compare_counts(&m, &actual);
        assert!(!r[0].ok && r[0].actual.is_none(), "a missing table fails");
    }

    #[test]
    fn checks_need_a_true_or_a_row() {
        let v = |s: Option<&str>| vec![vec![s.map(str::to_owned)]];
        assert!(check_passes(&v(Some("t"))));
        assert!(!check_passes(&v(Some("f"))));
        assert!(!check_passes(&v(None)));
        assert!(check_passes(&v(Some("42"))));
        assert!(!check_passes(&[]));
        assert!(check_passes(&[vec![Some("f".into()), Some("x".into())]]));
        assert!(check_passes(&[vec![Some("f".into())], vec![Some("f".into())]]));
    }
}
