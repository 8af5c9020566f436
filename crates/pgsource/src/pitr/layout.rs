//! The PITR storage contract: WAL positions and file names, the tags and
//! snapshot paths of WAL batches and base backups, and the metadata those
//! snapshots carry (FORMAT.md, "PostgreSQL point-in-time recovery").
//!
//! Everything here is pure: parsing and formatting with table tests, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The tag of WAL batch snapshots.
pub const WAL_TAG: &str = "pg-wal";
/// The tag of base backup snapshots.
pub const BASE_TAG: &str = "pg-base";
/// The snapshot's top-level metadata field that holds [`PitrInfo`].
pub const METADATA_KEY: &str = "pitr";
/// The directory of a WAL batch snapshot's tree that holds the WAL files.
pub const WAL_DIR: &str = "wal";
/// The directory of a base backup's tree that holds the data directory.
pub const BASE_DATA_DIR: &str = "data";
/// The directory of a base backup's tree that holds tablespaces, one
/// sub-directory per tablespace OID.
pub const BASE_TABLESPACES_DIR: &str = "tablespaces";

/// The snapshot path of WAL batches of a cluster: `/pg-wal/<system identifier>`.
pub fn wal_snapshot_path(system_identifier: u64) -> String {
    format!("/{WAL_TAG}/{system_identifier}")
}

/// The snapshot path of base backups of a cluster: `/pg-base/<system identifier>`.
pub fn base_snapshot_path(system_identifier: u64) -> String {
    format!("/{BASE_TAG}/{system_identifier}")
}

/// The path of a WAL file in a batch snapshot's tree: `wal/<name>`.
pub fn wal_tree_path(name: &str) -> String {
    format!("{WAL_DIR}/{name}")
}

/// A name, position or metadata field that does not follow the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not a WAL file name this layout knows.
    #[error(
        "{name:?} is not a WAL file name: {reason} (expected a 24-hex-digit segment such as 000000010000000000000003, TTTTTTTT.history, <segment>.<offset>.backup or <segment>.partial)"
    )]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not an LSN.
    #[error("{0:?} is not an LSN (expected two hexadecimal numbers such as 0/16B3748)")]
    BadLsn(String),
    /// A WAL segment size PostgreSQL does not allow.
    #[error("{0} is not a WAL segment size (a power of two from 1 MiB to 1 GiB)")]
    BadSegmentSize(u64),
    /// Timeline 0 does not exist.
    #[error("timeline 0 does not exist (timelines start at 1)")]
    ZeroTimeline,
}

