//! The push spool: a local directory where the foreground `wal-push` and
//! the background pusher meet (as pgBackRest's `archive-push` spool).
//!
//! | file | written by | meaning |
//! | --- | --- | --- |
//! | `queue/<name>` | foreground | please push this file; holds its absolute path |
//! | `<name>.ok` | pusher | committed in the repository (or already there); holds the BLAKE3 hash |
//! | `<name>.error` | pusher | refused; holds the reason |
//! | `pushed.log` | pusher | `name hash` per line: what this host has pushed (a put-only key cannot read the repository) |
//! | `system_identifier` | pusher | the cluster this spool belongs to |
//! | `pusher.lock` | pusher | `flock`ed while a pusher runs |
//! | `pusher.log` | pusher | its output |
//!
//! Every file is written to a temporary name and renamed, so a reader sees
//! either the whole file or none. `pushed.log` and `system_identifier` are
//! also synced (file and directory): they are the pusher's record. The
//! requests and results are not: they only carry messages between two live
//! processes, and after a crash PostgreSQL runs `archive_command` again,
//! which asks again and is answered from `pushed.log` (a result left
//! truncated by a crash is taken as stale, as any result whose hash is not
//! the file's).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The default spool directory's name, inside the WAL directory (as WAL-G's
/// `walg_data`): base backups leave `pg_wal`'s contents out.
pub const DEFAULT_SPOOL_NAME: &str = "cairn_spool";

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// The pusher's lock, held while it lives.
pub struct PusherLock {
    _lock: nix::fcntl::Flock<File>,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool at `dir`.
    pub fn open(dir: &Path) -> Result<Spool> {
        let ctx = || format!("cannot create the WAL spool directory {}", dir.display());
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("queue")).map_err(|e| Error::io(ctx(), e))?;
        Ok(Spool { dir: dir.to_owned() })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pusher's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pusher.log")
    }

    fn ok_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ok"))
    }

    fn error_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.error"))
    }

    fn queue_path(&self, name: &str) -> PathBuf {
        self.dir.join("queue").join(name)
    }

    /// Writes `content` to `path` atomically (temporary file, rename) but
    /// not durably: for messages between live processes.
    fn write_atomically(&self, path: &Path, content: &[u8]) -> Result<()> {
        replace_file(path, content, false)
    }

    /// Writes `content` to `path` durably (temporary file, sync, rename, sync the directory).
    fn write_durably(&self, path: &Path, content: &[u8]) -> Result<()> {
        replace_file(path, content, true)?;
        sync_dir(path.parent().unwrap_or(&self.dir))
    }

    fn read(path: &Path) -> Option<String> {
        fs::read_to_string(path).ok()
    }

    /// Records that `name` (hash `blake3`) is in the repository.
    pub fn write_ok(&self, name: &str, blake3: &str) -> Result<()> {
        self.write_atomically(&self.ok_path(name), blake3.as_bytes())
    }

    /// The hash of `name`'s `.ok`, if there is one.
    pub fn read_ok(&self, name: &str) -> Option<String> {
        Spool::read(&self.ok_path(name)).map(|s| s.trim().to_owned())
    }

    /// Records why `name` was refused.
    pub fn write_error(&self, name: &str, reason: &str) -> Result<()> {
        self.write_atomically(&self.error_path(name), reason.as_bytes())
    }

    /// Why `name` was refused, if it was.
    pub fn read_error(&self, name: &str) -> Option<String> {
        Spool::read(&self.error_path(name))
    }

    /// Whether `name` has an `.ok` or `.error` waiting for its foreground.
    pub fn has_result(&self, name: &str) -> bool {
        self.ok_path(name).exists() || self.error_path(name).exists()
    }

    /// Removes `name`'s `.ok` and `.error`.
    pub fn clear(&self, name: &str) {
        let _ = fs::remove_file(self.ok_path(name));
        let _ = fs::remove_file(self.error_path(name));
    }

    /// Asks the pusher to push `path` as `name`.
    pub fn request(&self, name: &str, path: &Path) -> Result<()> {
        self.write_atomically(&self.queue_path(name), path.as_os_str().as_encoded_bytes())
    }

    /// Removes `name`'s request.
    pub fn done(&self, name: &str) {
        let _ = fs::remove_file(self.queue_path(name));
    }

    /// The requests waiting: name and path.
    pub fn requests(&self) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.dir.join("queue");
        let entries = fs::read_dir(&dir).map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp") {
                continue;
            }
            if let Some(path) = Spool::read(&entry.path()) {
                out.push((name, PathBuf::from(path)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Takes the pusher's lock; `None` if a pusher holds it.
    pub fn try_lock(&self) -> Result<Option<PusherLock>> {
        Ok(try_lock_file(&self.dir.join("pusher.lock"))?.map(|lock| PusherLock { _lock: lock }))
    }

    /// Whether a pusher runs (holds the lock).
    pub fn pusher_running(&self) -> Result<bool> {
        Ok(self.try_lock()?.is_none())
    }

    /// What this host has pushed: name → hash (the last line of a name wins).
    pub fn pushed(&self) -> Result<HashMap<String, String>> {
        let path = self.dir.join("pushed.log");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, hash)| (name.to_owned(), hash.trim().to_owned()))
            .collect())
    }

    /// Appends pushed files to `pushed.log`, durably.
    pub fn record_pushed(&self, files: &[(String, String)]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("pushed.log");
        let ctx = || format!("cannot append to {}", path.display());
        let mut f =
            OpenOptions::new().append(true).create(true).mode(0o600).open(&path).map_err(|e| Error::io(ctx(), e))?;
        let text: String = files.iter().map(|(n, h)| format!("{n} {h}\n")).collect();
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| Error::io(ctx(), e))?;
        sync_dir(&self.dir)
    }

    /// The cluster this spool was first used for, recording `sysid` if none
    /// was; an error if it was another.
    pub fn claim_system_identifier(&self, sysid: u64) -> Result<()> {
        let path = self.dir.join("system_identifier");
        match Spool::read(&path).map(|s| s.trim().parse::<u64>()) {
            Some(Ok(recorded)) if recorded == sysid => Ok(()),
            Some(Ok(recorded)) => Err(Error::Invalid(format!(
                "the WAL spool {} belongs to the cluster with system identifier {recorded}, this cluster's is {sysid}: give each cluster its own spool directory",
                self.dir.display()
            ))),
            _ => self.write_durably(&path, sysid.to_string().as_bytes()),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

/// Writes a temporary file beside `path` (this process's own, synced if
/// `sync`) and renames it over `path`: readers see the old content or the
/// new, never a part.
pub(crate) fn replace_file(path: &Path, content: &[u8], sync: bool) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let ctx = |what: &str| format!("cannot {what} {}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(ctx("write"), e))?;
    f.write_all(content)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
        .map_err(|e| Error::io(ctx("write"), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(ctx("rename"), e))
}

/// Takes an exclusive `flock` on `path` (created, mode 0600) without
/// waiting: `None` when another process holds it. Released when the
/// returned lock is dropped, or when its process dies.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<nix::fcntl::Flock<File>>> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::io(format!("cannot lock {}", path.display()), e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_requests_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s")).unwrap();
        assert_eq!(spool.read_ok("a"), None);
        spool.write_ok("a", "h1").unwrap();
        spool.write_error("b", "bad").unwrap();
        assert_eq!(spool.read_ok("a").as_deref(), Some("h1"));
        assert_eq!(spool.read_error("b").as_deref(), Some("bad"));
        assert!(spool.has_result("a") && spool.has_result("b") && !spool.has_result("c"));
        spool.clear("a");
        assert!(!spool.has_result("a"));
        spool.request("c", Path::new("/x/c")).unwrap();
        assert_eq!(spool.requests().unwrap(), vec![("c".to_owned(), PathBuf::from("/x/c"))]);
        spool.done("c");
        assert!(spool.requests().unwrap().is_empty());
        spool.record_pushed(&[("a".into(), "h1".into()), ("b".into(), "h2".into())]).unwrap();
        spool.record_pushed(&[("a".into(), "h3".into())]).unwrap();
        let pushed = spool.pushed().unwrap();
        assert_eq!((pushed["a"].as_str(), pushed["b"].as_str()), ("h3", "h2"));
        spool.claim_system_identifier(7).unwrap();
        spool.claim_system_identifier(7).unwrap();
        assert!(spool.claim_system_identifier(8).is_err());
    }

    #[test]
    fn one_pusher_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(!spool.pusher_running().unwrap());
        let lock = spool.try_lock().unwrap().expect("free");
        assert!(spool.pusher_running().unwrap());
        assert!(spool.try_lock().unwrap().is_none());
        drop(lock);
        assert!(!spool.pusher_running().unwrap());
    }
}
