//! A consistent backup of one database.
//!
//! ```text
//! coordinator: BEGIN REPEATABLE READ, READ ONLY; pg_export_snapshot(); LOCK tables; sequences
//!     │ snapshot id
//!     ├──► pg_dump --snapshot=ID -Fc (pre-data + post-data) ──► schema.dump
//!     └──► N workers: SET TRANSACTION SNAPSHOT ID; COPY t TO STDOUT (largest first)
//!                         └──► chunk, hash, seal ──► Writer ──► data/SCHEMA/TABLE
//! ```
//!
//! Everything reads the same exported snapshot, so rows committed while the
//! backup runs are in none of the files. The coordinator's transaction stays
//! open (and its ACCESS SHARE locks keep tables from being dropped or
//! altered) until every worker and pg_dump are done. Nothing is published
//! here: the caller commits the snapshot, so a failed backup leaves only
//! unreferenced packs behind.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_repo::{BlobType, Id, Node, NodeKind, Tree, Writer};
use tokio_postgres::Client;

use crate::catalog::{self, Relation, Selection};
use crate::connect::ConnSpec;
use crate::copy;
use crate::error::{Error, Result};
use crate::manifest::{
    self, DATA_DIR, LARGE_OBJECTS_DIR, LargeObjectEntry, MANIFEST_FILE, Manifest, SCHEMA_FILE, SelectionEntry,
    SequenceEntry, TableEntry, escape_name,
};
use crate::pattern::PatternSet;
use crate::schema::Tools;
use crate::store::{self, StoredContent};

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
}

/// Live counters for progress displays.
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Bytes of COPY data (and large objects) stored so far.
    pub bytes: Arc<AtomicU64>,
    /// Tables and large objects finished.
    pub items_done: AtomicU64,
    /// Tables and large objects to copy (known after the catalog is read).
    pub items_total: AtomicU64,
    /// The tables' size on disk: a rough total for progress bars.
    pub bytes_estimate: AtomicU64,
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The snapshot's root tree (one directory named after the database).
    pub tree: Id,
    /// The tree inside that directory (manifest, schema, data): what an
    /// `--all-databases` snapshot puts under `databases/NAME`.
    pub database_tree: Id,
    /// The manifest stored in it.
    pub manifest: Manifest,
    /// Files in the tree.
    pub files: u64,
    /// Directories in the tree.
    pub dirs: u64,
    /// Bytes of all files in the tree.
    pub bytes: u64,
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

