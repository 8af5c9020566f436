//! Restoring a PostgreSQL snapshot into a database:
//!
//! 1. `CREATE DATABASE` (with `--create`), from template0 with the source's encoding;
//! 2. `pg_restore --section=pre-data` (types, tables, functions, large object entries);
//! 3. N connections `COPY ... FROM STDIN`, each table streamed from the
//!    repository, largest first; each table's row count is checked against
//!    the manifest, and the same connection `ANALYZE`s it at once (while
//!    the other connections are still loading); then large objects' bytes;
//! 4. sequences (`setval`);
//! 5. `pg_restore --section=post-data -j N` (indexes, constraints, triggers,
//!    `REFRESH MATERIALIZED VIEW` of views that were populated);
//! 6. `ANALYZE` of what step 3 could not analyze yet, on N connections:
//!    partitioned tables and inheritance parents (their statistics cover
//!    children loaded later), tables with expression indexes (statistics
//!    of an index expression are gathered only once the index exists),
//!    populated materialized views, and tables step 3 did not load.
//!    Together that is what a database-wide `ANALYZE` covers, without
//!    running it on one connection after everything else.
//!
//! Loading data before indexes and constraints exist is what pg_restore
//! does too: it is much faster, and foreign keys are checked once at the end.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_repo::TreeLoader;
use cairn_repo::{Node, NodeKind, Snapshot};

use crate::connect::{ConnSpec, qualified, quote_ident};
use crate::copy;
use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::pattern::PatternSet;
use crate::schema::{RestorePass, Tools};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target database (created with `create`).
    pub conn: ConnSpec,
    /// Create the target database first.
    pub create: bool,
    /// Drop the archive's objects before recreating them (`pg_restore --clean --if-exists`).
    pub clean: bool,
    /// Connections loading tables at once, and pg_restore's `-j` for post-data.
    pub jobs: usize,
    /// Only these tables (pattern syntax of `--table`): their definitions
    /// and data; no indexes, constraints, sequences or large objects, like `pg_restore -t`.
    pub tables: Vec<String>,
    /// Do not set owners (`pg_restore --no-owner`); objects belong to the restoring role.
    pub no_owner: bool,
    /// Where pg_restore is.
    pub tools: Tools,
}

/// Live counters for progress displays.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Bytes of table data sent so far.
    pub bytes: AtomicU64,
    /// Tables and large objects loaded.
    pub items_done: AtomicU64,
    /// Tables and large objects to load.
    pub items_total: AtomicU64,
    /// Bytes of table data to send.
    pub bytes_total: AtomicU64,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// The database restored into.
    pub database: String,
    /// Tables loaded.
    pub tables: u64,
    /// Rows loaded.
    pub rows: u64,
    /// Bytes of COPY data loaded.
    pub bytes: u64,
    /// Large objects written.
    pub large_objects: u64,
    /// Sequences set.
    pub sequences: u64,
    /// Post-data entries (indexes, primary keys, unique constraints) built
    /// while other tables were still loading.
    pub post_data_early: u64,
    /// Seconds in pre-data, data, post-data (with ANALYZE).
    pub phase_secs: PhaseTimes,
    /// Seconds in all.
    pub duration_secs: f64,
}

/// Time spent per phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseTimes {
    /// Schema before the data.
    pub pre_data: f64,
    /// Tables, large objects, sequences.
    pub data: f64,
    /// Indexes, constraints, materialized views, ANALYZE.
    pub post_data: f64,
}

/// A snapshot opened for restoring: its manifest and its files by path.
pub struct OpenedSnapshot {
    /// The manifest.
    pub manifest: Manifest,
    files: HashMap<String, Node>,
}

impl OpenedSnapshot {
    /// Reads the manifest and lists the files of a PostgreSQL snapshot (blocking).
    pub fn open(loader: &TreeLoader, snapshot: &Snapshot) -> Result<OpenedSnapshot> {
        let files = list_files(loader, snapshot)?;
        if files.contains_key(crate::manifest::CLUSTER_MANIFEST_FILE) {
            return Err(Error::Manifest(format!(
                "snapshot of {} is an --all-databases backup: open it with cluster::Opened::open",
                snapshot.paths.join(", ")
            )));
        }
        OpenedSnapshot::from_files(loader, files, &snapshot.paths.join(", "))
    }

