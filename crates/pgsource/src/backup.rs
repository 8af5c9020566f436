//! A consistent backup of one database.
//!
//! ```text
//! coordinator: BEGIN REPEATABLE READ, READ ONLY; pg_export_snapshot(); LOCK tables; sequences
//!     │ snapshot id
//!     ├──► pg_dump --snapshot=ID -Fc (pre-data + post-data) ──► schema.dump
//!     └──► N workers: SET TRANSACTION SNAPSHOT ID; COPY t TO STDOUT (largest first)
//!                         └──► the snapshot session: chunk, hash, seal ──► data/SCHEMA/TABLE
//! ```
//!
//! Everything reads the same exported snapshot, so rows committed while the
//! backup runs are in none of the files. The coordinator's transaction stays
//! open (and its ACCESS SHARE locks keep tables from being dropped or
//! altered) until every worker and pg_dump are done. Nothing is published
//! here: [`DatabaseSource`] is a source of a snapshot session, which
//! commits the snapshot, so a failed backup leaves only unreferenced packs
//! behind.

use std::collections::VecDeque;
use std::sync::Mutex;

use cairn_repo::{Content, EntryMeta, Source, SourceContext};
use tokio_postgres::Client;

use crate::catalog::{self, Relation, Selection};
use crate::connect::ConnSpec;
use crate::copy;
use crate::error::{Error, Result};
use crate::manifest::{
    self, DATA_DIR, LARGE_OBJECTS_DIR, LargeObjectEntry, MANIFEST_FILE, Manifest, SCHEMA_FILE, SelectionEntry,
    SequenceEntry, TAG, TableEntry, escape_name,
};
use crate::pattern::PatternSet;
use crate::schema::Tools;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The database.
    pub conn: ConnSpec,
    /// Worker connections copying tables at once.
    pub jobs: usize,
    /// `--table`, `--exclude-table`, `--exclude-table-data`.
    pub selection: SelectionEntry,
    /// Where pg_dump is.
    pub tools: Tools,
    /// The order rows are copied in.
    pub row_order: RowOrder,
}

/// The order a table's rows are copied in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RowOrder {
    /// Heap order (plain `COPY table TO STDOUT`), as pg_dump.
    #[default]
    Physical,
    /// Sorted by the table's key (primary key, else a unique index over NOT
    /// NULL columns) when it has one, else heap order. An updated row moves
    /// in the heap (to a hole VACUUM left, or the end) but not in key
    /// order, so the next day's file differs only where rows changed and
    /// deduplicates better (benches/pg-compare.sh measures both).
    Key,
}

/// One database as a source of a snapshot session: the snapshot gets the
/// directory `DBNAME/` (manifest, schema, data), the path `/pg/DBNAME`, the
/// tag `pg` and a `postgresql` field describing the backup.
pub struct DatabaseSource {
    options: BackupOptions,
    manifest: Option<Manifest>,
}

impl DatabaseSource {
    /// A source that backs up the database `options` name.
    pub fn new(options: BackupOptions) -> DatabaseSource {
        DatabaseSource { options, manifest: None }
    }

    /// The manifest of the backup, once it is done.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }
}

#[async_trait::async_trait]
impl Source for DatabaseSource {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
        let manifest = backup(into, &self.options, None).await?;
        into.add_snapshot_path(snapshot_path(&manifest.database));
        into.add_tag(TAG);
        into.set_metadata(
            "postgresql",
            serde_json::json!({
                "database": manifest.database,
                "server_version": manifest.server_version,
                "snapshot_lsn": manifest.snapshot_lsn,
                "tables": manifest.tables.len(),
                "rows": manifest.total_rows(),
            }),
        );
        self.manifest = Some(manifest);
        Ok(())
    }
}

/// The snapshot path of a database backup: `/pg/DBNAME`.
pub fn snapshot_path(database: &str) -> String {
    format!("{}{database}", manifest::PATH_PREFIX)
}

enum Job {
    Table(usize),
    LargeObject(usize),
}

/// Settings every connection of a backup uses: no timeouts (a large table
/// takes as long as it takes), no row security (a policy must not silently
/// filter rows out of a backup: reading such a table fails instead, as in
/// pg_dump).
const SESSION_SETTINGS: &str = "SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0; SET row_security = off; SET extra_float_digits = 3";

