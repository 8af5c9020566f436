//! PostgreSQL snapshots in `cairn mount`: beside a database's
//! `manifest.json`, a `csv/` directory with each table's rows as a CSV file
//! (`SCHEMA.TABLE.csv`, a header of the column names), converted on the fly
//! from the COPY text data the snapshot holds.
//!
//! The CSV is PostgreSQL's own (`COPY … TO STDOUT WITH (FORMAT csv,
//! HEADER)`): a NULL is an empty field, an empty string is `""`, and a field
//! with a comma, a quote, a line break, or that is `\.` is quoted with
//! quotes doubled.

use std::sync::Arc;

use cairn_repo::{DerivedDir, DerivedFile, DerivedFiles, LineConvert, Node, NodeKind, Tree, TreeLoader};

use crate::manifest::{MANIFEST_FILE, Manifest};

/// The largest manifest read (a manifest lists tables, not rows).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The `csv/` view of PostgreSQL snapshots, for [`cairn_repo::MountOptions::derived`].
pub struct TablesAsCsv;

impl DerivedFiles for TablesAsCsv {
    fn derive(&self, dir: &Tree, loader: &TreeLoader) -> Option<DerivedDir> {
        let manifest_node = dir.get(MANIFEST_FILE.as_bytes()).filter(|n| n.kind == NodeKind::File)?;
        if manifest_node.size > MAX_MANIFEST_BYTES {
            return None;
        }
        let bytes = crate::restore::read_file(loader, manifest_node, MANIFEST_FILE)
            .map_err(|e| tracing::warn!("a PostgreSQL manifest in the mount cannot be read: {e}"))
            .ok()?;
        let manifest = Manifest::decode(&bytes)
            .map_err(|e| tracing::warn!("a PostgreSQL manifest in the mount cannot be read: {e}"))
            .ok()?;
        let files = manifest
            .tables
            .iter()
            .filter_map(|table| {
                let source = find(dir, loader, table.file.as_deref()?)?;
                Some(DerivedFile {
                    name: csv_name(&table.schema, &table.name).into_bytes(),
                    source,
                    convert: Arc::new(CopyToCsv { columns: table.columns.clone() }),
                })
            })
            .collect();
        Some(DerivedDir { name: b"csv".to_vec(), files })
    }
}

/// The file at `path` (as the manifest records it) below `dir`.
fn find(dir: &Tree, loader: &TreeLoader, path: &str) -> Option<Node> {
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    let mut tree = dir.clone();
    while let Some(part) = parts.next() {
        let node = tree.get(part.as_bytes())?.clone();
        if parts.peek().is_none() {
            return (node.kind == NodeKind::File).then_some(node);
        }
        tree = loader.load(&node.subtree?.0).ok()?;
    }
    None
}

/// `SCHEMA.TABLE.csv`, with `/` and NUL (which a file name cannot hold)
/// as `%2F` and `%00`, and `%` as `%25` so names stay distinct.
fn csv_name(schema: &str, table: &str) -> String {
    let escape = |s: &str| s.replace('%', "%25").replace('/', "%2F").replace('\0', "%00");
    format!("{}.{}.csv", escape(schema), escape(table))
}

/// One line of COPY text to one CSV record.
struct CopyToCsv {
    columns: Vec<String>,
}

impl LineConvert for CopyToCsv {
    fn prefix(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, column) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            csv_field(column.as_bytes(), &mut out);
        }
        out.push(b'\n');
        out
    }

    fn line(&self, line: &[u8], out: &mut Vec<u8>) {
        copy_line_to_csv(line, out);
    }
}

/// Converts one COPY text line (without its newline) to a CSV record,
/// appended to `out` with its newline.
pub fn copy_line_to_csv(line: &[u8], out: &mut Vec<u8>) {
    let mut field = Vec::new();
    for (i, raw) in line.split(|&b| b == b'\t').enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if raw == b"\\N" {
            continue; // NULL: an empty, unquoted field
        }
        field.clear();
        unescape(raw, &mut field);
        csv_field(&field, out);
    }
    out.push(b'\n');
}

/// COPY text's backslash escapes: `\b \f \n \r \t \v`, octal `\1`–`\377`,
/// hex `\x0`–`\xFF`, and any other `\c` as `c`.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(value as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
}

