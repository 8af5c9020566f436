//! Reading the facts a base backup needs from `backup_label` (the text
//! `pg_backup_stop` returns): the first WAL segment and the timeline.
//!
//! ```text
//! START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//! CHECKPOINT LOCATION: 0/2000060
//! BACKUP METHOD: streamed
//! BACKUP FROM: primary
//! START TIME: 2026-12-06 01:40:00 UTC
//! LABEL: cairn
//! START TIMELINE: 1
//! ```

use crate::error::{Error, Result};
use crate::pitr::Lsn;

/// What a `backup_label` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The start LSN (`0/2000028`).
    pub start_lsn: String,
    /// The segment holding it (`000000010000000000000002`).
    pub start_wal: String,
    /// `START TIMELINE` (1 when absent, as before PostgreSQL 11).
    pub timeline: u32,
    /// `BACKUP FROM`: `primary` or `standby`.
    pub from: String,
}

/// Parses a `backup_label`.
pub fn parse(text: &str) -> Result<Label> {
    let bad = |why: &str| Error::Invalid(format!("the server's backup_label is not understood ({why}): {text:?}"));
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let location = field("START WAL LOCATION:").ok_or_else(|| bad("no START WAL LOCATION"))?;
    let (lsn, rest) = location.split_once(' ').ok_or_else(|| bad("START WAL LOCATION without a file"))?;
    let file = rest
        .trim()
        .strip_prefix("(file ")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad("START WAL LOCATION without a file"))?;
    if file.len() != 24 || !file.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the start file is not a WAL segment name"));
    }
    if lsn.parse::<Lsn>().is_err() {
        return Err(bad("the start location is not an LSN"));
    }
    let timeline = match field("START TIMELINE:") {
        Some(t) => t.parse().map_err(|_| bad("START TIMELINE is not a number"))?,
        None => 1,
    };
    Ok(Label {
        start_lsn: lsn.to_owned(),
        start_wal: file.to_owned(),
        timeline,
        from: field("BACKUP FROM:").unwrap_or("primary").to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n\
        START TIME: 2026-12-06 01:40:00 UTC\nLABEL: cairn\nSTART TIMELINE: 3\n";

    #[test]
    fn a_label_gives_start_segment_and_timeline() {
        let l = parse(LABEL).unwrap();
        assert_eq!(
            l,
            Label {
                start_lsn: "0/2000028".into(),
                start_wal: "000000010000000000000002".into(),
                timeline: 3,
                from: "standby".into()
            }
        );
    }

    #[test]
    fn malformed_labels_are_refused() {
        for text in [
            "",
            "START WAL LOCATION: 0/2000028",
            "START WAL LOCATION: 0/2000028 (file 0000000100000000000002)",
            "START WAL LOCATION: zz (file 000000010000000000000002)",
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: x",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
