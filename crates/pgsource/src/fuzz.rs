//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
//!
//! Each function feeds arbitrary bytes to a decoder of outside data the way
//! the PITR code reads it, and must never panic: WAL page headers (what
//! `wal-push` reads from PostgreSQL's files), WAL file names, timeline
//! history files, `backup_label` files, `pg_basebackup` tar streams and the
//! `pitr` metadata of snapshots; and the cluster manifest of
//! `--all-databases` snapshots with the SQL it turns into.

use crate::pitr::{self, SegmentSize, WalFile};

/// A WAL segment's headers: the long header, then every page against the
/// name the bytes would have.
pub fn wal_segment(data: &[u8]) {
    if let Ok(long) = pitr::read_long_header(data) {
        for tli in [1, 2] {
            let timeline = pitr::TimelineId::new(tli).expect("not 0");
            let segno = long.page_address.0 / long.segment_size.bytes();
            let segment = pitr::WalSegment { timeline, segno };
            let _ = pitr::check_segment(data, segment, &long, false);
            let _ = pitr::check_segment(data, segment, &long, true);
        }
    }
}

/// WAL file names, LSNs and timeline history files.
pub fn wal_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for size in
        [SegmentSize::DEFAULT, SegmentSize::new(1 << 20).expect("valid"), SegmentSize::new(1 << 30).expect("valid")]
    {
        if let Ok(file) = WalFile::parse(text, size) {
            assert_eq!(WalFile::parse(&file.name(size), size).ok(), Some(file), "names round-trip");
        }
    }
    if let Ok(lsn) = text.parse::<pitr::Lsn>() {
        assert_eq!(lsn.to_string().parse::<pitr::Lsn>().ok(), Some(lsn), "LSNs round-trip");
    }
    let _ = pitr::parse_history(text);
}

/// The `pitr` metadata of a snapshot, and a catalog of it.
pub fn pitr_metadata(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let mut snapshot = cairn_repo::Snapshot::new(Default::default(), vec![]);
    snapshot.tags = vec![pitr::WAL_TAG.into()];
    snapshot.extra.insert(pitr::METADATA_KEY.into(), value);
    let listing = vec![(cairn_repo::SnapshotId::default(), snapshot)];
    let catalog = pitr::WalCatalog::from_snapshots(&listing);
    let statuses = pitr::status(&catalog, jiff::Timestamp::UNIX_EPOCH);
    let _ = pitr::check(&catalog, &statuses);
}

/// A cluster manifest, and the statements that restore each database's
/// properties from it (settings' list values are split).
pub fn cluster_manifest(data: &[u8]) {
    let Ok(manifest) = crate::manifest::ClusterManifest::decode(data) else { return };
    for db in &manifest.databases {
        for no_owner in [false, true] {
            let _ = crate::dbprops::restore_statements(&db.name, &db.owner, &db.properties, no_owner);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::dbprops::split_list(text);
    }
}

/// A `backup_label` as `pg_backup_stop` (or a `pg_basebackup` tar) gives
/// it: whatever parses names a WAL segment and an LSN that parse too.
pub fn backup_label(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(label) = pitr::parse_backup_label(text) {
        let name = label.start_wal.as_bytes();
        assert!(name.len() == 24 && name.iter().all(u8::is_ascii_hexdigit), "the start file is a segment name");
        assert!(label.start_lsn.parse::<pitr::Lsn>().is_ok(), "the start location is an LSN");
    }
}

/// What `base-backup --from-tar` decodes from a `pg_basebackup` stream: the
/// tar's member paths (each must stay inside the data directory) and the
/// `backup_manifest`'s WAL ranges.
pub fn base_tar(data: &[u8]) {
    let _ = pitr::manifest_stop_lsn(data);
    if let Ok(entries) = tar::Archive::new(data).entries() {
        for entry in entries.take(1000) {
            let Ok(entry) = entry else { break };
            if let Ok(path) = pitr::tar_relative_path(&entry.path_bytes()) {
                assert!(!path.starts_with('/') && !path.split('/').any(|c| c == ".."), "{path:?} escapes");
            }
        }
    }
}
