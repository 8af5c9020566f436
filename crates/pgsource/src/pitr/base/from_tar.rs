//! `cairn pg base-backup --from-tar`: a base backup that `pg_basebackup`
//! streams as one tar, for when cairn cannot read the data directory
//! (another host, a managed service that allows replication connections).
//!
//! ```text
//! pg_basebackup -Ft -D - -X none ─▶ tar entries, in order ─▶ data/…  (relation files in fixed blocks,
//!                                                                    the rest content-defined)
//!   backup_label    ─▶ start LSN, start segment, timeline, primary or standby; the segment size
//!   global/pg_control ─▶ the system identifier (its first 8 bytes)
//!   PG_VERSION      ─▶ the major version
//!   backup_manifest ─▶ the stop LSN (the end of its last WAL range)
//! ```
//!
//! Written to stdout, pg_basebackup puts the backup manifest into the tar,
//! and that manifest is the only place the stop position is: a stream
//! without one (`--no-manifest`) is refused. A cluster with tablespaces
//! cannot be streamed as one tar (pg_basebackup refuses it too). The tar
//! decoder is the `tar` crate's; what this module reads from the entries
//! (the label, the manifest, pg_control's first bytes) is checked.

use std::io::Read;

use cairn_repo::{EntryMeta, Source, SourceContext};

use super::label::{self, Label};
use super::{BLOCK_SIZE_KEY, BaseBackupOutcome, FROM_STANDBY_KEY, exclude};
use crate::error::{Error, Result};
use crate::pitr::{self as layout, BaseBackupInfo, Lsn, PitrInfo, SegmentSize, TimelineId, WalSegment};

/// How to read a streamed base backup.
#[derive(Debug, Clone)]
pub struct TarBaseOptions {
    /// The block size relation files are cut into (a multiple of 8 KiB).
    pub block_size: usize,
    /// The backup's label, recorded in the metadata (pg_basebackup's own
    /// `-l` is in `backup_label`).
    pub label: String,
}

/// A `pg_basebackup -Ft -D - -X none` stream as the source of a snapshot
/// session: tag `pg-base`, path `pg-base/<system identifier>`, metadata
/// `pitr`, as [`BaseBackupSource`](super::BaseBackupSource).
pub struct TarBaseSource<R> {
    reader: Option<R>,
    options: TarBaseOptions,
    outcome: Option<BaseBackupOutcome>,
}

impl<R: Read + Send> TarBaseSource<R> {
    /// A source reading the tar from `reader` (stdin, a file).
    pub fn new(reader: R, options: TarBaseOptions) -> TarBaseSource<R> {
        TarBaseSource { reader: Some(reader), options, outcome: None }
    }

    /// What the backup did, once it is done.
    pub fn outcome(&self) -> Option<&BaseBackupOutcome> {
        self.outcome.as_ref()
    }
}

#[async_trait::async_trait]
impl<R: Read + Send> Source for TarBaseSource<R> {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<()> {
        let Some(reader) = self.reader.take() else {
            return Err(Error::Invalid("the tar stream was already read".into()));
        };
        if tokio::runtime::Handle::current().runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(Error::Invalid("reading a tar stream needs the multi-threaded runtime".into()));
        }
        let options = self.options.clone();
        // The stream is read in order on this thread (it may be stdin);
        // the session seals on its own threads meanwhile.
        let outcome = tokio::task::block_in_place(|| read_tar(into, reader, &options))?;
        into.add_snapshot_path(layout::base_snapshot_path(outcome.info.system_identifier));
        into.add_tag(layout::BASE_TAG);
        into.set_metadata(layout::METADATA_KEY, PitrInfo::Base(outcome.info.clone()).to_value());
        self.outcome = Some(outcome);
        Ok(())
    }
}

/// What the stream said, collected while its files are stored.
#[derive(Default)]
struct Facts {
    label: Option<String>,
    manifest: Option<Vec<u8>>,
    control: Option<[u8; 8]>,
    version: Option<String>,
    tablespace_map: Option<String>,
}