    /// Reads the manifest among `files` (paths relative to the database's
    /// directory) (blocking). `what` names the snapshot in messages.
    pub(crate) fn from_files(loader: &TreeLoader, files: HashMap<String, Node>, what: &str) -> Result<OpenedSnapshot> {
        let Some(node) = files.get(MANIFEST_FILE) else {
            return Err(Error::Manifest(format!(
                "snapshot of {what} is not a PostgreSQL backup (it has no {MANIFEST_FILE}; `cairn pg backup` writes those)"
            )));
        };
        let bytes = read_file(loader, node, MANIFEST_FILE)?;
        let manifest = Manifest::decode(&bytes)?;
        Ok(OpenedSnapshot { manifest, files })
    }

    /// The file at `path` (as recorded in the manifest).
    pub fn file(&self, path: &str) -> Result<&Node> {
        self.files
            .get(path)
            .ok_or_else(|| Error::Manifest(format!("the manifest names {path}, which is not in the snapshot")))
    }
}

/// Every file of a snapshot by its path in the snapshot's view, without the
/// leading `/` (blocking).
pub(crate) fn list_files(loader: &TreeLoader, snapshot: &Snapshot) -> Result<HashMap<String, Node>> {
    let root = loader.root(snapshot)?;
    let mut files = HashMap::new();
    loader.walk::<Error>(&root, |path, node| {
        if node.kind == NodeKind::File {
            let path = String::from_utf8_lossy(path.strip_prefix(b"/").unwrap_or(path)).into_owned();
            files.insert(path, node.clone());
        }
        Ok(true)
    })?;
    Ok(files)
}

/// A small file's whole content (a manifest, the globals) (blocking).
pub(crate) fn read_file(loader: &TreeLoader, node: &Node, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut loader.content(node), &mut bytes)
        .map_err(|e| Error::io(format!("reading {what} from the repository"), e))?;
    Ok(bytes)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Restores `opened` (from `loader`) into `options.conn`'s database.
