//! WAL page headers: what `wal-push` checks in every segment before it
//! stores it (PostgreSQL's `XLogPageHeaderData` and
//! `XLogLongPageHeaderData`, `src/include/access/xlog_internal.h`).
//!
//! Every page starts with a short header: magic (u16), info flags (u16),
//! timeline (u32), the page's own WAL address (u64) and the length of a
//! record continued from the page before (u32), 24 bytes with padding. The
//! first page of a segment has the long header: the same 20 bytes, then at
//! offset 24 the system identifier (u64), the segment size (u32) and the
//! page size (u32). Integers are little-endian on the platforms cairn runs on.

use super::super::layout::{Lsn, SegmentSize, WalSegment};

/// `XLP_LONG_HEADER`: the page has the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Every flag PostgreSQL 12–17 defines.
const XLP_ALL_FLAGS: u16 = 0x000F;
/// Bytes of the short header (`SizeOfXLogShortPHD`, MAXALIGNed).
const SHORT_HEADER: usize = 24;
/// Bytes of the long header (`SizeOfXLogLongPHD`).
const LONG_HEADER: usize = 40;

/// `XLOG_PAGE_MAGIC` of each major version cairn knows.
const MAGICS: [(u32, u16); 6] = [(12, 0xD101), (13, 0xD106), (14, 0xD10D), (15, 0xD110), (16, 0xD113), (17, 0xD116)];

/// The WAL page magic of PostgreSQL `major`, if cairn knows it.
pub fn magic_of(major: u32) -> Option<u16> {
    MAGICS.iter().find(|(m, _)| *m == major).map(|(_, magic)| *magic)
}

/// The major version a WAL page magic belongs to, if cairn knows it.
pub fn major_of(magic: u16) -> Option<u32> {
    MAGICS.iter().find(|(_, m)| *m == magic).map(|(major, _)| *major)
}

/// What a segment's first page says about its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    /// `XLOG_PAGE_MAGIC` (one per major version).
    pub magic: u16,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// The cluster's WAL segment size.
    pub segment_size: SegmentSize,
    /// The WAL page size (`XLOG_BLCKSZ`, 8 KiB unless built otherwise).
    pub page_size: u32,
    /// The first page's address.
    pub page_address: Lsn,
}

/// A WAL segment whose headers are wrong: not PostgreSQL WAL, another
/// cluster's, another version's, or damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub String);

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Reads the long header of a segment's first page.
pub fn read_long_header(bytes: &[u8]) -> Result<LongHeader, HeaderError> {
    if bytes.len() < LONG_HEADER {
        return Err(HeaderError(format!("{} bytes are too short for a WAL segment", bytes.len())));
    }
    let magic = u16_at(bytes, 0);
    if major_of(magic).is_none() {
        return Err(HeaderError(format!(
            "the first page's magic {magic:#06X} is not the WAL page magic of a PostgreSQL version cairn knows (12 to 17): not a WAL segment, or damaged"
        )));
    }
    let info = u16_at(bytes, 2);
    if info & XLP_LONG_HEADER == 0 || info & !XLP_ALL_FLAGS != 0 {
        return Err(HeaderError(format!("the first page's flags {info:#06X} lack the long header: damaged")));
    }
    let segment_size = SegmentSize::new(u64::from(u32_at(bytes, 32)))
        .map_err(|e| HeaderError(format!("the first page's segment size: {e}")))?;
    let page_size = u32_at(bytes, 36);
    if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
        return Err(HeaderError(format!("the first page's WAL page size {page_size} is not 1 KiB to 64 KiB")));
    }
    Ok(LongHeader {
        magic,
        system_identifier: u64_at(bytes, 24),
        segment_size,
        page_size,
        page_address: Lsn(u64_at(bytes, 8)),
    })
}