/// Backs up a database into the directory `dir` of the snapshot (default:
/// the database's name, escaped) and returns its manifest.
pub async fn backup(into: &SourceContext, options: &BackupOptions, dir: Option<&str>) -> Result<Manifest> {
    let selection = Selection {
        include: PatternSet::parse(&options.selection.tables)?,
        exclude: PatternSet::parse(&options.selection.exclude_tables)?,
        exclude_data: PatternSet::parse(&options.selection.exclude_table_data)?,
    };
    let coordinator = options.conn.connect().await?;
    let info = catalog::server_info(&coordinator).await?;
    let pg_dump = options.tools.find("pg_dump", info.major()).await?;

    coordinator
        .batch_execute(&format!("{SESSION_SETTINGS}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        .await
        .map_err(|e| Error::query("starting the backup transaction", e))?;
    let snapshot_id: String = coordinator
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| Error::query("exporting a snapshot", e))?
        .get(0);
    let started = jiff::Timestamp::now();
    let lsn_sql =
        if info.in_recovery { "SELECT pg_last_wal_replay_lsn()::text" } else { "SELECT pg_current_wal_lsn()::text" };
    let lsn: Option<String> =
        coordinator.query_one(lsn_sql, &[]).await.map_err(|e| Error::query("reading the WAL position", e))?.get(0);

    let mut all = catalog::relations(&coordinator).await?;
    all.extend(catalog::extension_config(&coordinator).await?);
    let excluded: Vec<String> =
        all.iter().filter(|r| selection.exclude.any(&r.schema, &r.name)).map(Relation::qualified).collect();
    let selected = selection.apply(all);
    if !selection.include.is_empty() && selected.is_empty() {
        return Err(Error::Invalid(format!(
            "no table matches --table {}",
            options.selection.tables.join(", --table ")
        )));
    }
    let mut tables: Vec<Relation> = Vec::new();
    let mut data_excluded: Vec<Relation> = Vec::new();
    let mut sequences: Vec<SequenceEntry> = Vec::new();
    for s in &selected {
        match s.relation.kind {
            'r' if s.copy_data => tables.push(s.relation.clone()),
            'r' => data_excluded.push(s.relation.clone()),
            'S' => {
                let v = catalog::sequence_value(&coordinator, &s.relation).await?;
                sequences.push(SequenceEntry {
                    schema: s.relation.schema.clone(),
                    name: s.relation.name.clone(),
                    last_value: v.last_value,
                    is_called: v.is_called,
                });
            }
            _ => {}
        }
    }
    // Like pg_dump: hold ACCESS SHARE locks so no table is dropped or
    // rewritten under the workers (it also finds unreadable tables early).
    for t in &tables {
        coordinator
            .batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", t.qualified()))
            .await
            .map_err(|e| copy::read_error(&t.qualified(), e))?;
    }
    let large_objects =
        if selection.include.is_empty() { catalog::large_objects(&coordinator).await? } else { Vec::new() };
    let roles = catalog::referenced_roles(&coordinator).await?;

    // Largest tables first, so the last one to finish is a small one.
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tables[i].size));
    let mut queue: VecDeque<Job> = order.into_iter().map(Job::Table).collect();
    queue.extend((0..large_objects.len()).map(Job::LargeObject));
    // Added, not set: an --all-databases backup runs one database after another.
    into.progress().expect(queue.len() as u64, tables.iter().map(|t| t.size.max(0) as u64).sum());
    let queue = Mutex::new(queue);
    let table_results: Mutex<Vec<Option<(Content, u64)>>> = Mutex::new(vec![None; tables.len()]);
    let lo_results: Mutex<Vec<Option<Content>>> = Mutex::new(vec![None; large_objects.len()]);

    let include_args: Vec<String> = if selection.include.is_empty() {
        Vec::new()
    } else {
        selected.iter().map(|s| s.relation.qualified()).collect()
    };
    let schema_task = async {
        let archive =
            crate::schema::dump_schema(&pg_dump, &options.conn, &snapshot_id, &include_args, &excluded).await?;
        into.store_bytes(archive).await.map_err(Error::from)
    };
    let workers = (0..options.jobs.max(1)).map(|_| {
        worker(
            &options.conn,
            &snapshot_id,
            &queue,
            &tables,
            &large_objects,
            &table_results,
            &lo_results,
            into,
            options.row_order,
        )
    });
    let (schema_content, _) = tokio::try_join!(schema_task, futures::future::try_join_all(workers))?;
    coordinator.batch_execute("COMMIT").await.map_err(|e| Error::query("ending the backup transaction", e))?;
    let finished = jiff::Timestamp::now();

    // Lay out the files, then the manifest that describes them.
    let dir = dir.map(str::to_owned).unwrap_or_else(|| escape_name(&info.database));
    let (file_meta, dir_meta) = (EntryMeta::file().at(finished), EntryMeta::dir().at(finished));
    into.add_dir(&dir, &dir_meta)?;
    into.add_dir(&format!("{dir}/{DATA_DIR}"), &dir_meta)?;
    into.add_file(&format!("{dir}/{SCHEMA_FILE}"), schema_content, &file_meta)?;
    let table_results = table_results.into_inner().expect("results lock");
    let lo_results = lo_results.into_inner().expect("results lock");
    let mut entries: Vec<TableEntry> = Vec::new();
    for (t, result) in tables.iter().zip(table_results) {
        let (content, rows) = result.expect("every table was copied");
        let file = format!("{DATA_DIR}/{}/{}", escape_name(&t.schema), escape_name(&t.name));
        let bytes = content.size();
        into.add_dir(&format!("{dir}/{DATA_DIR}/{}", escape_name(&t.schema)), &dir_meta)?;
        into.add_file(&format!("{dir}/{file}"), content, &file_meta)?;
        entries.push(TableEntry {
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: t.columns.clone(),
            file: Some(file),
            rows,
            bytes,
            unlogged: t.persistence == 'u',
            post_data: t.post_data.clone(),
            extension: t.extension.clone(),
            order_by: order_by(t, options.row_order).to_vec(),
        });
    }
    for t in &data_excluded {
        entries.push(TableEntry {
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: t.columns.clone(),
            file: None,
            rows: 0,
            bytes: 0,
            unlogged: t.persistence == 'u',
            post_data: t.post_data.clone(),
            extension: t.extension.clone(),
            order_by: order_by(t, options.row_order).to_vec(),
        });
    }
    entries.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let mut lo_entries = Vec::new();
    for (oid, content) in large_objects.iter().zip(lo_results) {
        let content = content.expect("every large object was copied");
        let file = format!("{LARGE_OBJECTS_DIR}/{oid}");
        let bytes = content.size();
        into.add_dir(&format!("{dir}/{LARGE_OBJECTS_DIR}"), &dir_meta)?;
        into.add_file(&format!("{dir}/{file}"), content, &file_meta)?;
        lo_entries.push(LargeObjectEntry { oid: *oid, file, bytes });
    }
    let manifest = Manifest {
        version: manifest::MANIFEST_VERSION,
        kind: "postgresql".into(),
        server_version: info.version.clone(),
        server_version_num: info.version_num,
        database: info.database.clone(),
        encoding: info.encoding.clone(),
        snapshot_lsn: lsn,
        in_recovery: info.in_recovery,
        started,
        finished,
        pg_dump_version: pg_dump.version_line.clone(),
        copy_format: "text".into(),
        schema_file: SCHEMA_FILE.into(),
        tables: entries,
        sequences,
        large_objects: lo_entries,
        selection: options.selection.clone(),
        roles: Some(roles),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    let manifest_content = into.store_bytes(manifest_json).await?;
    into.add_file(&format!("{dir}/{MANIFEST_FILE}"), manifest_content, &file_meta)?;
    Ok(manifest)
}

