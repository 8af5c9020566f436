//! Files that readers (node_exporter, a web server, the next run) must see
//! whole or not at all.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path` (a dot file with a
/// random suffix, so a collector reading `*.prom` or a server listing
/// `*.html` skips it and two writers never share one), syncs it, and
/// renames it over `path`. A failed write leaves no temporary behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    let temporary = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), hex(&suffix)));
    // `create_new` (not a temp-file crate's 0600 file): the result has the
    // mode `File::create` gives, so node_exporter or a web server running
    // as another user can read it as before.
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.prom");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["cairn.prom"]);
        // As readable as File::create would make it (not a 0600 temp file).
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044 & mode_of_a_created_file(dir.path()), "mode {mode:o}");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename fails after the write.
        let path = dir.path().join("out.html");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(write_atomically(&path, b"page").is_err());
        assert_eq!(names(dir.path()), ["out.html"]);
    }

    fn mode_of_a_created_file(dir: &Path) -> u32 {
        let probe = dir.join("probe");
        std::fs::File::create(&probe).unwrap();
        let mode = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        std::fs::remove_file(probe).unwrap();
        mode
    }
}