/// The most bytes of a small file kept to be read (labels, manifests).
const SMALL: u64 = 64 << 20;

fn read_tar<R: Read>(into: &SourceContext, reader: R, options: &TarBaseOptions) -> Result<BaseBackupOutcome> {
    if options.block_size == 0 || options.block_size % 8192 != 0 || options.block_size > 1 << 20 {
        return Err(Error::Invalid(format!(
            "a block size of {} bytes does not fit PostgreSQL's 8 KiB pages: give a multiple of 8 KiB up to 1 MiB",
            options.block_size
        )));
    }
    let start_time = jiff::Timestamp::now();
    let bad_tar = |e: std::io::Error| Error::io("cannot read the base backup tar stream", e);
    let mut archive = tar::Archive::new(reader);
    let mut facts = Facts::default();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut data_meta: Option<EntryMeta> = None;
    for entry in archive.entries().map_err(bad_tar)? {
        let mut entry = entry.map_err(bad_tar)?;
        let header = entry.header();
        let raw_path = entry.path_bytes().into_owned();
        let path = relative_path(&raw_path)?;
        let meta = EntryMeta {
            mode: header.mode().map_err(bad_tar)? & 0o7777,
            uid: header.uid().map_err(bad_tar)?.try_into().unwrap_or(0),
            gid: header.gid().map_err(bad_tar)?.try_into().unwrap_or(0),
            user: header.username().ok().flatten().unwrap_or_default().to_owned(),
            group: header.groupname().ok().flatten().unwrap_or_default().to_owned(),
            mtime: header.mtime().ok().and_then(|t| jiff::Timestamp::from_second(i64::try_from(t).ok()?).ok()),
            xattrs: Vec::new(),
        };
        data_meta.get_or_insert_with(|| EntryMeta { mode: 0o700, ..meta.clone() });
        let kind = header.entry_type();
        if kind.is_dir() {
            if !path.is_empty() {
                into.add_dir(&format!("data/{path}"), &meta)?;
            }
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(Error::Invalid(format!(
                "the tar stream holds the link {path}: a cluster with tablespaces cannot be streamed as one tar; take \
                 the base backup on the database host (cairn pg base-backup without --from-tar)"
            )));
        }
        if !kind.is_file() {
            continue;
        }
        if path.is_empty() {
            return Err(Error::Invalid("the tar stream holds a file without a name".into()));
        }
        let size = entry.size();
        let small = matches!(path.as_str(), "backup_label" | "backup_manifest" | "PG_VERSION" | "tablespace_map")
            || path == "global/pg_control";
        let rel = format!("data/{path}");
        let content = if small {
            if size > SMALL {
                return Err(Error::Invalid(format!("{path} in the tar stream is {size} bytes: not PostgreSQL's")));
            }
            let mut body = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut body).map_err(bad_tar)?;
            match path.as_str() {
                "backup_label" => facts.label = Some(text_of(&path, &body)?),
                "backup_manifest" => facts.manifest = Some(body.clone()),
                "PG_VERSION" => facts.version = Some(text_of(&path, &body)?),
                "tablespace_map" => facts.tablespace_map = Some(text_of(&path, &body)?),
                _ => facts.control = body.get(..8).and_then(|b| b.try_into().ok()),
            }
            into.store_reader(&mut body.as_slice())?
        } else if exclude::is_relation_file(&rel) {
            into.store_blocks(&mut entry, options.block_size)?
        } else {
            into.store_reader(&mut entry)?
        };
        if content.size() != size {
            return Err(Error::Invalid(format!(
                "{path} in the tar stream ended after {} of its {size} bytes: the stream was cut",
                content.size()
            )));
        }
        files += 1;
        bytes += size;
        into.add_file(&rel, content, &meta)?;
    }
    let stop_time = jiff::Timestamp::now();
    let data_meta = data_meta.ok_or_else(|| Error::Invalid("the tar stream is empty".into()))?;
    into.add_dir("data", &data_meta)?;
    let info = info_of(&facts, options, start_time, stop_time)?;
    Ok(BaseBackupOutcome { info, files, bytes, vanished: Vec::new(), unlogged_files: 0, skipped_links: Vec::new() })
}

