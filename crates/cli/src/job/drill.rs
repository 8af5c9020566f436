//! The restore drill: proof that the newest snapshots restore, with the
//! time it takes (the recovery time a user can expect).
//!
//! For each source of the job, its newest snapshot in the repository is
//! restored: a PostgreSQL snapshot into a temporary database, where the
//! row counts are compared with the manifest and the configured checks
//! run (`cairn pg drill`); any other snapshot as a random sample of its
//! files, restored into a temporary directory and read back against the
//! snapshot (`restore --verify`). Which files are sampled is a pure
//! function of the listing and a seed ([`choose_sample`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cairn_repo::{Node, NodeKind, Repository, RestoreOptions, Snapshot, SnapshotId, TreeLoader};

use super::JobError;

/// What the drill of one snapshot found.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillOutcome {
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// Restored and verified as expected.
    pub ok: bool,
    /// Seconds the restores took.
    pub restore_seconds: f64,
    /// Bytes restored: what the drill read from the repository, before
    /// compression (an upper bound of the egress it costs).
    pub bytes_read: u64,
    /// What was done, in one line.
    pub message: String,
}

/// Default size of the files sample.
pub const DEFAULT_SAMPLE_BYTES: u64 = 100 * 1024 * 1024;

/// How many candidate files the walk keeps (uniformly, by reservoir
/// sampling), so a snapshot of millions of files is sampled in bounded
/// memory.
const RESERVOIR: usize = 4096;

/// A file the sample may take: its path in the snapshot and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The path below the snapshot's root (`/etc/hosts`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Picks files in a random order (from `seed`) until `budget` bytes are
/// taken, skipping files that would overflow it. At least one file is
/// taken when there is any (the smallest, if all are too large), so a
/// drill never passes without restoring something.
pub fn choose_sample(mut candidates: Vec<Candidate>, budget: u64, seed: u64) -> Vec<Candidate> {
    let mut rng = SplitMix(seed);
    // Fisher–Yates with the seeded generator: reproducible in tests.
    for i in (1..candidates.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        candidates.swap(i, j);
    }
    let mut taken = Vec::new();
    let mut left = budget;
    for c in &candidates {
        if c.size <= left {
            left -= c.size;
            taken.push(c.clone());
        }
    }
    if taken.is_empty()
        && let Some(smallest) = candidates.iter().min_by_key(|c| c.size)
    {
        taken.push(smallest.clone());
    }
    taken
}

/// A small seeded generator (SplitMix64): sampling needs spread, not
/// secrecy.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Restores a random sample of `budget` bytes of `snapshot`'s files into
/// a temporary directory and reads each back against the snapshot.
pub async fn drill_files(
    repo: &Repository,
    id: SnapshotId,
    snapshot: &Snapshot,
    budget: u64,
) -> Result<DrillOutcome, JobError> {
    let index = Arc::new(repo.load_index().await?);
    let loader = TreeLoader::new(repo, index, tokio::runtime::Handle::current());
    let snapshot = snapshot.clone();
    let seed = random_seed();
    tokio::task::spawn_blocking(move || sample_and_restore(&loader, id, &snapshot, budget, seed))
        .await
        .map_err(|e| JobError::Invalid(format!("the drill thread failed: {e}")))?
}