pub async fn restore(
    loader: &TreeLoader,
    opened: &OpenedSnapshot,
    options: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let manifest = &opened.manifest;
    let only = PatternSet::parse(&options.tables)?;
    let pg_restore =
        options.tools.find("pg_restore", crate::schema::parse_major(&manifest.pg_dump_version).unwrap_or(0)).await?;
    if options.create {
        create_database(&options.conn, &manifest.encoding).await?;
    }
    let target = options.conn.connect().await?;

    // The schema archive goes to a private temporary file: pg_restore reads
    // it twice, and in parallel with -j.
    let dir = tempfile::Builder::new()
        .prefix("cairn-pg-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let archive = dir.path().join("schema.dump");
    {
        let node = opened.file(&manifest.schema_file)?.clone();
        let (loader, archive) = (loader.clone(), archive.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut out =
                std::fs::File::create(&archive).map_err(|e| Error::io(format!("creating {}", archive.display()), e))?;
            std::io::copy(&mut loader.content(&node), &mut out)
                .map_err(|e| Error::io("writing the schema archive to a temporary file", e))?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Invalid(format!("the schema copy failed: {e}")))??;
    }
    let selected_tables: Vec<&crate::manifest::TableEntry> =
        manifest.tables.iter().filter(|t| only.is_empty() || only.any(&t.schema, &t.name)).collect();
    if !only.is_empty() && selected_tables.is_empty() {
        return Err(Error::Invalid(format!("no table of the snapshot matches --table {}", options.tables.join(", "))));
    }
    let pre = RestorePass {
        section: "pre-data",
        clean: options.clean,
        no_owner: options.no_owner,
        jobs: 1,
        tables: if only.is_empty() { Vec::new() } else { selected_tables.iter().map(|t| t.name.clone()).collect() },
        list: None,
    };
    crate::schema::restore_section(&pg_restore, &options.conn, &archive, &pre).await?;
    let pre_done = Instant::now();

    // Post-data entries that depend on one table alone (its indexes, primary
    // key, unique and exclusion constraints) by source OID: built as soon as
    // that table is loaded and a loading connection would otherwise idle,
    // i.e. while the last large tables are still loading (pg_restore -j
    // schedules them so too). The rest waits for the final post-data pass.
    let toc = if only.is_empty() { crate::schema::list_toc(&pg_restore, &archive).await? } else { Vec::new() };
    // Index and constraint OIDs come from one counter; should two of them
    // match after OID wraparound, an index is merely built before its
    // table's rows arrive (slower, still correct), never skipped.
    let early_by_oid: HashMap<u32, usize> =
        toc.iter().enumerate().filter(|(_, e)| e.index_or_constraint).map(|(i, e)| (e.oid, i)).collect();
    let early = EarlyPostData {
        tool: &pg_restore,
        conn: &options.conn,
        archive: &archive,
        dir: dir.path(),
        no_owner: options.no_owner,
        pending: Mutex::new(Vec::new()),
        done: Mutex::new(HashSet::new()),
        runs: AtomicU64::new(0),
        active: std::sync::atomic::AtomicUsize::new(0),
    };

    // Data: tables largest first, then large objects.
    let mut queue: VecDeque<Item> = VecDeque::new();
    let mut tables: Vec<&crate::manifest::TableEntry> =
        selected_tables.iter().copied().filter(|t| t.file.is_some()).collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    for t in &tables {
        let file = t.file.as_deref().unwrap_or_default();
        let early: Vec<usize> = t.post_data.iter().filter_map(|oid| early_by_oid.get(oid).copied()).collect();
        queue.push_back(Item::Table { entry: t, node: opened.file(file)?.clone(), early });
    }
    if only.is_empty() {
        for lo in &manifest.large_objects {
            queue.push_back(Item::LargeObject { oid: lo.oid, node: opened.file(&lo.file)?.clone() });
        }
    }
    // Added, not set: an --all-databases restore loads one database after another.
    progress.items_total.fetch_add(queue.len() as u64, Ordering::Relaxed);
    progress.bytes_total.fetch_add(tables.iter().map(|t| t.bytes).sum(), Ordering::Relaxed);
    let queue = Mutex::new(queue);
    let rows = AtomicU64::new(0);
    let workers =
        (0..options.jobs.max(1)).map(|_| load_worker(&options.conn, &queue, loader, progress, &rows, &toc, &early));
    futures::future::try_join_all(workers).await?;

    let mut sequences = 0;
    if only.is_empty() {
        for s in &manifest.sequences {
            target
                .execute(
                    "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                    &[&qualified(&s.schema, &s.name), &s.last_value, &s.is_called],
                )
                .await
                .map_err(|e| Error::query(format!("setting sequence {}", qualified(&s.schema, &s.name)), e))?;
            sequences += 1;
        }
    }
    let data_done = Instant::now();

    let mut post_data_early = 0;
    if only.is_empty() {
        // Everything but what was built early, in the archive's order.
        let done = std::mem::take(&mut *early.done.lock().expect("done lock"));
        post_data_early = done.len() as u64;
        let list = dir.path().join("post-data.list");
        let text: String =
            toc.iter().enumerate().filter(|(i, _)| !done.contains(i)).map(|(_, e)| e.line.clone() + "\n").collect();
        std::fs::write(&list, text).map_err(|e| Error::io(format!("writing {}", list.display()), e))?;
        let post = RestorePass {
            section: "post-data",
            clean: false,
            no_owner: options.no_owner,
            jobs: options.jobs.max(1),
            tables: Vec::new(),
            list: Some(&list),
        };
        crate::schema::restore_section(&pg_restore, &options.conn, &archive, &post).await?;
    }
    let analyzed: HashSet<String> = tables.iter().map(|t| qualified(&t.schema, &t.name)).collect();
    analyze_after_post_data(&target, &options.conn, options.jobs.max(1), &analyzed).await?;
    let finished = Instant::now();
    Ok(RestoreReport {
        database: options.conn.dbname().to_owned(),
        tables: tables.len() as u64,
        rows: rows.load(Ordering::Relaxed),
        // The files' lengths: every row of each arrived (checked above).
        bytes: tables.iter().map(|t| t.bytes).sum(),
        large_objects: if only.is_empty() { manifest.large_objects.len() as u64 } else { 0 },
        sequences,
        post_data_early,
        phase_secs: PhaseTimes {
            pre_data: secs(pre_done - started),
            data: secs(data_done - pre_done),
            post_data: secs(finished - data_done),
        },
        duration_secs: secs(finished - started),
    })
}

enum Item<'a> {
    /// A table, and the indexes in the table of contents (positions) that
    /// only need it.
    Table {
        entry: &'a crate::manifest::TableEntry,
        node: Node,
        early: Vec<usize>,
    },
    LargeObject {
        oid: u32,
        node: Node,
    },
}