/// The columns `t`'s rows are sorted by under `order`.
fn order_by(t: &Relation, order: RowOrder) -> &[String] {
    match order {
        RowOrder::Key => &t.key,
        RowOrder::Physical => &[],
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    conn: &ConnSpec,
    snapshot_id: &str,
    queue: &Mutex<VecDeque<Job>>,
    tables: &[Relation],
    large_objects: &[u32],
    table_results: &Mutex<Vec<Option<(Content, u64)>>>,
    lo_results: &Mutex<Vec<Option<Content>>>,
    into: &SourceContext,
    row_order: RowOrder,
) -> Result<()> {
    if queue.lock().expect("queue lock").is_empty() {
        return Ok(());
    }
    let client = conn.connect().await?;
    join_snapshot(&client, snapshot_id).await?;
    loop {
        let job = queue.lock().expect("queue lock").pop_front();
        match job {
            None => break,
            Some(Job::Table(i)) => {
                let t = &tables[i];
                let filter = t.extension.as_ref().map(|e| e.condition.as_str()).unwrap_or_default();
                let order = order_by(t, row_order);
                let result = copy::copy_out(&client, &t.schema, &t.name, &t.columns, filter, order, into).await?;
                table_results.lock().expect("results lock")[i] = Some(result);
            }
            Some(Job::LargeObject(i)) => {
                let content = copy::copy_large_object(&client, large_objects[i], into).await?;
                lo_results.lock().expect("results lock")[i] = Some(content);
            }
        }
        into.progress().item_done();
    }
    client.batch_execute("COMMIT").await.map_err(|e| Error::query("ending a worker transaction", e))?;
    Ok(())
}

/// Makes `client` see the exported snapshot.
async fn join_snapshot(client: &Client, snapshot_id: &str) -> Result<()> {
    // The id comes from the server (hex digits and dashes), never from input.
    let id = snapshot_id.replace('\'', "");
    client
        .batch_execute(&format!(
            "{SESSION_SETTINGS}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"
        ))
        .await
        .map_err(|e| Error::query("joining the backup's snapshot", e))
}
