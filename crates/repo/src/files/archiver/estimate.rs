//! A quick count of what a backup will visit, for progress totals.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::FileOptions;
use crate::writing::progress::Progress;

/// Counts the files and bytes a backup of `sources` would visit (for a
/// progress estimate); runs alongside the backup and ignores errors.
pub(crate) fn estimate(sources: &[PathBuf], options: &FileOptions, progress: &Progress, stop: &AtomicBool) {
    fn walk(path: &Path, options: &FileOptions, progress: &Progress, stop: &AtomicBool, root_dev: u64) {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return };
        if meta.is_file() {
            progress.total_files.fetch_add(1, Ordering::Relaxed);
            progress.total_bytes.fetch_add(meta.size(), Ordering::Relaxed);
            return;
        }
        if !meta.is_dir() || (options.one_file_system && meta.dev() != root_dev) {
            return;
        }
        if options.exclude_if_present.iter().any(|m| path.join(m).symlink_metadata().is_ok()) {
            return;
        }
        let Ok(dir) = std::fs::read_dir(path) else { return };
        for entry in dir.flatten() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let child = entry.path();
            if !options.excludes.matches(child.as_os_str().as_bytes()) {
                walk(&child, options, progress, stop, root_dev);
            }
        }
    }
    for source in sources {
        let dev = std::fs::symlink_metadata(source).map(|m| m.dev()).unwrap_or(0);
        walk(source, options, progress, stop, dev);
    }
}
