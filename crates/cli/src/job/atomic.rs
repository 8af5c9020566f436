//! Files that readers (node_exporter, a web server, the next run) must see
//! whole or not at all.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path` (a dot file ending in
/// `.tmp`, so a collector reading `*.prom` or a server listing `*.html`
/// skips it), syncs it, and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let temporary = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
