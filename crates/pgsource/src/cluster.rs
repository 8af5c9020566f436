//! `--all-databases`: every database of a server plus its globals, as
//! pg_dumpall does, in one snapshot (layout in [`crate::manifest`] and
//! FORMAT.md "PostgreSQL snapshots").
//!
//! ```text
//! maintenance database: list databases (datallowconn, not template0/template1)
//!     ├──► pg_dumpall --globals-only ──► globals.sql
//!     └──► for each database, one after another: crate::backup ──► databases/NAME/
//! ```
//!
//! Each database is backed up exactly as `cairn pg backup -d NAME` would,
//! from its own exported snapshot, so each is consistent in itself but
//! there is no consistency across databases (pg_dumpall has none either: it
//! runs one pg_dump per database). Because each database's subtree is the
//! single-database layout, an unchanged database adds only its manifest and
//! a few tree blobs the next day.

use std::collections::HashMap;

use std::time::Instant;

use cairn_repo::TreeLoader;
use cairn_repo::{EntryMeta, Node, Snapshot, Source, SourceContext};
use serde::Serialize;

use crate::backup::{self, BackupOptions};
use crate::connect::{ConnSpec, quote_ident};
use crate::drill::{self, DrillOptions, DrillReport};
use crate::error::{Error, Result};
use crate::manifest::{
    CLUSTER_MANIFEST_FILE, CLUSTER_PATH, ClusterManifest, DATABASES_DIR, DatabaseEntry, GLOBALS_FILE, MANIFEST_VERSION,
    Manifest, SelectionEntry, TAG, escape_name,
};
use crate::pattern::PatternSet;
use crate::restore::{self, OpenedSnapshot, RestoreOptions, RestoreProgress, RestoreReport};
use crate::schema::{ScriptOutcome, Tools};

/// The root directory's name in the tree (the snapshot path is `/pg`).
const ROOT_DIR: &str = "pg";

/// What to back up.
#[derive(Debug, Clone)]
pub struct ClusterBackupOptions {
    /// A connection to the maintenance database (`postgres`); the other
    /// databases are reached with the same host, port, role and password.
    pub conn: ConnSpec,
    /// Worker connections per database.
    pub jobs: usize,
    /// Where pg_dump and pg_dumpall are.
    pub tools: Tools,
    /// `pg_dumpall --no-role-passwords` (for a role that is not a superuser).
    pub no_role_passwords: bool,
    /// `--exclude-database` patterns (as `--table`'s, without a schema part).
    pub exclude_databases: Vec<String>,
    /// The order rows are copied in, in every database.
    pub row_order: crate::backup::RowOrder,
}

/// What an `--all-databases` backup produced.
#[derive(Debug, Clone)]
pub struct ClusterBackupOutcome {
    /// The cluster manifest stored in the snapshot.
    pub manifest: ClusterManifest,
    /// Each database's manifest, in the cluster manifest's order.
    pub databases: Vec<Manifest>,
}

/// Every database of a server, with the globals, as a source of a snapshot
/// session: the snapshot gets `pg/` (cluster manifest, globals,
/// `databases/NAME/`), the path `/pg`, the tag `pg` and a `postgresql`
/// field.
pub struct ClusterSource {
    options: ClusterBackupOptions,
    outcome: Option<ClusterBackupOutcome>,
}

impl ClusterSource {
    /// A source that backs up the server `options` reach.
    pub fn new(options: ClusterBackupOptions) -> ClusterSource {
        ClusterSource { options, outcome: None }
    }

    /// What the backup stored, once it is done.
    pub fn outcome(&self) -> Option<&ClusterBackupOutcome> {
        self.outcome.as_ref()
    }
}

#[async_trait::async_trait]
impl Source for ClusterSource {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
        let outcome = backup_cluster(into, &self.options).await?;
        let names: Vec<&str> = outcome.databases.iter().map(|m| m.database.as_str()).collect();
        into.add_snapshot_path(CLUSTER_PATH);
        into.add_tag(TAG);
        into.set_metadata(
            "postgresql",
            serde_json::json!({
                "all_databases": true,
                "databases": names,
                "server_version": outcome.manifest.server_version,
                "tables": outcome.databases.iter().map(|m| m.tables.len()).sum::<usize>(),
                "rows": outcome.databases.iter().map(|m| m.total_rows()).sum::<u64>(),
            }),
        );
        self.outcome = Some(outcome);
        Ok(())
    }
}