/// Backs up a database into `writer` and returns the root tree (stored) and
/// the manifest. The caller commits a snapshot with it.
pub async fn backup(writer: Arc<Writer>, options: &BackupOptions, progress: &BackupProgress) -> Result<BackupOutcome> {
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

    let all = catalog::relations(&coordinator).await?;
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

    // Largest tables first, so the last one to finish is a small one.
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tables[i].size));
    let mut queue: VecDeque<Job> = order.into_iter().map(Job::Table).collect();
    queue.extend((0..large_objects.len()).map(Job::LargeObject));
    // Added, not set: an --all-databases backup runs one database after another.
    progress.items_total.fetch_add(queue.len() as u64, Ordering::Relaxed);
    progress.bytes_estimate.fetch_add(tables.iter().map(|t| t.size.max(0) as u64).sum(), Ordering::Relaxed);
    let queue = Mutex::new(queue);
    let table_results: Mutex<Vec<Option<(StoredContent, u64)>>> = Mutex::new(vec![None; tables.len()]);
    let lo_results: Mutex<Vec<Option<StoredContent>>> = Mutex::new(vec![None; large_objects.len()]);

    let include_args: Vec<String> = if selection.include.is_empty() {
        Vec::new()
    } else {
        selected.iter().map(|s| s.relation.qualified()).collect()
    };
    let schema_task = async {
        let archive =
            crate::schema::dump_schema(&pg_dump, &options.conn, &snapshot_id, &include_args, &excluded).await?;
        store::store_bytes(&writer, archive).await
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
            &writer,
            progress,
        )
    });
    let (schema_content, _) = tokio::try_join!(schema_task, futures::future::try_join_all(workers))?;
    coordinator.batch_execute("COMMIT").await.map_err(|e| Error::query("ending the backup transaction", e))?;
    let finished = jiff::Timestamp::now();

    // Assemble the manifest and the tree.
    let table_results = table_results.into_inner().expect("results lock");
    let lo_results = lo_results.into_inner().expect("results lock");
    let mut by_schema: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    let mut entries: Vec<TableEntry> = Vec::new();
    let mut total = schema_content.size;
    let mut files = 1u64;
    for (t, result) in tables.iter().zip(table_results) {
        let (content, rows) = result.expect("every table was copied");
        let file = format!("{DATA_DIR}/{}/{}", escape_name(&t.schema), escape_name(&t.name));
        by_schema.entry(escape_name(&t.schema)).or_default().push(file_node(&escape_name(&t.name), &content, finished));
        total += content.size;
        files += 1;
        entries.push(TableEntry {
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: t.columns.clone(),
            file: Some(file),
            rows,
            bytes: content.size,
            unlogged: t.persistence == 'u',
            post_data: t.post_data.clone(),
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
        });
    }
    entries.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let mut lo_nodes = Vec::new();
    let mut lo_entries = Vec::new();
    for (oid, content) in large_objects.iter().zip(lo_results) {
        let content = content.expect("every large object was copied");
        lo_nodes.push(file_node(&oid.to_string(), &content, finished));
        total += content.size;
        files += 1;
        lo_entries.push(LargeObjectEntry {
            oid: *oid,
            file: format!("{LARGE_OBJECTS_DIR}/{oid}"),
            bytes: content.size,
        });
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
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    let manifest_content = store::store_bytes(&writer, manifest_json).await?;
    total += manifest_content.size;
    files += 1;

    let mut dirs = 1u64;
    let mut schema_dirs = Vec::new();
    for (schema, nodes) in by_schema {
        schema_dirs.push(dir_node(&schema, store_tree(&writer, nodes).await?, finished));
        dirs += 1;
    }
    let mut top = vec![
        file_node(MANIFEST_FILE, &manifest_content, finished),
        file_node(SCHEMA_FILE, &schema_content, finished),
        dir_node(DATA_DIR, store_tree(&writer, schema_dirs).await?, finished),
    ];
    dirs += 1;
    if !lo_nodes.is_empty() {
        top.push(dir_node(LARGE_OBJECTS_DIR, store_tree(&writer, lo_nodes).await?, finished));
        dirs += 1;
    }
    let database_tree = store_tree(&writer, top).await?;
    let db_dir = dir_node(&escape_name(&info.database), database_tree, finished);
    let tree = store_tree(&writer, vec![db_dir]).await?;
    Ok(BackupOutcome { tree, database_tree, manifest, files, dirs, bytes: total })
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    conn: &ConnSpec,
    snapshot_id: &str,
    queue: &Mutex<VecDeque<Job>>,
    tables: &[Relation],
    large_objects: &[u32],
    table_results: &Mutex<Vec<Option<(StoredContent, u64)>>>,
    lo_results: &Mutex<Vec<Option<StoredContent>>>,
    writer: &Arc<Writer>,
    progress: &BackupProgress,
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
                let result = copy::copy_out(&client, &t.schema, &t.name, &t.columns, writer, &progress.bytes).await?;
                table_results.lock().expect("results lock")[i] = Some(result);
            }
            Some(Job::LargeObject(i)) => {
                let content = copy::copy_large_object(&client, large_objects[i], writer, &progress.bytes).await?;
                lo_results.lock().expect("results lock")[i] = Some(content);
            }
        }
        progress.items_done.fetch_add(1, Ordering::Relaxed);
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

fn time_of(t: jiff::Timestamp) -> cairn_repo::Time {
    cairn_repo::Time { secs: t.as_second(), nanos: t.subsec_nanosecond().max(0) as u32 }
}

/// The owner recorded for files: this process's user (as `cairn backup`
/// does for a stream).
fn owner() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| (m.uid(), m.gid())).unwrap_or((0, 0))
}

pub(crate) fn file_node(name: &str, content: &StoredContent, time: jiff::Timestamp) -> Node {
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    let (uid, gid) = owner();
    node.mode = 0o600;
    node.uid = uid;
    node.gid = gid;
    node.size = content.size;
    node.content = content.extents.clone();
    node.mtime = time_of(time);
    node.atime = node.mtime;
    node.ctime = node.mtime;
    node.links = 1;
    node
}

pub(crate) fn dir_node(name: &str, subtree: Id, time: jiff::Timestamp) -> Node {
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::Dir);
    let (uid, gid) = owner();
    node.mode = 0o700;
    node.uid = uid;
    node.gid = gid;
    node.subtree = Some(subtree);
    node.mtime = time_of(time);
    node.atime = node.mtime;
    node.ctime = node.mtime;
    node.links = 2;
    node
}

pub(crate) async fn store_tree(writer: &Writer, nodes: Vec<Node>) -> Result<Id> {
    let tree = Tree::new(nodes).map_err(|e| Error::Invalid(format!("cannot build the snapshot tree: {e}")))?;
    Ok(writer.add_blob(BlobType::Tree, &tree.encode()).await?)
}