/// A tar member's path relative to the data directory (`./` and a trailing
/// `/` dropped), refused if it could leave it.
pub(crate) fn relative_path(raw: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| Error::Invalid(format!("the tar stream holds a path that is not UTF-8: {raw:?}")))?;
    let trimmed = text.trim_start_matches("./").trim_end_matches('/');
    if trimmed.starts_with('/') || trimmed.split('/').any(|c| c == ".." || c.is_empty() && !trimmed.is_empty()) {
        return Err(Error::Invalid(format!("the tar stream holds the path {text:?}, outside a data directory")));
    }
    Ok(if trimmed == "." { String::new() } else { trimmed.to_owned() })
}

fn text_of(path: &str, body: &[u8]) -> Result<String> {
    String::from_utf8(body.to_vec()).map_err(|_| Error::Invalid(format!("{path} in the tar stream is not text")))
}

/// The segment size that makes the label's start file name the segment
/// holding its start LSN (pg_basebackup's tar does not say it otherwise);
/// 16 MiB, PostgreSQL's default, when several fit.
pub(crate) fn segment_size_of(label: &Label) -> Option<SegmentSize> {
    let lsn: Lsn = label.start_lsn.parse().ok()?;
    let timeline = TimelineId::new(label.timeline).ok()?;
    let fits: Vec<SegmentSize> = (20..=30)
        .filter_map(|bits| SegmentSize::new(1u64 << bits).ok())
        .filter(|size| WalSegment::containing(timeline, lsn, *size).name(*size) == label.start_wal)
        .collect();
    match fits.as_slice() {
        [] => None,
        [one] => Some(*one),
        several => several.iter().copied().find(|s| *s == SegmentSize::DEFAULT).or(several.first().copied()),
    }
}

/// The stop position: the end of the manifest's last WAL range.
pub(crate) fn stop_lsn_of(manifest: &[u8]) -> Result<Lsn> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "the backup_manifest in the tar stream is not understood ({why}): the stop position comes from its WAL-Ranges"
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(manifest).map_err(|_| bad("not JSON"))?;
    let ranges = value.get("WAL-Ranges").and_then(|r| r.as_array()).ok_or_else(|| bad("no WAL-Ranges"))?;
    ranges
        .iter()
        .map(|r| r.get("End-LSN").and_then(|l| l.as_str()).and_then(|l| l.parse::<Lsn>().ok()))
        .collect::<Option<Vec<Lsn>>>()
        .and_then(|ends| ends.into_iter().max())
        .ok_or_else(|| bad("a WAL range without an End-LSN"))
}