/// The databases pg_dumpall would dump, less the templates and those
/// `exclude` matches: every database that allows connections and is not
/// half-dropped (`datconnlimit = -2`, PostgreSQL 15.4+ marks an interrupted
/// DROP DATABASE so), except template0 and template1, with their
/// properties ([`crate::dbprops`]). pg_dumpall also dumps template1's
/// contents; cairn does not (see FORMAT.md).
pub async fn list_databases(client: &tokio_postgres::Client, exclude: &PatternSet) -> Result<Vec<DatabaseEntry>> {
    let rows = client
        .query(
            "SELECT datname::text, pg_catalog.pg_get_userbyid(datdba)::text, \
                    pg_catalog.pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
             FROM pg_catalog.pg_database \
             WHERE datallowconn AND datconnlimit <> -2 AND datname NOT IN ('template0', 'template1') \
             ORDER BY datname",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing the databases", e))?;
    let mut properties = crate::dbprops::read(client).await?;
    Ok(rows
        .iter()
        .filter(|r| !exclude.any_name(r.get::<_, &str>(0)))
        .map(|r| {
            let name: String = r.get(0);
            DatabaseEntry {
                dir: format!("{DATABASES_DIR}/{}", escape_name(&name)),
                properties: properties.remove(&name).unwrap_or_default(),
                name,
                owner: r.get(1),
                encoding: r.get(2),
                collate: r.get(3),
                ctype: r.get(4),
            }
        })
        .collect())
}

/// Backs up the globals and every database into the snapshot's `pg/`
/// directory, one database after another.
pub async fn backup_cluster(into: &SourceContext, options: &ClusterBackupOptions) -> Result<ClusterBackupOutcome> {
    let exclude = PatternSet::parse_names(&options.exclude_databases)?;
    let admin = options.conn.connect().await?;
    let info = crate::catalog::server_info(&admin).await?;
    // The same search and version rule as pg_dump: an older pg_dumpall
    // cannot read a newer server's catalogs.
    let pg_dumpall = options.tools.find("pg_dumpall", info.major()).await?;
    let databases = list_databases(&admin, &exclude).await?;
    drop(admin);
    let started = jiff::Timestamp::now();
    let globals = crate::schema::dump_globals(&pg_dumpall, &options.conn, options.no_role_passwords).await?;
    let globals = into.store_bytes(globals).await?;

    let mut manifests = Vec::new();
    for db in &databases {
        into.events().note(&format!("backing up database {}", db.name));
        let db_options = BackupOptions {
            conn: options.conn.with_dbname(&db.name),
            jobs: options.jobs,
            selection: SelectionEntry::default(),
            tools: options.tools.clone(),
            row_order: options.row_order,
        };
        let dir = format!("{ROOT_DIR}/{DATABASES_DIR}/{}", escape_name(&db.name));
        let manifest =
            backup::backup(into, &db_options, Some(&dir)).await.map_err(|e| in_database(&db.name, "backing up", e))?;
        manifests.push(manifest);
    }
    let finished = jiff::Timestamp::now();
    let manifest = ClusterManifest {
        version: MANIFEST_VERSION,
        kind: "postgresql-cluster".into(),
        server_version: info.version.clone(),
        server_version_num: info.version_num,
        started,
        finished,
        pg_dumpall_version: pg_dumpall.version_line.clone(),
        globals_file: GLOBALS_FILE.into(),
        no_role_passwords: options.no_role_passwords,
        databases,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    let json = into.store_bytes(json).await?;
    let (file_meta, dir_meta) = (EntryMeta::file().at(finished), EntryMeta::dir().at(finished));
    into.add_dir(ROOT_DIR, &dir_meta)?;
    into.add_dir(&format!("{ROOT_DIR}/{DATABASES_DIR}"), &dir_meta)?;
    into.add_file(&format!("{ROOT_DIR}/{CLUSTER_MANIFEST_FILE}"), json, &file_meta)?;
    into.add_file(&format!("{ROOT_DIR}/{GLOBALS_FILE}"), globals, &file_meta)?;
    Ok(ClusterBackupOutcome { manifest, databases: manifests })
}

/// Names the database an error happened in.
fn in_database(name: &str, doing: &str, e: Error) -> Error {
    match e {
        Error::Query { context, message, code } => {
            Error::Query { context: format!("{doing} database {}: {context}", quote_ident(name)), message, code }
        }
        Error::Connect { .. } | Error::Repo(_) | Error::Io { .. } => e,
        other => Error::Invalid(format!("{doing} database {}: {other}", quote_ident(name))),
    }
}

/// A snapshot opened for restoring: one database, or a whole cluster.
pub enum Opened {
    /// A `cairn pg backup -d DB` snapshot.
    Database(OpenedSnapshot),
    /// A `cairn pg backup --all-databases` snapshot.
    Cluster(OpenedCluster),
}

/// An `--all-databases` snapshot opened for restoring.
pub struct OpenedCluster {
    /// The cluster manifest.
    pub manifest: ClusterManifest,
    /// Each database, in the manifest's order.
    pub databases: Vec<OpenedSnapshot>,
    globals: Node,
}

impl Opened {
    /// Reads the manifests of a PostgreSQL snapshot of either kind (blocking).
    pub fn open(loader: &TreeLoader, snapshot: &Snapshot) -> Result<Opened> {
        let files = restore::list_files(loader, snapshot)?;
        let what = snapshot.paths.join(", ");
        let Some(node) = files.get(CLUSTER_MANIFEST_FILE) else {
            return Ok(Opened::Database(OpenedSnapshot::from_files(loader, files, &what)?));
        };
        let manifest = ClusterManifest::decode(&restore::read_file(loader, node, CLUSTER_MANIFEST_FILE)?)?;
        let globals = files.get(&manifest.globals_file).cloned().ok_or_else(|| {
            Error::Manifest(format!(
                "the cluster manifest names {}, which is not in the snapshot",
                manifest.globals_file
            ))
        })?;
        let mut databases = Vec::new();
        for db in &manifest.databases {
            let prefix = format!("{}/", db.dir);
            let own: HashMap<String, Node> = files
                .iter()
                .filter_map(|(path, node)| path.strip_prefix(&prefix).map(|p| (p.to_owned(), node.clone())))
                .collect();
            databases.push(OpenedSnapshot::from_files(loader, own, &format!("{what} (database {})", db.name))?);
        }
        Ok(Opened::Cluster(OpenedCluster { manifest, databases, globals }))
    }
}

impl OpenedCluster {
    /// The databases chosen by `only` (all when `None`), with their entries;
    /// a name the snapshot does not have is an error listing those it has.
    pub fn select(&self, only: Option<&str>) -> Result<Vec<(&DatabaseEntry, &OpenedSnapshot)>> {
        let all = self.manifest.databases.iter().zip(&self.databases);
        let chosen: Vec<_> = all.filter(|(e, _)| only.is_none_or(|n| e.name == n)).collect();
        if let (Some(name), true) = (only, chosen.is_empty()) {
            let names: Vec<&str> = self.manifest.databases.iter().map(|d| d.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "the snapshot has no database {name:?}; it has: {}",
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            )));
        }
        Ok(chosen)
    }
}

