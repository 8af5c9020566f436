//! The reader stage: open a changed or new file, read it (skipping the
//! holes of sparse files), cut it into chunks and hand them to the session's
//! store. Several readers run at once, because small files are bound by
//! system-call latency rather than CPU.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::Shared;
use super::budget::Permit;
use crate::files::fsmeta;
use crate::format::tree::Extent;
use crate::writing::profile::Stage;

/// A file for a reader, and where to send what it read.
pub(super) struct FileJob {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Read it whole for its directory's bundle (see [`super::bundle`]),
    /// if it is still small enough when read, holding this share of the
    /// read-ahead until the assembler has taken the bytes.
    pub(super) bundle: Option<Permit>,
    pub(super) result: Sender<FileResult>,
}

/// A file's content as read, or why it could not be read.
pub(super) struct FileResult {
    pub(super) content: Vec<Extent>,
    /// The whole content, for the bundle, instead of `content`.
    pub(super) bundled: Option<Bundled>,
    pub(super) size: u64,
    pub(super) error: Option<String>,
}

/// A small file's bytes for its directory's bundle.
pub(super) struct Bundled {
    pub(super) data: Bytes,
    /// Released when the assembler drops this, after appending `data`.
    _read_ahead: Permit,
}

impl Shared<'_> {
    /// Chunks a file's content: small files in one read, holes of sparse
    /// files as [`Extent::Hole`].
    fn chunk_file(
        &self,
        file: &mut File,
        meta: &Metadata,
        content: &mut Vec<Extent>,
        size: &mut u64,
    ) -> io::Result<()> {
        if meta.size() <= self.min_chunk as u64 {
            // One chunk: skip the stream chunker's buffering.
            if let Some(buf) = self.read_whole(file, meta, self.min_chunk as u64, content, size)? {
                if !buf.is_empty() {
                    content.push(self.store.submit(buf));
                }
            }
            return Ok(());
        }
        match fsmeta::data_ranges(file, meta) {
            None => self.store.chunk_stream(file, content, size),
            Some(ranges) => {
                let mut pos = 0;
                for range in ranges {
                    if range.start > pos {
                        content.push(Extent::Hole { length: range.start - pos });
                        *size += range.start - pos;
                    }
                    file.seek(SeekFrom::Start(range.start))?;
                    self.store.chunk_stream(&mut file.take(range.end - range.start), content, size)?;
                    pos = range.end;
                }
                if meta.size() > pos {
                    content.push(Extent::Hole { length: meta.size() - pos });
                    *size += meta.size() - pos;
                }
                Ok(())
            }
        }
    }

    /// Reads the job's file and sends the result to the assembler.
    pub(super) fn read_file(&self, job: FileJob) {
        let FileJob { path, size, bundle, result } = job;
        // The assembler is gone if the backup is aborting.
        let _ = result.send(self.read(&path, size, bundle));
    }

    fn read(&self, path: &Path, expected_size: u64, bundle: Option<Permit>) -> FileResult {
        let mut content = Vec::new();
        let mut size = 0;
        // Large files go through the stream chunker, whose buffer holds up to
        // two maximal chunks: only one reader per core streams at a time.
        let _stream =
            (expected_size > self.min_chunk as u64).then(|| self.streams.take(1, || self.aborted())).flatten();
        let mut bundled = None;
        let opened = open_for_backup(path);
        let outcome = opened.and_then(|mut file| {
            let meta = file.metadata()?;
            if let Some(permit) = bundle {
                let data = self.read_whole(&mut file, &meta, self.bundle_file_max, &mut content, &mut size)?;
                bundled = data.map(|data| Bundled { data, _read_ahead: permit });
            } else {
                self.chunk_file(&mut file, &meta, &mut content, &mut size)?;
            }
            let after = file.metadata()?;
            Ok(after.mtime() != meta.mtime()
                || after.mtime_nsec() != meta.mtime_nsec()
                || after.ctime() != meta.ctime()
                || after.ctime_nsec() != meta.ctime_nsec()
                || after.size() != size
                || meta.size() != expected_size)
        });
        let error = match outcome {
            Ok(changed) => {
                if changed {
                    self.events.warning(path, "file changed while it was read; the snapshot has what was read");
                }
                None
            }
            Err(e) => {
                let message = if size > 0 { format!("read failed after {size} bytes: {e}") } else { e.to_string() };
                self.events.warning(path, &message);
                self.progress.errors.fetch_add(1, Ordering::Relaxed);
                Some(message)
            }
        };
        FileResult { content, bundled, size, error }
    }

    /// Reads a file of at most `limit` bytes whole (for one chunk, or for
    /// its directory's bundle) and counts it. A file that grew past `limit`
    /// meanwhile is chunked as a stream instead (into `content`): `None`.
    fn read_whole(
        &self,
        file: &mut File,
        meta: &Metadata,
        limit: u64,
        content: &mut Vec<Extent>,
        size: &mut u64,
    ) -> io::Result<Option<Bytes>> {
        let mut buf = Vec::with_capacity(meta.size().min(limit) as usize + 1);
        let start = std::time::Instant::now();
        file.take(limit + 1).read_to_end(&mut buf)?;
        self.store.writer().clock().since(Stage::Read, start, buf.len() as u64);
        if buf.len() as u64 <= limit {
            *size += buf.len() as u64;
            self.progress.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
            return Ok(Some(Bytes::from(buf)));
        }
        // It grew while we looked: chunk what we have and the rest (the
        // stream chunker counts the bytes).
        let mut rest = io::Cursor::new(buf).chain(file);
        self.store.chunk_stream(&mut rest, content, size)?;
        Ok(None)
    }
}

/// Opens a file for reading without updating its access time where the
/// kernel allows that (`O_NOATIME` needs ownership or CAP_FOWNER).
fn open_for_backup(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let noatime = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOATIME).open(path);
    match noatime {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => File::open(path),
        other => other,
    }
}
