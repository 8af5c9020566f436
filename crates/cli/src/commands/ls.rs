//! `cairn ls`

use std::io::Write;

use anyhow::{Context, Result};
use cairn_repo::{Node, NodeKind};

use crate::args::{GlobalArgs, LsArgs};
use crate::escape;
use crate::select;

pub async fn run(global: &GlobalArgs, args: LsArgs) -> Result<()> {
    let (loader, _, snapshot) = select::open_snapshot(global, &args.snapshot, &args.filter.filter()).await?;
    let json = global.json;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let path = args.path.clone().unwrap_or_default();
        let start = loader.resolve(&snapshot, &path)?;
        // Paths are printed one way whatever was asked: from the snapshot's
        // root, with a leading `/` (`/sub/b.txt`, also for `ls latest sub`).
        let inside = path.trim_matches('/');
        let prefix = if inside.is_empty() { String::new() } else { format!("/{inside}") };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut print = |rel: &[u8], node: &Node| -> Result<()> {
            let full = format!("{prefix}{}", String::from_utf8_lossy(rel));
            if json {
                let mut v = serde_json::to_value(node)?;
                v["path"] = serde_json::json!(full);
                writeln!(out, "{v}")?;
            } else if args.long {
                writeln!(out, "{}", escape::human(&long_line(node, &full)))?;
            } else {
                writeln!(out, "{}", escape::human(&full))?;
            }
            Ok(())
        };
        if start.kind == NodeKind::Dir {
            let recursive = !args.no_recursive;
            if recursive {
                // A snapshot crafted to expand without end is refused before
                // the first line, not after a million of them.
                loader.measure(&start)?;
            }
            loader.walk(&start, |rel, node| -> Result<bool> {
                print(rel, node)?;
                Ok(recursive)
            })?;
        } else if prefix.is_empty() {
            print(format!("/{}", start.display_name()).as_bytes(), &start)?;
        } else {
            // The prefix `print` puts first already names the file.
            print(b"", &start)?;
        }
        out.flush()?;
        Ok(())
    })
    .await
    .context("the listing thread panicked")?
}

/// `drwxr-xr-x alice staff 4096 2024-05-01 12:00:00 /path -> target`
pub fn long_line(node: &Node, path: &str) -> String {
    let owner = if node.user.is_empty() { node.uid.to_string() } else { node.user.clone() };
    let group = if node.group.is_empty() { node.gid.to_string() } else { node.group.clone() };
    let time = jiff::Timestamp::new(node.mtime.secs, node.mtime.nanos as i32)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| "?".into());
    let target = if node.kind == NodeKind::Symlink {
        format!(" -> {}", String::from_utf8_lossy(&node.link_target))
    } else {
        String::new()
    };
    format!(
        "{}{} {:>8} {:>8} {:>12} {time} {path}{target}",
        node.kind.letter(),
        mode_string(node.mode),
        owner,
        group,
        node.size
    )
}

/// `rwsr-xr-t` from permission bits.
pub fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn modes() {
        assert_eq!(super::mode_string(0o755), "rwxr-xr-x");
        assert_eq!(super::mode_string(0o4755), "rwsr-xr-x");
        assert_eq!(super::mode_string(0o1777), "rwxrwxrwt");
        assert_eq!(super::mode_string(0o2644), "rw-r-Sr--");
    }
}