/// How to restore an `--all-databases` snapshot.
#[derive(Debug, Clone)]
pub struct ClusterRestoreOptions {
    /// A connection to the target server's maintenance database; each
    /// database is restored into the database of the same name there.
    pub conn: ConnSpec,
    /// Only this database (`--only-database`).
    pub only_database: Option<String>,
    /// Replay the globals (roles, tablespaces) first.
    pub globals: bool,
    /// Restore over databases that exist (`pg_restore --clean --if-exists`).
    pub clean: bool,
    /// Connections loading tables at once, and pg_restore's `-j`.
    pub jobs: usize,
    /// Do not set owners (of objects, nor of the created databases).
    pub no_owner: bool,
    /// Where pg_restore and psql are.
    pub tools: Tools,
}

/// What an `--all-databases` restore did.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRestoreReport {
    /// The globals replay, when it ran.
    pub globals: Option<ScriptOutcome>,
    /// Each database's restore.
    pub databases: Vec<RestoreReport>,
    /// Seconds in all.
    pub duration_secs: f64,
}

/// Restores the globals, then each database (created when missing, as
/// pg_dumpall's `--create`; `postgres`, which initdb makes, is restored
/// into as pg_dumpall does). `on_database` is told each name as it starts.
pub async fn restore_cluster(
    loader: &TreeLoader,
    opened: &OpenedCluster,
    options: &ClusterRestoreOptions,
    progress: &RestoreProgress,
    mut on_database: impl FnMut(&str),
) -> Result<ClusterRestoreReport> {
    let started = Instant::now();
    let chosen = opened.select(options.only_database.as_deref())?;
    let admin = options.conn.connect().await?;
    // Every target is checked before anything is changed on the server.
    let mut targets = Vec::new();
    for (entry, db) in chosen {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &[&entry.name])
            .await
            .map_err(|e| Error::query("looking for the target databases", e))?
            .is_some();
        if exists && !options.clean && entry.name != "postgres" {
            return Err(Error::Invalid(format!(
                "database {} already exists on the target server: pass --clean to restore over it, \
                 drop it, or choose others with --only-database",
                quote_ident(&entry.name)
            )));
        }
        targets.push((entry, db, exists));
    }
    let chosen = targets;
    let mut report = ClusterRestoreReport { globals: None, databases: Vec::new(), duration_secs: 0.0 };
    if options.globals {
        let major = crate::schema::parse_major(&opened.manifest.pg_dumpall_version).unwrap_or(0);
        let psql = options.tools.find("psql", major).await?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let script = dir.path().join(GLOBALS_FILE);
        let bytes = {
            let (loader, node) = (loader.clone(), opened.globals.clone());
            tokio::task::spawn_blocking(move || restore::read_file(&loader, &node, GLOBALS_FILE))
                .await
                .map_err(|e| Error::Invalid(format!("reading the globals failed: {e}")))??
        };
        std::fs::write(&script, bytes).map_err(|e| Error::io(format!("writing {}", script.display()), e))?;
        report.globals = Some(crate::schema::run_script(&psql, &options.conn, &script).await?);
    }
    for (entry, db, exists) in chosen {
        on_database(&entry.name);
        if !exists {
            create_database(&admin, entry, options.no_owner).await?;
        }
        let db_options = RestoreOptions {
            conn: options.conn.with_dbname(&entry.name),
            create: false,
            clean: options.clean && exists,
            jobs: options.jobs,
            tables: Vec::new(),
            no_owner: options.no_owner,
            tools: options.tools.clone(),
        };
        let r = restore::restore(loader, db, &db_options, progress)
            .await
            .map_err(|e| in_database(&entry.name, "restoring", e))?;
        // After the data: a setting such as default_transaction_read_only
        // must not apply to the restore's own sessions.
        for sql in crate::dbprops::restore_statements(&entry.name, &entry.owner, &entry.properties, options.no_owner)? {
            admin.batch_execute(&sql).await.map_err(|e| {
                let mut err =
                    Error::query(format!("restoring the properties of database {}", quote_ident(&entry.name)), e);
                if let Error::Query { message, .. } = &mut err {
                    message.push_str(&format!(" (in: {sql}; a role it names must exist: restore the globals too)"));
                }
                err
            })?;
        }
        report.databases.push(r);
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `CREATE DATABASE` as pg_dump `--create` writes it: from template0, with
/// the source's encoding, collation and ctype, and its owner (which the
/// globals created).
async fn create_database(admin: &tokio_postgres::Client, entry: &DatabaseEntry, no_owner: bool) -> Result<()> {
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(&entry.name),
        literal(&entry.encoding),
        literal(&entry.collate),
        literal(&entry.ctype)
    );
    if !no_owner {
        sql.push_str(&format!(" OWNER {}", quote_ident(&entry.owner)));
    }
    admin.batch_execute(&sql).await.map_err(|e| {
        let hint = if e.code().map(|c| c.code()) == Some("42704") {
            " (its owner does not exist on the target: restore the globals, or pass --no-owner)"
        } else {
            ""
        };
        let mut err = Error::query(format!("cannot create database {}", quote_ident(&entry.name)), e);
        if let Error::Query { message, .. } = &mut err {
            message.push_str(hint);
        }
        err
    })
}

/// Drills each chosen database of the snapshot in turn (see [`drill::drill`]);
/// the globals are not replayed (no passwords or memberships reach the
/// drill server): the roles each database needs are created NOLOGIN for
/// its drill and dropped after it, as [`DrillOptions::create_roles`] says.
pub async fn drill_cluster(
    loader: &TreeLoader,
    opened: &OpenedCluster,
    only: Option<&str>,
    options: &DrillOptions,
) -> Result<Vec<DrillReport>> {
    let mut reports = Vec::new();
    for (_, db) in opened.select(only)? {
        reports.push(drill::drill(loader, db, options).await?);
    }
    Ok(reports)
}