/// A position in the WAL (a log sequence number), written `X/Y` with `X`
/// the high and `Y` the low 32 bits in upper-case hexadecimal, as
/// PostgreSQL prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Lsn, LayoutError> {
        let bad = || LayoutError::BadLsn(s.to_owned());
        let (high, low) = s.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(p, 16).ok()
        };
        let (high, low) = (part(high).ok_or_else(bad)?, part(low).ok_or_else(bad)?);
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A timeline id (1 for a cluster that never recovered to a point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct TimelineId(u32);

impl TimelineId {
    /// Timeline `id`; 0 is refused.
    pub fn new(id: u32) -> Result<TimelineId, LayoutError> {
        if id == 0 { Err(LayoutError::ZeroTimeline) } else { Ok(TimelineId(id)) }
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The history file of this timeline: `TTTTTTTT.history`.
    pub fn history_file_name(self) -> String {
        format!("{:08X}.history", self.0)
    }
}

impl TryFrom<u32> for TimelineId {
    type Error = LayoutError;
    fn try_from(id: u32) -> Result<TimelineId, LayoutError> {
        TimelineId::new(id)
    }
}

impl From<TimelineId> for u32 {
    fn from(t: TimelineId) -> u32 {
        t.0
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The WAL segment size of a cluster (`wal_segment_size`, fixed at
/// `initdb`): a power of two from 1 MiB to 1 GiB, 16 MiB by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct SegmentSize(u32);

impl SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);

    /// A segment size of `bytes`, checked.
    pub fn new(bytes: u64) -> Result<SegmentSize, LayoutError> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(SegmentSize(bytes as u32))
        } else {
            Err(LayoutError::BadSegmentSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments per 4 GiB "log id" (the middle 8 hex digits of a name).
    pub fn segments_per_log_id(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

impl TryFrom<u64> for SegmentSize {
    type Error = LayoutError;
    fn try_from(bytes: u64) -> Result<SegmentSize, LayoutError> {
        SegmentSize::new(bytes)
    }
}

impl From<SegmentSize> for u64 {
    fn from(s: SegmentSize) -> u64 {
        s.bytes()
    }
}

/// One WAL segment: a timeline and a segment number (the LSN divided by
/// the segment size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalSegment {
    /// The timeline.
    pub timeline: TimelineId,
    /// The segment number.
    pub segno: u64,
}

impl WalSegment {
    /// The segment of `timeline` that holds `lsn`.
    pub fn containing(timeline: TimelineId, lsn: Lsn, size: SegmentSize) -> WalSegment {
        WalSegment { timeline, segno: lsn.0 / size.bytes() }
    }

    /// The segment's first position.
    pub fn start_lsn(self, size: SegmentSize) -> Lsn {
        Lsn(self.segno.saturating_mul(size.bytes()))
    }

    /// The position just after the segment.
    pub fn end_lsn(self, size: SegmentSize) -> Lsn {
        Lsn(self.segno.saturating_add(1).saturating_mul(size.bytes()))
    }

    /// The next segment of the same timeline.
    pub fn next(self) -> WalSegment {
        WalSegment { timeline: self.timeline, segno: self.segno + 1 }
    }

    /// The 24-hex-digit name `TTTTTTTTXXXXXXXXYYYYYYYY`.
    pub fn name(self, size: SegmentSize) -> String {
        let per = size.segments_per_log_id();
        format!("{:08X}{:08X}{:08X}", self.timeline.0, self.segno / per, self.segno % per)
    }

    /// Parses a 24-hex-digit segment name.
    pub fn parse(name: &str, size: SegmentSize) -> Result<WalSegment, LayoutError> {
        let bad = |reason: &str| LayoutError::BadName { name: name.to_owned(), reason: reason.to_owned() };
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("a segment name is 24 hexadecimal digits"));
        }
        let field = |i: usize| u32::from_str_radix(&name[i * 8..i * 8 + 8], 16).map_err(|_| bad("bad hex digits"));
        let (tli, log, seg) = (field(0)?, field(1)?, field(2)?);
        let timeline = TimelineId::new(tli).map_err(|_| bad("timeline 0 does not exist"))?;
        let per = size.segments_per_log_id();
        if u64::from(seg) >= per {
            return Err(bad(&format!(
                "the last 8 digits must be below {per:X} with {} MiB segments",
                size.bytes() >> 20
            )));
        }
        Ok(WalSegment { timeline, segno: u64::from(log) * per + u64::from(seg) })
    }
}

/// A file PostgreSQL archives, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFile {
    /// A whole segment, `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment(WalSegment),
    /// A timeline history file, `TTTTTTTT.history`.
    History(TimelineId),
    /// A backup history file, `<segment>.<offset 8 hex digits>.backup`.
    Backup {
        /// The segment the backup started in.
        segment: WalSegment,
        /// The start position's offset in that segment.
        offset: u32,
    },
    /// The last, incomplete segment of a timeline a standby was promoted
    /// from, `<segment>.partial`.
    Partial(WalSegment),
}

impl WalFile {
    /// Parses an archived file's name (`%f`).
    pub fn parse(name: &str, size: SegmentSize) -> Result<WalFile, LayoutError> {
        let bad = |reason: &str| LayoutError::BadName { name: name.to_owned(), reason: reason.to_owned() };
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() != 8 || !tli.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("a history file is 8 hexadecimal digits then .history"));
            }
            let tli = u32::from_str_radix(tli, 16).map_err(|_| bad("bad hex digits"))?;
            return TimelineId::new(tli).map(WalFile::History).map_err(|_| bad("timeline 0 does not exist"));
        }
        if let Some(rest) = name.strip_suffix(".partial") {
            return WalSegment::parse(rest, size).map(WalFile::Partial).map_err(|_| bad("bad segment before .partial"));
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) =
                rest.split_once('.').ok_or_else(|| bad("a backup file is <segment>.<offset>.backup"))?;
            let segment = WalSegment::parse(segment, size).map_err(|_| bad("bad segment before the offset"))?;
            if offset.len() != 8 || !offset.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("the offset of a backup file is 8 hexadecimal digits"));
            }
            let offset = u32::from_str_radix(offset, 16).map_err(|_| bad("bad hex digits"))?;
            if u64::from(offset) >= size.bytes() {
                return Err(bad("the offset is beyond the segment"));
            }
            return Ok(WalFile::Backup { segment, offset });
        }
        WalSegment::parse(name, size).map(WalFile::Segment)
    }

    /// The file's name, as PostgreSQL writes it.
    pub fn name(&self, size: SegmentSize) -> String {
        match self {
            WalFile::Segment(s) => s.name(size),
            WalFile::History(t) => t.history_file_name(),
            WalFile::Backup { segment, offset } => format!("{}.{offset:08X}.backup", segment.name(size)),
            WalFile::Partial(s) => format!("{}.partial", s.name(size)),
        }
    }

    /// The file's timeline.
    pub fn timeline(&self) -> TimelineId {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup { segment: s, .. } => s.timeline,
            WalFile::History(t) => *t,
        }
    }

    /// The segment, for a segment, `.partial` or `.backup` file.
    pub fn segment(&self) -> Option<WalSegment> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup { segment: s, .. } => Some(*s),
            WalFile::History(_) => None,
        }
    }

    /// Whether the file holds WAL records with page headers (a segment or a
    /// `.partial`), as opposed to a text file (`.history`, `.backup`).
    pub fn holds_wal(&self) -> bool {
        matches!(self, WalFile::Segment(_) | WalFile::Partial(_))
    }
}