fn sample_and_restore(
    loader: &TreeLoader,
    id: SnapshotId,
    snapshot: &Snapshot,
    budget: u64,
    seed: u64,
) -> Result<DrillOutcome, JobError> {
    let root = loader.root(snapshot)?;
    // Reservoir sampling (Algorithm R) over the regular files, keeping
    // their nodes so the chosen ones restore without a second walk.
    let mut reservoir: Vec<(Candidate, Node)> = Vec::new();
    let mut seen = 0u64;
    let mut rng = SplitMix(seed ^ 0x5eed);
    loader.walk::<JobError>(&root, |path, node| {
        if node.kind == NodeKind::File {
            seen += 1;
            let candidate = Candidate { path: String::from_utf8_lossy(path).into_owned(), size: node.size };
            if reservoir.len() < RESERVOIR {
                reservoir.push((candidate, node.clone()));
            } else {
                let j = rng.next() % seen;
                if (j as usize) < RESERVOIR {
                    reservoir[j as usize] = (candidate, node.clone());
                }
            }
        }
        Ok(true)
    })?;
    let chosen = choose_sample(reservoir.iter().map(|(c, _)| c.clone()).collect(), budget, seed);
    if chosen.is_empty() {
        return Ok(DrillOutcome {
            snapshot: id,
            ok: true,
            restore_seconds: 0.0,
            bytes_read: 0,
            message: format!("snapshot {} has no files to sample", id.short()),
        });
    }
    let target = tempfile::Builder::new().prefix("cairn-drill-").tempdir().map_err(|e| JobError::File {
        path: std::env::temp_dir(),
        message: format!("cannot create a directory: {e}"),
    })?;
    let options = RestoreOptions { verify: true, strip_setuid: true, skip_devices: true, ..Default::default() };
    let events = Problems::default();
    let started = Instant::now();
    let (mut files, mut bytes, mut verified, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for (i, candidate) in chosen.iter().enumerate() {
        let Some((_, node)) = reservoir.iter().find(|(c, _)| c.path == candidate.path) else { continue };
        // Each file in a directory of its own: two sampled files may share a name.
        let dir: PathBuf = target.path().join(i.to_string());
        let outcome = cairn_repo::restore(loader, node, &dir, &options, &Default::default(), &events)?;
        files += outcome.files;
        bytes += outcome.bytes;
        verified += outcome.verified;
        errors += outcome.errors;
    }
    let restore_seconds = started.elapsed().as_secs_f64();
    let problems = events.0.into_inner().unwrap_or_default();
    // A file without content (empty, or all holes) has nothing to read
    // back, so `verified` may be below `files`: errors and warnings judge.
    let ok = errors == 0 && problems.is_empty();
    let mut message = format!(
        "snapshot {}: {files} of {seen} file(s) sampled, {} restored, {verified} with content read back, in {restore_seconds:.2}s",
        id.short(),
        indicatif::HumanBytes(bytes)
    );
    if !ok {
        message.push_str(&format!("; {errors} error(s): {}", problems.join("; ")));
    }
    Ok(DrillOutcome { snapshot: id, ok, restore_seconds, bytes_read: bytes, message })
}

/// Collects what a restore could not do.
#[derive(Default)]
struct Problems(std::sync::Mutex<Vec<String>>);

impl cairn_repo::RestoreEvents for Problems {
    fn warning(&self, path: &std::path::Path, message: &str) {
        if let Ok(mut list) = self.0.lock() {
            list.push(format!("{}: {message}", path.display()));
        }
    }
}

/// Restores a PostgreSQL snapshot (one database, or every database of an
/// `all-databases` snapshot) into temporary databases created through
/// `admin`, compares row counts, runs `checks`, and drops them.
pub async fn drill_postgres(
    repo: &Repository,
    id: SnapshotId,
    snapshot: &Snapshot,
    admin: cairn_pgsource::ConnSpec,
    checks: &[String],
    tools: cairn_pgsource::Tools,
) -> Result<DrillOutcome, JobError> {
    let index = Arc::new(repo.load_index().await?);
    let loader = TreeLoader::new(repo, index, tokio::runtime::Handle::current());
    let opened = {
        let (loader, snapshot) = (loader.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || cairn_pgsource::cluster::Opened::open(&loader, &snapshot))
            .await
            .map_err(|e| JobError::Invalid(format!("the drill thread failed: {e}")))??
    };
    let options = cairn_pgsource::DrillOptions { admin, checks: checks.to_vec(), jobs: 2, tools, create_roles: true };
    let reports = match &opened {
        cairn_pgsource::cluster::Opened::Database(db) => vec![cairn_pgsource::drill(&loader, db, &options).await?],
        cairn_pgsource::cluster::Opened::Cluster(cluster) => {
            cairn_pgsource::cluster::drill_cluster(&loader, cluster, None, &options).await?
        }
    };
    let restore_seconds: f64 = reports.iter().map(|r| r.restore_secs).sum();
    let ok = !reports.is_empty() && reports.iter().all(|r| r.ok);
    let details: Vec<String> = reports
        .iter()
        .map(|r| {
            if let Some(e) = &r.restore_error {
                return format!("{}: restore failed: {e}", r.source_database);
            }
            let wrong_counts = r.tables.iter().filter(|t| !t.ok).count();
            let failed_checks: Vec<&str> = r.checks.iter().filter(|c| !c.ok).map(|c| c.sql.as_str()).collect();
            let rows: u64 = r.restore.as_ref().map(|x| x.rows).unwrap_or(0);
            let mut line =
                format!("{}: {} table(s), {rows} row(s) in {:.2}s", r.source_database, r.tables.len(), r.restore_secs);
            if wrong_counts > 0 {
                line.push_str(&format!(", {wrong_counts} table(s) with wrong row counts"));
            }
            if !failed_checks.is_empty() {
                line.push_str(&format!(", checks failed: {}", failed_checks.join(" | ")));
            } else if !r.checks.is_empty() {
                line.push_str(&format!(", {} check(s) passed", r.checks.len()));
            }
            if !r.dropped {
                line.push_str(&format!(", temporary database {} NOT dropped", r.database));
            }
            line
        })
        .collect();
    Ok(DrillOutcome {
        snapshot: id,
        ok,
        restore_seconds,
        bytes_read: reports.iter().filter_map(|r| r.restore.as_ref()).map(|r| r.bytes).sum(),
        message: format!("snapshot {} restored into a temporary database: {}", id.short(), details.join("; ")),
    })
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return jiff::Timestamp::now().as_nanosecond() as u64;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sizes: &[u64]) -> Vec<Candidate> {
        sizes.iter().enumerate().map(|(i, &size)| Candidate { path: format!("/f{i}"), size }).collect()
    }

    #[test]
    fn samples_fill_the_budget_and_no_more() {
        // (sizes, budget, how many files, total bytes)
        let table: &[(&[u64], u64, usize, u64)] = &[
            (&[], 100, 0, 0),
            (&[10, 10, 10], 100, 3, 30),
            (&[10, 10, 10], 20, 2, 20),
            // Too large for the budget: the smallest one still goes.
            (&[500, 300], 100, 1, 300),
            (&[60, 60, 30, 10], 100, 3, 100),
        ];
        for (sizes, budget, count, total) in table {
            let sample = choose_sample(files(sizes), *budget, 7);
            let bytes: u64 = sample.iter().map(|c| c.size).sum();
            if *count == 3 && sizes.len() == 4 {
                // Which files fit depends on the order; the budget holds.
                assert!(bytes <= *budget && !sample.is_empty(), "{sizes:?}");
                continue;
            }
            assert_eq!((sample.len(), bytes), (*count, *total), "{sizes:?} within {budget}");
        }
    }

    #[test]
    fn the_seed_decides_the_order() {
        let many = files(&[1; 50]);
        let a = choose_sample(many.clone(), 10, 1);
        assert_eq!(a, choose_sample(many.clone(), 10, 1), "same seed, same sample");
        assert_ne!(a, choose_sample(many, 10, 2), "another seed, another sample");
    }
}
