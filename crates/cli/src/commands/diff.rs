//! `cairn diff`

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_repo::TreeLoader;
use cairn_repo::{Node, NodeKind, Tree, TreeId};
use indicatif::HumanBytes;

use crate::args::{DiffArgs, GlobalArgs};
use crate::context;
use crate::escape;

#[derive(Default)]
struct Totals {
    added: u64,
    removed: u64,
    changed: u64,
    metadata: u64,
    bytes_added: u64,
    bytes_removed: u64,
}

struct Differ<'a> {
    loader: &'a TreeLoader,
    out: Box<dyn Write + 'a>,
    json: bool,
    totals: Totals,
}

impl Differ<'_> {
    fn report(&mut self, mark: &str, path: &str, node: &Node, detail: String) -> Result<()> {
        if self.json {
            let line = serde_json::json!({"change": mark, "path": path, "type": node.kind, "size": node.size, "detail": detail});
            writeln!(self.out, "{line}")?;
        } else {
            let detail = if detail.is_empty() { String::new() } else { format!("  ({detail})") };
            writeln!(self.out, "{mark}  {}", escape::human(&format!("{path}{detail}")))?;
        }
        Ok(())
    }

    /// Reports `node` and, for a directory, everything below it.
    fn whole(&mut self, mark: &str, path: &str, node: &Node) -> Result<()> {
        self.count(mark, node);
        self.report(mark, path, node, size_detail(node))?;
        if node.kind == NodeKind::Dir {
            let loader = self.loader;
            let mut below = Vec::new();
            loader.walk(node, |rel, n| -> Result<bool> {
                below.push((format!("{path}{}", String::from_utf8_lossy(rel)), n.clone()));
                Ok(true)
            })?;
            for (p, n) in below {
                self.count(mark, &n);
                self.report(mark, &p, &n, size_detail(&n))?;
            }
        }
        Ok(())
    }

    fn count(&mut self, mark: &str, node: &Node) {
        if mark == "+" {
            self.totals.added += 1;
            self.totals.bytes_added += node.size;
        } else {
            self.totals.removed += 1;
            self.totals.bytes_removed += node.size;
        }
    }

    fn trees(&mut self, a: Option<TreeId>, b: Option<TreeId>, prefix: &str) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let load = |id: Option<TreeId>| -> Result<Tree> {
            Ok(match id {
                Some(id) => self.loader.load(&id)?,
                None => Tree::default(),
            })
        };
        let (ta, tb) = (load(a)?, load(b)?);
        let (na, nb) = (ta.nodes(), tb.nodes());
        let (mut i, mut j) = (0, 0);
        while i < na.len() || j < nb.len() {
            let order = match (na.get(i), nb.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let n = &na[i];
                    self.whole("-", &format!("{prefix}/{}", n.display_name()), n)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let n = &nb[j];
                    self.whole("+", &format!("{prefix}/{}", n.display_name()), n)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (&na[i], &nb[j]);
                    let path = format!("{prefix}/{}", x.display_name());
                    self.entries(x, y, &path)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn entries(&mut self, x: &Node, y: &Node, path: &str) -> Result<()> {
        if x.kind != y.kind {
            self.whole("-", path, x)?;
            return self.whole("+", path, y);
        }
        if x.kind == NodeKind::Dir {
            if metadata_differs(x, y) {
                self.totals.metadata += 1;
                self.report("U", path, y, String::new())?;
            }
            return self.trees(x.subtree, y.subtree, path);
        }
        if x.content != y.content || x.link_target != y.link_target || x.rdev != y.rdev {
            self.totals.changed += 1;
            self.totals.bytes_added += y.size;
            self.totals.bytes_removed += x.size;
            let detail = format!("{} -> {}", HumanBytes(x.size), HumanBytes(y.size));
            self.report("M", path, y, detail)?;
        } else if metadata_differs(x, y) {
            self.totals.metadata += 1;
            self.report("U", path, y, String::new())?;
        }
        Ok(())
    }
}

fn size_detail(node: &Node) -> String {
    if node.kind == NodeKind::File { HumanBytes(node.size).to_string() } else { String::new() }
}

fn metadata_differs(x: &Node, y: &Node) -> bool {
    x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.mtime != y.mtime || x.xattrs != y.xattrs
}

pub async fn run(global: &GlobalArgs, args: DiffArgs) -> Result<()> {
    let repo = context::open(global).await?;
    let none = cairn_repo::SnapshotFilter::default();
    let (index, (id1, s1), (id2, s2)) = tokio::try_join!(
        async { repo.load_index().await.map_err(anyhow::Error::from) },
        async { Ok(repo.find_snapshot(&args.first, &none).await?) },
        async { Ok(repo.find_snapshot(&args.second, &none).await?) }
    )?;
    let loader = TreeLoader::new(&repo, Arc::new(index), tokio::runtime::Handle::current());
    let json = global.json;
    let quiet = global.quiet;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let (r1, r2) = (loader.root(&s1)?, loader.root(&s2)?);
        let mut differ =
            Differ { loader: &loader, out: Box::new(std::io::stdout().lock()), json, totals: Totals::default() };
        if !json && !quiet {
            writeln!(differ.out, "comparing snapshot {} to {}:", id1.short(), id2.short())?;
        }
        differ.trees(r1.subtree, r2.subtree, "")?;
        let t = &differ.totals;
        let summary = if json {
            serde_json::json!({
                "message_type": "summary", "added": t.added, "removed": t.removed, "changed": t.changed,
                "metadata_changed": t.metadata, "bytes_added": t.bytes_added, "bytes_removed": t.bytes_removed,
            })
            .to_string()
        } else {
            format!(
                "\n{} added ({}), {} removed ({}), {} changed, {} with changed metadata",
                t.added,
                HumanBytes(t.bytes_added),
                t.removed,
                HumanBytes(t.bytes_removed),
                t.changed,
                t.metadata
            )
        };
        if !quiet || json {
            writeln!(differ.out, "{summary}")?;
        }
        differ.out.flush()?;
        Ok(())
    })
    .await
    .context("the diff thread panicked")?
}