/// One line of a timeline history file: timeline `timeline` ended at
/// `switch_lsn`, where its child began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// An ancestor timeline.
    pub timeline: TimelineId,
    /// Where it ended (the child's first position).
    pub switch_lsn: Lsn,
    /// Why (free text, e.g. `no recovery target specified`).
    pub reason: String,
}

/// The ancestors of a timeline, from its `TTTTTTTT.history` file, oldest
/// first. Lines are `parent<TAB>X/Y<TAB>reason`; blank lines and `#`
/// comments are skipped, as PostgreSQL does.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, LayoutError> {
    let bad = |line: &str, reason: &str| LayoutError::BadName {
        name: line.chars().take(80).collect(),
        reason: format!("not a timeline history line: {reason}"),
    };
    let mut out: Vec<HistoryEntry> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.splitn(3, ['\t', ' ']);
        let tli = fields.next().unwrap_or_default();
        let tli = tli.parse::<u32>().map_err(|_| bad(line, "the first field is not a timeline number"))?;
        let timeline = TimelineId::new(tli).map_err(|_| bad(line, "timeline 0"))?;
        let lsn = fields.next().unwrap_or_default().trim();
        let switch_lsn = lsn.parse::<Lsn>().map_err(|_| bad(line, "the second field is not an LSN"))?;
        if let Some(last) = out.last() {
            if last.timeline >= timeline || last.switch_lsn > switch_lsn {
                return Err(bad(line, "timelines and switch points must increase"));
            }
        }
        let reason = fields.next().unwrap_or_default().trim().to_owned();
        out.push(HistoryEntry { timeline, switch_lsn, reason });
    }
    Ok(out)
}

/// What a `pg-wal` or `pg-base` snapshot records in its [`METADATA_KEY`]
/// field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PitrInfo {
    /// A batch of archived WAL files.
    Wal(WalBatchInfo),
    /// A base backup.
    Base(BaseBackupInfo),
}

