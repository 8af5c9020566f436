//! Files a mount shows that a snapshot does not hold as such: views of the
//! files it holds, converted line by line (a PostgreSQL table's COPY data
//! as CSV, from `cairn-pgsource`). A [`DerivedFiles`] hook names them; the
//! mount sizes each with one pass over its source, keeping checkpoints, so
//! a read at any offset converts from the nearest checkpoint only.

use std::sync::Arc;

use tokio::runtime::Handle;

use super::content::{self, BlobCache, FileLayout};
use crate::error::Result;
use crate::format::tree::{Node, Tree};
use crate::view::TreeLoader;

/// Names the derived files of snapshot directories.
pub trait DerivedFiles: Send + Sync {
    /// The derived directory to show in a snapshot directory whose entries
    /// are `dir`, if any (for example `csv/` beside a PostgreSQL
    /// snapshot's `manifest.json`). `loader` reads files and trees of the
    /// snapshot.
    fn derive(&self, dir: &Tree, loader: &TreeLoader) -> Option<DerivedDir>;
}

/// A directory of derived files.
pub struct DerivedDir {
    /// Its name in the snapshot directory (never one of its entries').
    pub name: Vec<u8>,
    /// Its files, by name.
    pub files: Vec<DerivedFile>,
}

/// One derived file: `source` converted line by line.
pub struct DerivedFile {
    /// Its name.
    pub name: Vec<u8>,
    /// The file it is made from (a file node of the snapshot).
    pub source: Node,
    /// The conversion.
    pub convert: Arc<dyn LineConvert>,
}

/// A conversion of a text file, line by line.
pub trait LineConvert: Send + Sync {
    /// What comes before the first line (a CSV header).
    fn prefix(&self) -> Vec<u8>;
    /// Appends the conversion of one line (without its `\n`) to `out`.
    fn line(&self, line: &[u8], out: &mut Vec<u8>);
}

/// Bytes of output between checkpoints.
const CHECKPOINT_EVERY: u64 = 1 << 20;
/// Bytes of source read at a time.
const SOURCE_READ: u64 = 1 << 20;

/// A derived file as the mount serves it: its size and where to resume.
pub struct Converted {
    source: FileLayout,
    convert: Arc<dyn LineConvert>,
    /// `(output offset, source offset)` at line starts, the first `(prefix length, 0)`.
    checkpoints: Vec<(u64, u64)>,
    size: u64,
}

/// Reads a source file: `content::read` with the mount's cache.
pub struct SourceReader<'a> {
    pub(super) loader: &'a TreeLoader,
    pub(super) handle: &'a Handle,
    pub(super) cache: &'a Arc<BlobCache>,
}

impl SourceReader<'_> {
    fn read(&self, layout: &FileLayout, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (repo, index) = (self.loader.repository(), self.loader.index());
        content::read_with(repo, index, self.handle, self.cache, layout, offset, len, <[u8]>::to_vec)
    }
}

impl Converted {
    /// Sizes `file` with one pass over its source.
    pub fn measure(file: &DerivedFile, reader: &SourceReader<'_>) -> Result<Converted> {
        let source = FileLayout::of(&file.source);
        let prefix = file.convert.prefix().len() as u64;
        let mut checkpoints = vec![(prefix, 0)];
        let mut size = prefix;
        let mut out = Vec::new();
        let mut last_checkpoint = prefix;
        walk_lines(reader, &source, 0, |line_start, line| {
            if size - last_checkpoint >= CHECKPOINT_EVERY {
                checkpoints.push((size, line_start));
                last_checkpoint = size;
            }
            out.clear();
            file.convert.line(line, &mut out);
            size += out.len() as u64;
            true
        })?;
        Ok(Converted { source, convert: file.convert.clone(), checkpoints, size })
    }

    /// The converted size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `len` bytes of the conversion at `offset` (fewer at its end).
    pub fn read(&self, reader: &SourceReader<'_>, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        if offset >= end {
            return Ok(out);
        }
        let prefix = self.convert.prefix();
        let take = |out: &mut Vec<u8>, piece: &[u8], at: u64| {
            // `piece` covers [at, at + len): keep what falls in [offset, end).
            let from = offset.saturating_sub(at).min(piece.len() as u64) as usize;
            let to = end.saturating_sub(at).min(piece.len() as u64) as usize;
            if from < to {
                out.extend_from_slice(&piece[from..to]);
            }
        };
        take(&mut out, &prefix, 0);
        let i = self.checkpoints.partition_point(|&(o, _)| o <= offset).saturating_sub(1);
        let (mut at, source_offset) = self.checkpoints[i];
        let mut line_out = Vec::new();
        walk_lines(reader, &self.source, source_offset, |_, line| {
            line_out.clear();
            self.convert.line(line, &mut line_out);
            take(&mut out, &line_out, at);
            at += line_out.len() as u64;
            at < end
        })?;
        Ok(out)
    }
}

/// Calls `each(line start, line)` for each line of `source` from
/// `from` (a line start), until it returns false. A last line without
/// `\n` counts.
fn walk_lines(
    reader: &SourceReader<'_>,
    source: &FileLayout,
    from: u64,
    mut each: impl FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_start = from;
    let mut at = from;
    while at < source.size() {
        let chunk = reader.read(source, at, SOURCE_READ)?;
        if chunk.is_empty() {
            break;
        }
        at += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let keep_going = if pending.is_empty() {
                each(pending_start, &rest[..newline])
            } else {
                pending.extend_from_slice(&rest[..newline]);
                let go = each(pending_start, &pending);
                pending.clear();
                go
            };
            if !keep_going {
                return Ok(());
            }
            rest = &rest[newline + 1..];
            // The next line starts after this newline.
            pending_start = at - rest.len() as u64;
        }
        pending.extend_from_slice(rest);
    }
    if !pending.is_empty() {
        each(pending_start, &pending);
    }
    Ok(())
}