/// Post-data entries of loaded tables waiting for an idle connection.
struct EarlyPostData<'a> {
    tool: &'a crate::schema::Tool,
    conn: &'a ConnSpec,
    archive: &'a std::path::Path,
    dir: &'a std::path::Path,
    no_owner: bool,
    /// Positions in the table of contents whose table is loaded.
    pending: Mutex<Vec<usize>>,
    /// Positions built.
    done: Mutex<HashSet<usize>>,
    /// pg_restore runs so far (names the list files).
    runs: AtomicU64,
    /// Connections loading an item now.
    active: std::sync::atomic::AtomicUsize,
}

impl EarlyPostData<'_> {
    /// Builds every pending entry with one `pg_restore -L`; false when
    /// there was nothing to build.
    async fn build_pending(&self, toc: &[crate::schema::TocEntry]) -> Result<bool> {
        let batch: Vec<usize> = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        if batch.is_empty() {
            return Ok(false);
        }
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let list = self.dir.join(format!("early-{n}.list"));
        let text: String = batch.iter().map(|&i| toc[i].line.clone() + "\n").collect();
        std::fs::write(&list, text).map_err(|e| Error::io(format!("writing {}", list.display()), e))?;
        let pass = RestorePass {
            section: "post-data",
            clean: false,
            no_owner: self.no_owner,
            jobs: 1,
            tables: Vec::new(),
            list: Some(&list),
        };
        crate::schema::restore_section(self.tool, self.conn, self.archive, &pass).await?;
        self.done.lock().expect("done lock").extend(batch);
        Ok(true)
    }
}