impl PitrInfo {
    /// The metadata of `snapshot`: `None` if it has none, an error if it is
    /// there but unreadable.
    pub fn of(snapshot: &cairn_repo::Snapshot) -> Option<Result<PitrInfo, serde_json::Error>> {
        snapshot.extra.get(METADATA_KEY).map(PitrInfo::deserialize)
    }

    /// The value to store under [`METADATA_KEY`].
    pub fn to_value(&self) -> serde_json::Value {
        // Serialising these structs cannot fail: string keys, no maps of other keys.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The cluster's system identifier.
    pub fn system_identifier(&self) -> u64 {
        match self {
            PitrInfo::Wal(w) => w.system_identifier,
            PitrInfo::Base(b) => b.system_identifier,
        }
    }
}

/// The files of one WAL batch snapshot (tree `wal/<name>`), listed so that
/// reading the snapshot list is enough to know which WAL exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalBatchInfo {
    /// The cluster's system identifier (a decimal string in JSON, as
    /// JavaScript numbers cannot hold every u64).
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    /// The cluster's WAL segment size.
    pub wal_segment_size: SegmentSize,
    /// The files, in name order.
    pub files: Vec<WalFileEntry>,
    /// Fields written by other versions, kept.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One archived WAL file of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalFileEntry {
    /// The file name (`%f`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The BLAKE3 hash of its content, hexadecimal.
    pub blake3: String,
    /// For a `.history` file, its text (a few lines), so that the timeline
    /// chain is known from the snapshot list alone. Absent for other files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
}

/// A tablespace of a base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceEntry {
    /// Its OID (the name of its `pg_tblspc` link and of its directory
    /// under `tablespaces/`).
    pub oid: u32,
    /// Where it was on the source.
    pub location: String,
}

/// What a base backup snapshot records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseBackupInfo {
    /// The cluster's system identifier (a decimal string in JSON).
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    /// `server_version_num` of the source, e.g. 150020.
    pub pg_version_num: u32,
    /// The cluster's WAL segment size.
    pub wal_segment_size: SegmentSize,
    /// The timeline the backup started on.
    pub timeline: TimelineId,
    /// Where `pg_backup_start` put the checkpoint's redo point.
    pub start_lsn: Lsn,
    /// Where `pg_backup_stop` ended: recovery is consistent from here.
    pub stop_lsn: Lsn,
    /// The segment holding `start_lsn`.
    pub start_wal: String,
    /// The segment holding `stop_lsn`.
    pub stop_wal: String,
    /// When the backup started.
    pub start_time: jiff::Timestamp,
    /// When it stopped: targets before this are refused.
    pub stop_time: jiff::Timestamp,
    /// `backup_label` as `pg_backup_stop` returned it.
    pub backup_label: String,
    /// `tablespace_map` as `pg_backup_stop` returned it, if any.
    pub tablespace_map: Option<String>,
    /// The tablespaces.
    #[serde(default)]
    pub tablespaces: Vec<TablespaceEntry>,
    /// The backup's label.
    pub label: String,
    /// Fields written by other versions, kept.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BaseBackupInfo {
    /// The segment holding the start position.
    pub fn start_segment(&self) -> WalSegment {
        WalSegment::containing(self.timeline, self.start_lsn, self.wal_segment_size)
    }

    /// The segment holding the stop position.
    pub fn stop_segment(&self) -> WalSegment {
        // The stop position is the end of the backup's last record: when it
        // falls on a segment boundary, that record ended in the segment before.
        let size = self.wal_segment_size;
        let lsn = if self.stop_lsn.0 % size.bytes() == 0 && self.stop_lsn > self.start_lsn {
            Lsn(self.stop_lsn.0 - 1)
        } else {
            self.stop_lsn
        };
        WalSegment::containing(self.timeline, lsn, size)
    }
}