fn info_of(
    facts: &Facts,
    options: &TarBaseOptions,
    start_time: jiff::Timestamp,
    stop_time: jiff::Timestamp,
) -> Result<BaseBackupInfo> {
    let missing = |what: &str, fix: &str| {
        Error::Invalid(format!("the tar stream has no {what}: it is not `pg_basebackup -Ft -D - -X none`'s ({fix})"))
    };
    let label_text = facts.label.as_deref().ok_or_else(|| missing("backup_label", "give -Ft -D -"))?;
    let manifest = facts.manifest.as_deref().ok_or_else(|| {
        missing("backup_manifest", "leave out --no-manifest: the manifest gives the backup's stop position")
    })?;
    let control = facts.control.ok_or_else(|| missing("global/pg_control", "give -Ft -D -"))?;
    let version = facts.version.as_deref().ok_or_else(|| missing("PG_VERSION", "give -Ft -D -"))?;
    let label = label::parse(label_text)?;
    let major: u32 = version
        .trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("PG_VERSION in the tar stream says {version:?}, not a major version")))?;
    let segment_size = segment_size_of(&label).ok_or_else(|| {
        Error::Invalid(format!(
            "backup_label's start location {} does not lie in its start file {} for any WAL segment size",
            label.start_lsn, label.start_wal
        ))
    })?;
    let bad = |e: layout::LayoutError| Error::Invalid(format!("the backup_label is not understood: {e}"));
    let start_lsn: Lsn = label.start_lsn.parse().map_err(bad)?;
    let stop_lsn = stop_lsn_of(manifest)?;
    if stop_lsn < start_lsn {
        return Err(Error::Invalid(format!(
            "the backup_manifest ends its WAL at {stop_lsn}, before backup_label's start {start_lsn}: they are not of one backup"
        )));
    }
    let mut extra = serde_json::Map::new();
    extra.insert(BLOCK_SIZE_KEY.into(), serde_json::json!(options.block_size));
    extra.insert(FROM_STANDBY_KEY.into(), serde_json::json!(label.from == "standby"));
    extra.insert("from_tar".into(), serde_json::json!(true));
    let mut info = BaseBackupInfo {
        system_identifier: u64::from_le_bytes(control),
        pg_version_num: major.saturating_mul(10000),
        wal_segment_size: segment_size,
        timeline: TimelineId::new(label.timeline).map_err(bad)?,
        start_lsn,
        stop_lsn,
        start_wal: label.start_wal.clone(),
        stop_wal: String::new(),
        start_time,
        stop_time,
        backup_label: label_text.to_owned(),
        tablespace_map: facts.tablespace_map.clone(),
        tablespaces: Vec::new(),
        label: options.label.clone(),
        extra,
    };
    info.stop_wal = info.stop_segment().name(segment_size);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(lsn: &str, file: &str) -> Label {
        Label { start_lsn: lsn.into(), start_wal: file.into(), timeline: 1, from: "primary".into() }
    }

    #[test]
    fn the_segment_size_is_the_one_the_label_names() {
        for (lsn, file, bytes) in [
            ("0/2000028", "000000010000000000000002", Some(16u64 << 20)),
            ("0/2000028", "000000010000000000000020", Some(1 << 20)),
            ("1/40000028", "000000010000000100000001", Some(1 << 30)),
            ("0/2000028", "000000010000000000000007", None),
            ("zz", "000000010000000000000002", None),
            // Segment 0 fits every size: the default wins.
            ("0/28", "000000010000000000000000", Some(16 << 20)),
        ] {
            assert_eq!(segment_size_of(&label(lsn, file)).map(|s| s.bytes()), bytes, "{lsn} {file}");
        }
    }

    #[test]
    fn the_stop_position_is_the_end_of_the_last_wal_range() {
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"},
                           {"Timeline": 2, "Start-LSN": "0/2000100", "End-LSN": "0/3000000"}]}"#;
        assert_eq!(stop_lsn_of(m).unwrap().to_string(), "0/3000000");
        for bad in [&b"nope"[..], br#"{"Files": []}"#, br#"{"WAL-Ranges": [{"Timeline": 1}]}"#] {
            assert!(stop_lsn_of(bad).unwrap_err().to_string().contains("WAL-Ranges"));
        }
    }

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
        START TIME: 2026-12-06 01:40:00 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";
    const MANIFEST: &str = r#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
        "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138"}]}"#;

    /// A tar laid out as `pg_basebackup -Ft -D -` writes it, without `skip`.
    fn stream(skip: &str) -> Vec<u8> {
        let mut control = 7_000_000_000_000_000_007u64.to_le_bytes().to_vec();
        control.resize(8192, 0);
        let members: Vec<(&str, Vec<u8>)> = vec![
            ("backup_label", LABEL.as_bytes().to_vec()),
            ("PG_VERSION", b"15\n".to_vec()),
            ("base/", Vec::new()),
            ("base/5/", Vec::new()),
            ("base/5/16384", [vec![1u8; 8192], vec![0u8; 8192], vec![2u8; 8192]].concat()),
            ("base/5/PG_VERSION", b"15\n".to_vec()),
            ("pg_wal/", Vec::new()),
            ("global/", Vec::new()),
            ("global/pg_control", control),
            ("backup_manifest", MANIFEST.as_bytes().to_vec()),
        ];
        let mut builder = tar::Builder::new(Vec::new());
        for (path, body) in members.into_iter().filter(|(p, _)| *p != skip) {
            let mut header = tar::Header::new_ustar();
            header.set_mode(if path.ends_with('/') { 0o700 } else { 0o600 });
            header.set_entry_type(if path.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            header.set_size(body.len() as u64);
            header.set_mtime(1_790_000_000);
            header.set_uid(26);
            header.set_gid(26);
            builder.append_data(&mut header, path, body.as_slice()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    async fn back_up(tar: Vec<u8>) -> Result<BaseBackupOutcome> {
        use cairn_repo::{Backend, InitOptions, OpenOptions, Repository, SnapshotOptions};
        let init = InitOptions { kdf_memory_kib: 8 * 1024, kdf_iterations: 1, ..Default::default() };
        let repo = Repository::init(Backend::memory(), b"pw", init, OpenOptions::default()).await.unwrap();
        let mut session = repo.begin_snapshot(SnapshotOptions::default()).await.unwrap();
        let options = TarBaseOptions { block_size: 16 * 1024, label: "t".into() };
        let mut source = TarBaseSource::new(std::io::Cursor::new(tar), options);
        session.add_source(&mut source).await?;
        let committed = session.commit().await.unwrap();
        assert_eq!(committed.snapshot.tags, [layout::BASE_TAG]);
        assert_eq!(committed.snapshot.paths, ["/pg-base/7000000000000000007"]);
        Ok(source.outcome().cloned().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pg_basebackup_stream_becomes_a_base_backup() {
        let outcome = back_up(stream("")).await.unwrap();
        let info = &outcome.info;
        assert_eq!(info.system_identifier, 7_000_000_000_000_000_007);
        assert_eq!((info.pg_version_num, info.wal_segment_size), (150000, SegmentSize::DEFAULT));
        assert_eq!((info.start_lsn.to_string(), info.stop_lsn.to_string()), ("0/2000028".into(), "0/2000138".into()));
        assert_eq!(
            (info.start_wal.as_str(), info.stop_wal.as_str()),
            ("000000010000000000000002", "000000010000000000000002")
        );
        assert_eq!(info.backup_label, LABEL);
        assert_eq!(info.extra["from_tar"], true);
        assert_eq!(info.extra[FROM_STANDBY_KEY], false);
        // backup_label, PG_VERSION twice, the relation file, pg_control, the manifest.
        assert_eq!(
            (outcome.files, outcome.bytes),
            (6, (LABEL.len() + 3 + 3 * 8192 + 3 + 8192 + MANIFEST.len()) as u64)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_missing_what_gives_the_metadata_is_refused() {
        for (skip, needle) in [
            ("backup_manifest", "--no-manifest"),
            ("backup_label", "no backup_label"),
            ("global/pg_control", "no global/pg_control"),
        ] {
            let e = back_up(stream(skip)).await.unwrap_err().to_string();
            assert!(e.contains(needle), "{skip}: {e}");
        }
        let e = back_up(b"not a tar at all, just some bytes".repeat(40)).await.unwrap_err().to_string();
        assert!(e.contains("tar"), "{e}");
    }

    #[test]
    fn tar_paths_stay_inside_the_data_directory() {
        for (raw, ok) in [
            ("base/1/112", Some("base/1/112")),
            ("./global/pg_control", Some("global/pg_control")),
            ("pg_wal/", Some("pg_wal")),
            ("./", Some("")),
            ("../etc/passwd", None),
            ("/etc/passwd", None),
            ("base//1", None),
            ("base/../../x", None),
        ] {
            assert_eq!(relative_path(raw.as_bytes()).ok().as_deref(), ok, "{raw}");
        }
    }
}
