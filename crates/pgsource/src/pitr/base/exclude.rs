//! What a base backup leaves out of the data directory, and which files it
//! cuts into fixed blocks: pure rules over relative paths, table-tested.
//!
//! The exclusions are PostgreSQL's own for `BASE_BACKUP` (basebackup.c):
//! files rebuilt at start or private to the running server, directories
//! whose contents are transient, temporary files, and the main forks of
//! unlogged relations (only their `_init` fork is kept; recovery rebuilds
//! the rest from it).

use std::collections::HashSet;

/// Files never copied, wherever the rule says.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    // Written from pg_backup_stop's answer instead (a stale one must not win).
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];

/// Directories kept empty: their contents are transient or rebuilt.
const EMPTIED_DIRS: &[&str] =
    &["pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

/// What to do with an entry of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Copy it (a directory: and walk it).
    Copy,
    /// Copy the directory, but none of its contents.
    EmptyDir,
    /// Leave it out.
    Skip,
}

/// The rule for `rel`, a path relative to the data directory (`/`
/// separated, no leading `/`).
pub fn rule(rel: &str) -> Rule {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init") {
        return Rule::Skip;
    }
    if !rel.contains('/') {
        if EXCLUDED_FILES.contains(&rel) {
            return Rule::Skip;
        }
        if EMPTIED_DIRS.contains(&rel) {
            return Rule::EmptyDir;
        }
    }
    // pg_wal/archive_status must exist in the restored cluster; everything
    // else under pg_wal is WAL, which comes from the archive.
    if rel == "pg_wal/archive_status" {
        return Rule::EmptyDir;
    }
    Rule::Copy
}

/// Whether a file is cut into fixed page-aligned blocks (relation files
/// under `base/`, `global/` and tablespaces, rewritten page by page in
/// place) rather than content-defined chunks. `rel` is relative to the
/// snapshot tree (`data/base/5/16384`, `tablespaces/16390/PG_15_.../5/1`).
pub fn is_relation_file(rel: &str) -> bool {
    (rel.starts_with("data/base/") || rel.starts_with("data/global/") || rel.starts_with("tablespaces/"))
        && rel.rsplit('/').next().is_some_and(|name| name.starts_with(|c: char| c.is_ascii_digit()))
}

/// The relation file node a file of a database directory belongs to, and
/// its fork: `16384` → (16384, main), `16384.2` → (16384, main),
/// `16384_fsm` → (16384, fsm), `16384_init` → (16384, init). `None` for
/// anything else (`PG_VERSION`, `pg_filenode.map`).
fn relation_fork(name: &str) -> Option<(&str, &str)> {
    let base = name.split('.').next().unwrap_or(name);
    let (node, fork) = match base.split_once('_') {
        Some((node, fork)) => (node, fork),
        None => (base, "main"),
    };
    (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some((node, fork))
}

/// The files of one database directory to leave out because they belong
/// to an unlogged relation (one that has an `_init` fork), except that
/// init fork itself.
pub fn unlogged_files<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let unlogged: HashSet<&str> =
        names.iter().filter_map(|n| relation_fork(n)).filter(|(_, fork)| *fork == "init").map(|(n, _)| n).collect();
    names
        .iter()
        .copied()
        .filter(|n| relation_fork(n).is_some_and(|(node, fork)| fork != "init" && unlogged.contains(node)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_postgresql_base_backup() {
        let cases = [
            ("postmaster.pid", Rule::Skip),
            ("postmaster.opts", Rule::Skip),
            ("backup_label", Rule::Skip),
            ("tablespace_map", Rule::Skip),
            ("base/5/backup_label", Rule::Copy),
            ("pg_wal", Rule::EmptyDir),
            ("pg_wal/archive_status", Rule::EmptyDir),
            ("pg_wal/000000010000000000000001", Rule::Copy),
            ("pg_replslot", Rule::EmptyDir),
            ("pg_stat_tmp", Rule::EmptyDir),
            ("pg_subtrans", Rule::EmptyDir),
            ("pg_xact", Rule::Copy),
            ("base/5/pgsql_tmp", Rule::Skip),
            ("base/pgsql_tmp/pgsql_tmp123.0", Rule::Skip),
            ("global/pg_internal.init", Rule::Skip),
            ("base/5/pg_internal.init.1234", Rule::Skip),
            ("global/pg_control", Rule::Copy),
            ("postgresql.auto.conf", Rule::Copy),
            ("PG_VERSION", Rule::Copy),
            ("base/5/pg_wal", Rule::Copy),
        ];
        for (path, want) in cases {
            assert_eq!(rule(path), want, "{path}");
        }
    }

    #[test]
    fn relation_files_are_cut_into_blocks() {
        let cases = [
            ("data/base/5/16384", true),
            ("data/base/5/16384.1", true),
            ("data/base/5/16384_fsm", true),
            ("data/global/1262", true),
            ("tablespaces/16390/PG_15_202209061/5/16391", true),
            ("data/base/5/PG_VERSION", false),
            ("data/base/5/pg_filenode.map", false),
            ("data/global/pg_control", false),
            ("data/pg_xact/0000", false),
            ("data/postgresql.conf", false),
        ];
        for (path, want) in cases {
            assert_eq!(is_relation_file(path), want, "{path}");
        }
    }

    #[test]
    fn unlogged_relations_keep_only_their_init_fork() {
        let names = [
            "16384",
            "16384_fsm",
            "16384_vm",
            "16384_init",
            "16384.1",
            "16390",
            "16390_fsm",
            "PG_VERSION",
            "pg_filenode.map",
            "1638",
            "16384x",
        ];
        let mut skipped = unlogged_files(&names);
        skipped.sort();
        assert_eq!(skipped, ["16384", "16384.1", "16384_fsm", "16384_vm"]);
        assert!(unlogged_files(&["1", "2", "2_vm"]).is_empty());
    }
}