/// One CSV field as PostgreSQL writes it.
fn csv_field(value: &[u8], out: &mut Vec<u8>) {
    let quote = value.is_empty() || value == b"\\." || value.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !quote {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_lines_become_postgresql_csv() {
        // (COPY text line, CSV record)
        let table: &[(&[u8], &[u8])] = &[
            (b"1\talice\t\\N", b"1,alice,\n"),
            (b"2\t\t", b"2,\"\",\"\"\n"),
            (b"3\ta,b\tsay \"hi\"", b"3,\"a,b\",\"say \"\"hi\"\"\"\n"),
            (b"4\tline\\none\\ttab\\\\slash", b"4,\"line\none\ttab\\slash\"\n"),
            (b"5\t\\r\\b\\f\\v", b"5,\"\r\x08\x0c\x0b\"\n"),
            (b"6\t\\101\\x42\\x4\\7", b"6,AB\x04\x07\n"),
            (b"7\t\\\\.", b"7,\"\\.\"\n"),
            (b"7\t\\.", b"7,.\n"),
            (b"8\t\\q\\", b"8,q\\\n"),
            (b"\\N", b"\n"),
            (b"", b"\"\"\n"),
            (b"caf\xc3\xa9\t\xff", b"caf\xc3\xa9,\xff\n"),
        ];
        for (line, csv) in table {
            let mut out = Vec::new();
            copy_line_to_csv(line, &mut out);
            assert_eq!(out, *csv, "{}", String::from_utf8_lossy(line));
        }
    }

    /// A row as COPY text writes it (what the snapshot holds).
    fn copy_text(row: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut line = Vec::new();
        for (i, field) in row.iter().enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            match field {
                None => line.extend_from_slice(b"\\N"),
                Some(bytes) => {
                    for &b in bytes {
                        match b {
                            b'\\' => line.extend_from_slice(b"\\\\"),
                            b'\n' => line.extend_from_slice(b"\\n"),
                            b'\r' => line.extend_from_slice(b"\\r"),
                            b'\t' => line.extend_from_slice(b"\\t"),
                            _ => line.push(b),
                        }
                    }
                }
            }
        }
        line
    }

    /// Reads one CSV record back (RFC 4180, NULL as an unquoted empty field).
    fn parse_csv(record: &[u8]) -> Vec<Option<Vec<u8>>> {
        let body = record.strip_suffix(b"\n").expect("a record ends in a newline");
        let (mut fields, mut i) = (Vec::new(), 0);
        loop {
            if body.get(i) == Some(&b'"') {
                let mut value = Vec::new();
                i += 1;
                loop {
                    match (body[i], body.get(i + 1)) {
                        (b'"', Some(b'"')) => {
                            value.push(b'"');
                            i += 2;
                        }
                        (b'"', _) => {
                            i += 1;
                            break;
                        }
                        (b, _) => {
                            value.push(b);
                            i += 1;
                        }
                    }
                }
                fields.push(Some(value));
            } else {
                let end = body[i..].iter().position(|&b| b == b',').map_or(body.len(), |p| i + p);
                fields.push((end > i).then(|| body[i..end].to_vec()));
                i = end;
            }
            if i >= body.len() {
                return fields;
            }
            assert_eq!(body[i], b',');
            i += 1;
        }
    }

    proptest::proptest! {
        /// Any row survives COPY text → CSV → a CSV reader: NULLs, empty
        /// strings, quotes, commas, line breaks, backslashes, any byte.
        #[test]
        fn rows_round_trip(row in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12)), 1..6)
        ) {
            let mut csv = Vec::new();
            copy_line_to_csv(&copy_text(&row), &mut csv);
            proptest::prop_assert_eq!(parse_csv(&csv), row);
        }

        /// Arbitrary bytes (a damaged or crafted data file) never panic.
        #[test]
        fn any_line_converts(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut csv = Vec::new();
            copy_line_to_csv(&line, &mut csv);
            proptest::prop_assert!(csv.ends_with(b"\n"));
        }
    }

    #[test]
    fn the_header_names_the_columns() {
        let convert = CopyToCsv { columns: vec!["id".into(), "full name".into(), "a,b".into()] };
        assert_eq!(convert.prefix(), b"id,full name,\"a,b\"\n");
    }

    #[test]
    fn names_are_file_names() {
        assert_eq!(csv_name("public", "users"), "public.users.csv");
        assert_eq!(csv_name("odd/schema", "50%"), "odd%2Fschema.50%25.csv");
    }
}