/// Checks a segment (or `.partial`) file: its size, and each page header's
/// magic, flags, timeline and address against `segment` and the first
/// page's long header. A page whose header is all zeros was never written
/// (the tail of a switched segment) and is accepted; `first_page_only`
/// checks the first page alone (a `.partial` file's tail may hold old data).
pub fn check_segment(
    bytes: &[u8],
    segment: WalSegment,
    header: &LongHeader,
    first_page_only: bool,
) -> Result<(), HeaderError> {
    let size = header.segment_size;
    if bytes.len() as u64 != size.bytes() {
        return Err(HeaderError(format!(
            "the file has {} bytes, the segment size in its header is {}",
            bytes.len(),
            size.bytes()
        )));
    }
    let start = segment.start_lsn(size);
    if header.page_address != start {
        return Err(HeaderError(format!(
            "the first page's address is {}, the file name says {start}: the file was renamed or is stale",
            header.page_address
        )));
    }
    let page_size = header.page_size as usize;
    let pages = if first_page_only { 1 } else { bytes.len() / page_size };
    for i in 0..pages {
        let page = &bytes[i * page_size..i * page_size + SHORT_HEADER];
        if i > 0 && page.iter().all(|&b| b == 0) {
            continue;
        }
        let at = Lsn(start.0 + (i * page_size) as u64);
        let magic = u16_at(page, 0);
        if magic != header.magic {
            return Err(HeaderError(format!(
                "the page at {at} has magic {magic:#06X}, the first page {:#06X}",
                header.magic
            )));
        }
        let info = u16_at(page, 2);
        if info & !XLP_ALL_FLAGS != 0 || ((info & XLP_LONG_HEADER != 0) != (i == 0)) {
            return Err(HeaderError(format!("the page at {at} has flags {info:#06X}: damaged")));
        }
        let tli = u32_at(page, 4);
        if tli == 0 || tli > segment.timeline.get() {
            return Err(HeaderError(format!(
                "the page at {at} is of timeline {tli}, the file of timeline {}",
                segment.timeline
            )));
        }
        let address = Lsn(u64_at(page, 8));
        if address != at {
            return Err(HeaderError(format!("the page at {at} says it is at {address}: damaged or stale")));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pitr::layout::TimelineId;

    /// A synthetic segment: `pages` written pages of `segment`, zeros after.
    pub(crate) fn segment_bytes(sysid: u64, segment: WalSegment, size: SegmentSize, written: usize) -> Vec<u8> {
        let page = 8192usize;
        let mut b = vec![0u8; size.bytes() as usize];
        for i in 0..written.min(b.len() / page) {
            let p = &mut b[i * page..];
            p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            let info: u16 = if i == 0 { XLP_LONG_HEADER } else { 0 };
            p[2..4].copy_from_slice(&info.to_le_bytes());
            p[4..8].copy_from_slice(&segment.timeline.get().to_le_bytes());
            let addr = segment.start_lsn(size).0 + (i * page) as u64;
            p[8..16].copy_from_slice(&addr.to_le_bytes());
            if i == 0 {
                p[24..32].copy_from_slice(&sysid.to_le_bytes());
                p[32..36].copy_from_slice(&(size.bytes() as u32).to_le_bytes());
                p[36..40].copy_from_slice(&(page as u32).to_le_bytes());
            }
            p[100] = (i % 251) as u8 + 1;
        }
        b
    }

    fn size1m() -> SegmentSize {
        SegmentSize::new(1 << 20).unwrap()
    }

    fn seg(n: u64, tli: u32) -> WalSegment {
        WalSegment { timeline: TimelineId::new(tli).unwrap(), segno: n }
    }

    #[test]
    fn magics() {
        assert_eq!(magic_of(15), Some(0xD110));
        assert_eq!(major_of(0xD113), Some(16));
        assert_eq!(magic_of(9), None);
    }

    #[test]
    fn good_segments_pass() {
        let size = size1m();
        for written in [1, 5, 128] {
            let b = segment_bytes(7, seg(3, 1), size, written);
            let h = read_long_header(&b).unwrap();
            assert_eq!((h.system_identifier, h.segment_size, h.page_size), (7, size, 8192));
            check_segment(&b, seg(3, 1), &h, false).unwrap();
        }
        // A segment of timeline 2 may begin with pages of timeline 1 (copied at the switch).
        let b = segment_bytes(7, seg(3, 1), size, 4);
        let h = read_long_header(&b).unwrap();
        check_segment(&b, seg(3, 2), &h, false).unwrap();
    }

    #[test]
    fn bad_segments_fail() {
        let size = size1m();
        let good = segment_bytes(7, seg(3, 1), size, 128);
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage, WalSegment, &str); 6] = [
            ("renamed", |_| {}, seg(4, 1), "file name says"),
            ("wrong magic", |b| b[8192] = 0x11, seg(3, 1), "magic"),
            ("wrong address", |b| b[8192 * 5 + 9] ^= 1, seg(3, 1), "says it is at"),
            ("newer timeline page", |b| b[8192 * 2 + 4] = 9, seg(3, 1), "timeline 9"),
            ("truncated", |b| b.truncate(8192 * 3), seg(3, 1), "bytes"),
            ("long flag on page 2", |b| b[8192 + 2] = 2, seg(3, 1), "flags"),
        ];
        for (what, damage, segment, expect) in cases {
            let mut b = good.clone();
            damage(&mut b);
            let h = read_long_header(&b).unwrap();
            let result = check_segment(&b, segment, &h, false);
            if expect.is_empty() {
                assert!(result.is_ok(), "{what}");
            } else {
                let e = result.expect_err(what);
                assert!(e.0.contains(expect), "{what}: {e}");
            }
        }
        for (what, damage) in [
            ("not WAL", (|b: &mut Vec<u8>| b[0] = 0) as fn(&mut Vec<u8>)),
            ("short header first", |b| b[2] = 0),
            ("segment size", |b| b[33] = 3),
            ("page size", |b| b[37] = 3),
            ("too short", |b| b.truncate(10)),
        ] {
            let mut b = good.clone();
            damage(&mut b);
            assert!(read_long_header(&b).is_err(), "{what}");
        }
        // A .partial's tail is not checked.
        let mut b = good.clone();
        b[8192 * 7 + 9] ^= 1;
        let h = read_long_header(&b).unwrap();
        check_segment(&b, seg(3, 1), &h, true).unwrap();
    }
}
