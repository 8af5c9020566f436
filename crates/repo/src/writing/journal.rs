//! Resuming an interrupted backup: the packs a session uploaded before it
//! could index them are found again by the next session.
//!
//! A writer indexes its packs every 64 packs and at the end, so a backup
//! killed near its end leaves up to 64 packs no index file lists: the next
//! backup would not deduplicate against them and would upload everything
//! again. Each snapshot session therefore keeps a **journal** in the local
//! cache (`<cache>/sessions/<random>.packs`): one line per pack, written
//! just before the pack is uploaded, under an exclusive `flock` held for the
//! session's life. A session that commits removes its journal.
//!
//! When a session begins, it looks for journals nobody holds (their session
//! died), reads the headers of their packs that no index lists, publishes
//! an index file for them, and removes the journal. Their blobs are then
//! deduplicated against like any other. Nothing here is part of the
//! repository format: a repository used from several machines, or without
//! a cache, simply resumes less (FORMAT.md §12.1).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::StreamExt;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::format::id::{Id, PackId};
use crate::format::index::{Index, IndexedPack};
use crate::repository::Repository;

/// This session's journal: packs stored but perhaps not yet indexed.
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<Flock<File>>,
}

fn sessions_dir(cache: &Path) -> PathBuf {
    cache.join("sessions")
}

impl Journal {
    /// Starts a journal in the repository's cache directory.
    pub(crate) fn create(cache: &Path) -> Result<Journal> {
        let dir = sessions_dir(cache);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io { context: format!("cannot create {}", dir.display()), source: e })?;
        let path = dir.join(format!("{}.packs", Id::random().short()));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::Io { context: format!("cannot create {}", path.display()), source: e })?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| Error::Io {
            context: format!("cannot lock {}", path.display()),
            source: std::io::Error::from(errno),
        })?;
        Ok(Journal { path, file: Mutex::new(file) })
    }

    /// Notes a pack about to be stored. A failure only costs resumability.
    pub(crate) fn record(&self, pack: &PackId) {
        let mut file = self.file.lock().expect("journal poisoned");
        if writeln!(file, "{}", pack.to_hex()).is_err() {
            tracing::debug!("cannot note pack {} in {}", pack.short(), self.path.display());
        }
    }

    /// The session committed: everything it stored is indexed.
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Journals of sessions that died, with the packs they list.
fn abandoned(cache: &Path) -> Vec<(PathBuf, Flock<File>, Vec<PackId>)> {
    let Ok(entries) = std::fs::read_dir(sessions_dir(cache)) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "packs") {
            continue;
        }
        let Ok(file) = OpenOptions::new().read(true).append(true).open(&path) else { continue };
        // A journal someone holds belongs to a running session.
        let Ok(file) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
        let packs = BufReader::new(&*file)
            .lines()
            .map_while(std::result::Result::ok)
            .filter_map(|line| line.trim().parse::<PackId>().ok())
            .collect();
        out.push((path, file, packs));
    }
    out
}

/// Indexes the packs of abandoned journals that `index` does not list yet,
/// adding them to `index` too. Returns how many packs were recovered.
/// Best effort: a pack that is gone or unreadable is left to prune.
pub(crate) async fn recover(repo: &Repository, index: &mut Index) -> Result<usize> {
    let Some(cache) = repo.cache() else { return Ok(0) };
    let journals = abandoned(cache.dir());
    if journals.is_empty() {
        return Ok(0);
    }
    let mut wanted: Vec<PackId> = Vec::new();
    let mut seen = HashSet::new();
    for (_, _, packs) in &journals {
        wanted.extend(packs.iter().filter(|p| !index.has_pack(p) && seen.insert(**p)));
    }
    let found: Vec<IndexedPack> = futures::stream::iter(wanted)
        .map(|id| async move {
            let size = repo.backend().size(crate::storage::backend::FileKind::Pack, &id).await.ok()?;
            let header = repo.read_pack_header(&id).await.ok()?;
            Some(IndexedPack { id, size, session_public: header.session_public, blobs: header.entries })
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await;
    if !found.is_empty() {
        let writer = crate::writing::writer::Writer::new(repo, std::sync::Arc::new(Index::default()))?;
        writer.replace_index(found.clone(), Vec::new()).await?;
        for pack in &found {
            index.add_pack(pack, true);
        }
    }
    for (path, _lock, _) in journals {
        let _ = std::fs::remove_file(path);
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_is_abandoned_once_its_session_lets_go() {
        let cache = tempfile::tempdir().unwrap();
        let (a, b) = (PackId(Id([1; 32])), PackId(Id([2; 32])));
        let journal = Journal::create(cache.path()).unwrap();
        journal.record(&a);
        journal.record(&b);
        assert!(abandoned(cache.path()).is_empty(), "a running session's journal is not taken");
        drop(journal); // the process died: its lock is gone, the file stays
        let found = abandoned(cache.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].2, [a, b]);
        drop(found); // (finding it locks it, as recovery holds it while it works)

        let done = Journal::create(cache.path()).unwrap();
        done.record(&a);
        done.remove();
        drop(done);
        assert_eq!(abandoned(cache.path()).len(), 1, "a committed session leaves no journal");
    }
}