/// A u64 as a decimal string.
mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a system identifier (a decimal u64)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: SegmentSize = SegmentSize::DEFAULT;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    #[test]
    fn lsn_parses_and_formats() {
        for (text, value, canonical) in [
            ("0/0", 0u64, "0/0"),
            ("0/16B3748", 0x16B_3748, "0/16B3748"),
            ("0/16b3748", 0x16B_3748, "0/16B3748"),
            ("1/0", 1 << 32, "1/0"),
            ("FFFFFFFF/FFFFFFFF", u64::MAX, "FFFFFFFF/FFFFFFFF"),
            ("00000002/00000010", (2 << 32) | 0x10, "2/10"),
        ] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn, Lsn(value), "{text}");
            assert_eq!(lsn.to_string(), canonical);
        }
        for bad in ["", "0", "/", "0/", "/0", "G/0", "0/123456789", "-1/0", "0/0/0", " 0/0", "+1/0"] {
            assert_eq!(bad.parse::<Lsn>(), Err(LayoutError::BadLsn(bad.into())), "{bad:?}");
        }
        assert!("0/FFFFFFFF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
    }

    #[test]
    fn segment_sizes() {
        for (bytes, ok) in
            [(1 << 20, true), (16 << 20, true), (1 << 30, true), (1 << 19, false), (2 << 30, false), (3 << 20, false)]
        {
            assert_eq!(SegmentSize::new(bytes).is_ok(), ok, "{bytes}");
        }
        assert_eq!(MB16.segments_per_log_id(), 256);
        assert_eq!(SegmentSize::new(1 << 30).unwrap().segments_per_log_id(), 4);
    }

    #[test]
    fn segment_names() {
        let big = SegmentSize::new(1 << 30).unwrap();
        for (name, size, timeline, segno) in [
            ("000000010000000000000001", MB16, 1, 1u64),
            ("000000010000000000000003", MB16, 1, 3),
            ("0000000100000001000000FF", MB16, 1, 256 + 255),
            ("0000000A0000000200000000", MB16, 10, 512),
            ("000000010000000100000003", big, 1, 7),
        ] {
            let s = WalSegment::parse(name, size).unwrap();
            assert_eq!(s, WalSegment { timeline: tli(timeline), segno }, "{name}");
            assert_eq!(s.name(size), name);
        }
        for bad in [
            "00000001000000000000001",   // 23 digits
            "0000000100000000000000010", // 25
            "00000000000000000000000A",  // timeline 0
            "000000010000000000000G01",  // not hex
            "000000010000000000000100",  // 0x100 ≥ 256 segments per log id
        ] {
            assert!(WalSegment::parse(bad, MB16).is_err(), "{bad}");
        }
        assert!(WalSegment::parse("000000010000000000000004", big).is_err());
    }

    #[test]
    fn lsns_and_segments() {
        let s = WalSegment::containing(tli(1), "0/3000028".parse().unwrap(), MB16);
        assert_eq!(s.name(MB16), "000000010000000000000003");
        assert_eq!(s.start_lsn(MB16).to_string(), "0/3000000");
        assert_eq!(s.end_lsn(MB16).to_string(), "0/4000000");
        assert_eq!(s.next().name(MB16), "000000010000000000000004");
        let last = WalSegment::parse("0000000100000000000000FF", MB16).unwrap();
        assert_eq!(last.next().name(MB16), "000000010000000100000000");
    }

    #[test]
    fn wal_file_names() {
        let seg = |n: &str| WalSegment::parse(n, MB16).unwrap();
        for (name, file) in [
            ("000000010000000000000003", WalFile::Segment(seg("000000010000000000000003"))),
            ("00000002.history", WalFile::History(tli(2))),
            ("0000000A.history", WalFile::History(tli(10))),
            (
                "000000010000000000000002.00000028.backup",
                WalFile::Backup { segment: seg("000000010000000000000002"), offset: 0x28 },
            ),
            ("000000010000000000000003.partial", WalFile::Partial(seg("000000010000000000000003"))),
        ] {
            let parsed = WalFile::parse(name, MB16).unwrap();
            assert_eq!(parsed, file, "{name}");
            assert_eq!(parsed.name(MB16), name);
        }
        for bad in [
            "",
            "00000000.history",
            "0000001.history",
            "0000000G.history",
            "000000010000000000000003.partial.partial",
            "000000010000000000000002.backup",
            "000000010000000000000002.0000028.backup",
            "000000010000000000000002.01000000.backup", // offset beyond 16 MiB
            "000000010000000000000003.ready",
            "../000000010000000000000003",
            "RECOVERYHISTORY",
        ] {
            assert!(WalFile::parse(bad, MB16).is_err(), "{bad:?}");
        }
        assert!(WalFile::parse("000000010000000000000003", MB16).unwrap().holds_wal());
        assert!(!WalFile::parse("00000002.history", MB16).unwrap().holds_wal());
    }

    #[test]
    fn history_files() {
        let text = "1\t0/4000000\tno recovery target specified\n\n# comment\n2\t0/6000098\tbefore 2026-12-06\n";
        let parsed = parse_history(text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0],
            HistoryEntry {
                timeline: tli(1),
                switch_lsn: Lsn(0x400_0000),
                reason: "no recovery target specified".into()
            }
        );
        assert_eq!(parsed[1].timeline, tli(2));
        assert_eq!(parse_history("").unwrap(), vec![]);
        for bad in ["x\t0/1\tr", "1\tzz\tr", "0\t0/1\tr", "2\t0/5\ta\n1\t0/6\tb", "1\t0/5\ta\n2\t0/4\tb", "1"] {
            assert!(parse_history(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_and_tags() {
        assert_eq!(wal_snapshot_path(7_350_000_000_000_000_001), "/pg-wal/7350000000000000001");
        assert_eq!(base_snapshot_path(42), "/pg-base/42");
        assert_eq!(wal_tree_path("00000002.history"), "wal/00000002.history");
    }

    #[test]
    fn wal_batch_metadata_round_trips() {
        let json = serde_json::json!({"kind":"wal","system_identifier":"7350000000000000001","wal_segment_size":16777216,
            "files":[{"name":"000000010000000000000003","size":16777216,"blake3":"ab"},
                {"name":"00000002.history","size":42,"blake3":"cd","history":"1\t0/4000000\tno recovery target specified\n"}]});
        let info: PitrInfo = serde_json::from_value(json.clone()).unwrap();
        let PitrInfo::Wal(batch) = &info else { panic!("not a batch") };
        assert_eq!(batch.system_identifier, 7_350_000_000_000_000_001);
        assert_eq!(batch.files[0].size, 16 << 20);
        assert_eq!(info.to_value(), json);
        for bad in [
            serde_json::json!({"kind":"wal","system_identifier":7,"wal_segment_size":16777216,"files":[]}),
            serde_json::json!({"kind":"wal","system_identifier":"x","wal_segment_size":16777216,"files":[]}),
            serde_json::json!({"kind":"wal","system_identifier":"7","wal_segment_size":1000,"files":[]}),
            serde_json::json!({"kind":"other","system_identifier":"7"}),
        ] {
            assert!(serde_json::from_value::<PitrInfo>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_backup_metadata_round_trips() {
        let json = serde_json::json!({"kind":"base","system_identifier":"7350000000000000001","pg_version_num":150020,
            "wal_segment_size":16777216,"timeline":1,"start_lsn":"0/2000028","stop_lsn":"0/3000000",
            "start_wal":"000000010000000000000002","stop_wal":"000000010000000000000002",
            "start_time":"2026-12-06T01:00:00Z","stop_time":"2026-12-06T01:00:05Z",
            "backup_label":"START WAL LOCATION: 0/2000028\n","tablespace_map":null,
            "tablespaces":[{"oid":16390,"location":"/srv/ts"}],"label":"nightly","future":1});
        let info: PitrInfo = serde_json::from_value(json.clone()).unwrap();
        let PitrInfo::Base(base) = &info else { panic!("not a base") };
        assert_eq!(base.start_lsn, Lsn(0x200_0028));
        assert_eq!(base.start_segment().name(base.wal_segment_size), "000000010000000000000002");
        // A stop position on a boundary ends in the segment before.
        assert_eq!(base.stop_segment().name(base.wal_segment_size), "000000010000000000000002");
        assert_eq!(base.extra["future"], 1);
        assert_eq!(info.to_value(), json);
        assert_eq!(info.system_identifier(), 7_350_000_000_000_000_001);
    }
}
