//! Include and exclude patterns for paths (backup `--exclude`, restore
//! `--include`/`--exclude`, `find`).
//!
//! A pattern is a glob: `*` and `?` do not cross `/`, `**` does, `[abc]`
//! and `{a,b}` work as in shells. A pattern that starts with `/` is anchored
//! at the root (the filesystem root for backups, the snapshot's root for
//! restores); any other pattern matches at any depth, so `*.tmp` matches
//! every `.tmp` file and `cache/tmp` every `tmp` inside a `cache`. A trailing
//! `/` is ignored. A pattern that matches a directory applies to everything
//! below it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A compiled list of patterns.
#[derive(Debug, Clone)]
pub struct PathFilter {
    set: GlobSet,
    count: usize,
    /// BLAKE3 of the patterns as given, each followed by a NUL byte.
    fingerprint: [u8; 32],
}

impl Default for PathFilter {
    fn default() -> Self {
        PathFilter { set: GlobSet::empty(), count: 0, fingerprint: *blake3::hash(b"").as_bytes() }
    }
}

impl PathFilter {
    /// Compiles `patterns`; an invalid one is an error naming it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PathFilter> {
        let mut builder = GlobSetBuilder::new();
        let mut count = 0;
        let mut fingerprint = blake3::Hasher::new();
        for pattern in patterns {
            let original = pattern.as_ref();
            fingerprint.update(original.as_bytes()).update(b"\0");
            let trimmed = original.trim_end_matches('/');
            if trimmed.is_empty() {
                continue;
            }
            let anchored = if trimmed.starts_with('/') { trimmed.to_owned() } else { format!("**/{trimmed}") };
            let glob = GlobBuilder::new(&anchored)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("invalid pattern {original:?}: {e}")))?;
            builder.add(glob);
            count += 1;
        }
        let set = builder.build().map_err(|e| Error::InvalidArgument(format!("invalid patterns: {e}")))?;
        Ok(PathFilter { set, count, fingerprint: *fingerprint.finalize().as_bytes() })
    }

    /// A hash of the patterns (equal patterns, in the same order, give
    /// equal fingerprints): what a cache of walk results is keyed by.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Reads patterns from a file: one per line; blank lines and lines
    /// starting with `#` are ignored.
    pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io { context: format!("cannot read pattern file {}", path.display()), source: e })?;
        Ok(text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(str::to_owned)
            .collect())
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the absolute path `path` (bytes, starting with `/`) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        self.count > 0 && self.set.is_match_candidate(&Candidate::new(Path::new(OsStr::from_bytes(path))))
    }

    /// Whether `path` or one of its ancestors matches.
    pub fn matches_self_or_ancestor(&self, path: &[u8]) -> bool {
        if self.count == 0 {
            return false;
        }
        let mut end = path.len();
        loop {
            if end > 1 && self.matches(&path[..end]) {
                return true;
            }
            match path[..end].iter().rposition(|&b| b == b'/') {
                Some(0) | None => return false,
                Some(i) => end = i,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_rules() {
        let f = PathFilter::new(&["*.tmp", "/srv/cache/", "logs/old*", "**/node_modules"]).unwrap();
        assert!(f.matches(b"/a/b/x.tmp"));
        assert!(f.matches(b"/x.tmp"));
        assert!(!f.matches(b"/a/x.tmpl"));
        assert!(f.matches(b"/srv/cache"));
        assert!(!f.matches(b"/other/srv/cache"));
        assert!(f.matches(b"/var/logs/old-1"));
        assert!(!f.matches(b"/var/logs/new/old-1"));
        assert!(f.matches(b"/p/node_modules"));
        assert!(f.matches_self_or_ancestor(b"/srv/cache/deep/file"));
        assert!(!f.matches_self_or_ancestor(b"/srv/data/file"));
        assert!(f.matches(b"/odd/\xff.tmp"));
    }

    #[test]
    fn empty_and_invalid() {
        let f = PathFilter::new::<&str>(&[]).unwrap();
        assert!(!f.matches(b"/anything"));
        assert!(PathFilter::new(&["a[b"]).is_err());
    }
}
