//! Listing a data directory (or a tablespace) for a base backup: what to
//! copy, by the rules of [`exclude`](super::exclude), with each entry's
//! metadata. Entries that vanish while being listed (a dropped table or
//! database) are left out; the copy does the same for files that vanish
//! before they are read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cairn_repo::EntryMeta;

use super::exclude::{self, Rule};
use crate::error::{Error, Result};

/// One entry to copy.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it is on disk.
    pub source: PathBuf,
    /// Its path in the snapshot (`data/base/5/16384`).
    pub path: String,
    /// Owner, mode and time.
    pub meta: EntryMeta,
    /// Size when listed (a file's; 0 for directories).
    pub size: u64,
}

/// What a listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Directories (parents before children).
    pub dirs: Vec<Entry>,
    /// Regular files.
    pub files: Vec<Entry>,
    /// Paths that vanished while being listed.
    pub vanished: Vec<String>,
    /// Symbolic links left out (other than `pg_tblspc`'s, which the
    /// tablespace map describes), as `path -> target`.
    pub skipped_links: Vec<String>,
    /// Files of unlogged relations left out.
    pub unlogged: u64,
}

fn meta_of(m: &std::fs::Metadata) -> EntryMeta {
    let mtime = jiff::Timestamp::new(m.mtime(), m.mtime_nsec() as i32).ok();
    EntryMeta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        user: String::new(),
        group: String::new(),
        mtime,
        xattrs: Vec::new(),
    }
}

fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// Lists `root` as snapshot directory `prefix` (`data` or
/// `tablespaces/OID`). `pgdata`: apply the data directory's exclusions
/// (tablespaces have none but temporary files and unlogged relations).
pub fn list(root: &Path, prefix: &str, pgdata: bool) -> Result<Listing> {
    let mut listing = Listing::default();
    let top = std::fs::metadata(root).map_err(|e| Error::io(format!("cannot read {}", root.display()), e))?;
    if !top.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", root.display())));
    }
    listing.dirs.push(Entry { source: root.to_path_buf(), path: prefix.to_owned(), meta: meta_of(&top), size: 0 });
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let reading = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if vanished(&e) => {
                listing.vanished.push(format!("{prefix}/{rel}"));
                continue;
            }
            Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
        };
        let mut names = Vec::new();
        for entry in reading {
            let entry = entry.map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(name) => {
                    return Err(Error::Invalid(format!(
                        "{}: the name {name:?} is not UTF-8, which PostgreSQL never writes; remove the file",
                        dir.display()
                    )));
                }
            }
        }
        names.sort();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let unlogged = exclude::unlogged_files(&refs);
        listing.unlogged += unlogged.len() as u64;
        for name in &names {
            if unlogged.contains(&name.as_str()) {
                continue;
            }
            let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let rule = if pgdata { exclude::rule(&child_rel) } else { exclude::rule(&format!("tablespace/{name}")) };
            if rule == Rule::Skip {
                continue;
            }
            let source = dir.join(name);
            let path = format!("{prefix}/{child_rel}");
            let m = match std::fs::symlink_metadata(&source) {
                Ok(m) => m,
                Err(e) if vanished(&e) => {
                    listing.vanished.push(path);
                    continue;
                }
                Err(e) => return Err(Error::io(format!("cannot read {}", source.display()), e)),
            };
            let m = if m.file_type().is_symlink() {
                if pgdata && rel == "pg_tblspc" {
                    continue; // a tablespace: its own tree, and tablespace_map
                }
                match std::fs::metadata(&source) {
                    // pg_wal moved elsewhere (initdb -X): an empty pg_wal here.
                    Ok(target) if target.is_dir() && rule == Rule::EmptyDir => target,
                    Ok(target) if target.is_file() => target,
                    _ => {
                        let to = std::fs::read_link(&source).map(|t| t.display().to_string()).unwrap_or_default();
                        listing.skipped_links.push(format!("{path} -> {to}"));
                        continue;
                    }
                }
            } else {
                m
            };
            let entry = Entry { source: source.clone(), path, meta: meta_of(&m), size: m.len() };
            if m.is_dir() {
                listing.dirs.push(Entry { size: 0, ..entry });
                if rule == Rule::Copy {
                    stack.push((source, child_rel));
                } else if child_rel == "pg_wal" {
                    // Recovery needs pg_wal/archive_status.
                    let status = source.join("archive_status");
                    if let Ok(sm) = std::fs::metadata(&status) {
                        listing.dirs.push(Entry {
                            source: status,
                            path: format!("{prefix}/pg_wal/archive_status"),
                            meta: meta_of(&sm),
                            size: 0,
                        });
                    }
                }
            } else if m.is_file() {
                listing.files.push(entry);
            }
            // Sockets, FIFOs and devices have no place in a data directory.
        }
    }
    listing.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}