async fn load_worker(
    conn: &ConnSpec,
    queue: &Mutex<VecDeque<Item<'_>>>,
    loader: &TreeLoader,
    progress: &RestoreProgress,
    rows: &AtomicU64,
    toc: &[crate::schema::TocEntry],
    early: &EarlyPostData<'_>,
) -> Result<()> {
    if queue.lock().expect("queue lock").is_empty() {
        return Ok(());
    }
    let client = conn.connect().await?;
    // As pg_restore: no row security while loading, no timeouts.
    client
        .batch_execute("SET row_security = off; SET statement_timeout = 0; SET lock_timeout = 0")
        .await
        .map_err(|e| Error::query("preparing a restore connection", e))?;
    loop {
        let item = {
            let mut queue = queue.lock().expect("queue lock");
            let item = queue.pop_front();
            if item.is_some() {
                early.active.fetch_add(1, Ordering::SeqCst);
            }
            item
        };
        match item {
            // Nothing left to load: build the indexes of loaded tables
            // while another connection still loads; once none does, what
            // is left goes to the final post-data pass, which has -j N.
            None => {
                while early.active.load(Ordering::SeqCst) > 0 && early.build_pending(toc).await? {}
                return Ok(());
            }
            Some(Item::Table { entry, node, early: entries }) => {
                let loaded = copy::copy_in(
                    &client,
                    &entry.schema,
                    &entry.name,
                    &entry.columns,
                    entry.extension.is_none(),
                    loader,
                    &node,
                    &progress.bytes,
                )
                .await?;
                if loaded != entry.rows {
                    return Err(Error::Mismatch(format!(
                        "table {} received {loaded} rows, the backup recorded {}: the snapshot's data is inconsistent",
                        qualified(&entry.schema, &entry.name),
                        entry.rows
                    )));
                }
                rows.fetch_add(loaded, Ordering::Relaxed);
                // Now, on this connection, rather than a database-wide
                // ANALYZE at the end: it overlaps the other connections'
                // COPY and the table's pages are still in shared buffers.
                let what = qualified(&entry.schema, &entry.name);
                client
                    .batch_execute(&format!("ANALYZE {what}"))
                    .await
                    .map_err(|e| Error::query(format!("running ANALYZE on {what}"), e))?;
                early.pending.lock().expect("pending lock").extend(entries);
            }
            Some(Item::LargeObject { oid, node }) => copy::load_large_object(&client, oid, loader, &node).await?,
        }
        early.active.fetch_sub(1, Ordering::SeqCst);
        progress.items_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every relation a database-wide `ANALYZE` would process (tables,
/// partitioned tables, populated materialized views; not system schemas),
/// named as [`qualified`] names them, and whether its statistics need the
/// restore to be complete (module docs, step 6): a partitioned table or
/// inheritance parent, a table with an expression index, a materialized
/// view. The others need it only when step 3 did not load them (tables
/// whose data was excluded, tables an extension filled).
const ANALYZE_CANDIDATES: &str = "\
    SELECT '\"' || replace(n.nspname, '\"', '\"\"') || '\".\"' || replace(c.relname, '\"', '\"\"') || '\"', \
           c.relkind <> 'r' OR c.relhassubclass \
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indexprs IS NOT NULL) \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
      AND (c.relkind IN ('r', 'p') OR (c.relkind = 'm' AND c.relispopulated)) \
    ORDER BY pg_catalog.pg_relation_size(c.oid) DESC";

/// Step 6: `ANALYZE`, over `jobs` connections, of every candidate that
/// needs the complete restore or was not analyzed after its COPY
/// (`analyzed`, qualified names).
async fn analyze_after_post_data(
    target: &tokio_postgres::Client,
    conn: &ConnSpec,
    jobs: usize,
    analyzed: &HashSet<String>,
) -> Result<()> {
    let names: VecDeque<String> = target
        .query(ANALYZE_CANDIDATES, &[])
        .await
        .map_err(|e| Error::query("listing the relations to ANALYZE", e))?
        .iter()
        .filter_map(|r| {
            let (name, needs_all): (String, bool) = (r.get(0), r.get(1));
            (needs_all || !analyzed.contains(&name)).then_some(name)
        })
        .collect();
    let workers = names.len().min(jobs);
    let queue = Mutex::new(names);
    let worker = || async {
        let client = conn.connect().await?;
        loop {
            let Some(name) = queue.lock().expect("queue lock").pop_front() else { return Ok::<(), Error>(()) };
            client
                .batch_execute(&format!("ANALYZE {name}"))
                .await
                .map_err(|e| Error::query(format!("running ANALYZE on {name}"), e))?;
        }
    };
    futures::future::try_join_all((0..workers).map(|_| worker())).await?;
    Ok(())
}

/// Creates `conn`'s database from template0 with `encoding`, connecting to
/// the `postgres` maintenance database of the same server (else template1).
pub async fn create_database(conn: &ConnSpec, encoding: &str) -> Result<()> {
    let admin = match conn.with_dbname("postgres").connect().await {
        Ok(c) => c,
        Err(_) => conn.with_dbname("template1").connect().await?,
    };
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING '{}'",
        quote_ident(conn.dbname()),
        encoding.replace('\'', "")
    );
    admin
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::query(format!("cannot create database {}", quote_ident(conn.dbname())), e))
}

/// Drops `conn`'s database (terminating its sessions, PostgreSQL 13+),
/// connecting to the `postgres` maintenance database.
pub async fn drop_database(conn: &ConnSpec, server_major: i32) -> Result<()> {
    let admin = match conn.with_dbname("postgres").connect().await {
        Ok(c) => c,
        Err(_) => conn.with_dbname("template1").connect().await?,
    };
    let force = if server_major >= 13 { " WITH (FORCE)" } else { "" };
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(conn.dbname())))
        .await
        .map_err(|e| Error::query(format!("cannot drop database {}", quote_ident(conn.dbname())), e))
}
