//! `cairn dump`: one file's content to stdout, or a directory as a tar
//! archive (paths relative to the directory; owners, modes, times, symlinks
//! and hard links kept; holes written as zeros).

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use cairn_repo::TreeLoader;
use cairn_repo::{Node, NodeKind};

use crate::args::{DumpArgs, GlobalArgs};
use crate::select;

pub async fn run(global: &GlobalArgs, args: DumpArgs) -> Result<()> {
    let (loader, _, snapshot) = select::open_snapshot(global, &args.snapshot, &args.filter.filter()).await?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let node = loader.resolve(&snapshot, &args.path)?;
        let stdout = std::io::stdout().lock();
        match node.kind {
            NodeKind::File => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout);
                let mut content = Blamed::new(loader.content(&node));
                let copied = std::io::copy(&mut content, &mut out);
                content.blame(copied, &args.path)?;
                out.flush().context("writing to stdout")?;
            }
            NodeKind::Dir => write_tar(&loader, &node, stdout)?,
            other => anyhow::bail!("{} is a {other:?}, not a file or directory", args.path),
        }
        Ok(())
    })
    .await
    .context("the dump thread panicked")?
}

/// A file's content from the repository that remembers whether a failure
/// was its own (a damaged blob) or the output's, so the error blames the
/// right one.
struct Blamed<R> {
    inner: R,
    failed: Option<String>,
}

impl<R: std::io::Read> Blamed<R> {
    fn new(inner: R) -> Self {
        Blamed { inner, failed: None }
    }

    /// Turns the result of copying out of `self` into the right error.
    fn blame<T>(&self, result: std::io::Result<T>, path: &str) -> Result<T> {
        match (result, &self.failed) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(why)) => anyhow::bail!("cannot read {path} from the repository: {why}"),
            (Err(e), None) => Err(anyhow::Error::new(e).context("writing to stdout")),
        }
    }
}

impl<R: std::io::Read> std::io::Read for Blamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| self.failed = Some(e.to_string()))
    }
}

fn write_tar(loader: &TreeLoader, dir: &Node, out: impl Write) -> Result<()> {
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    loader.walk(dir, |rel, node| -> Result<bool> {
        let path = std::ffi::OsStr::from_bytes_lossless(&rel[1..]);
        let mut header = tar::Header::new_gnu();
        header.set_mode(node.mode);
        header.set_uid(node.uid as u64);
        header.set_gid(node.gid as u64);
        let _ = header.set_username(&node.user);
        let _ = header.set_groupname(&node.group);
        header.set_mtime(node.mtime.secs.max(0) as u64);
        header.set_size(0);
        match node.kind {
            NodeKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            NodeKind::File => {
                let key = (node.device, node.inode);
                if node.links > 1 {
                    if let Some(target) = first_link.get(&key) {
                        header.set_entry_type(tar::EntryType::Link);
                        let target = std::ffi::OsStr::from_bytes_lossless(target);
                        builder.append_link(&mut header, path, target)?;
                        return Ok(true);
                    }
                    first_link.insert(key, rel[1..].to_vec());
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(node.size);
                let mut content = Blamed::new(loader.content(node));
                let appended = builder.append_data(&mut header, path, &mut content);
                content.blame(appended, &String::from_utf8_lossy(rel))?;
            }
            NodeKind::Symlink => {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = std::ffi::OsStr::from_bytes_lossless(&node.link_target);
                builder.append_link(&mut header, path, target)?;
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                header.set_entry_type(match node.kind {
                    NodeKind::Fifo => tar::EntryType::Fifo,
                    NodeKind::CharDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                let (major, minor) = (nix::sys::stat::major(node.rdev), nix::sys::stat::minor(node.rdev));
                header.set_device_major(major as u32)?;
                header.set_device_minor(minor as u32)?;
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            NodeKind::Socket => {}
        }
        Ok(true)
    })?;
    builder.into_inner()?.flush()?;
    Ok(())
}

trait FromBytes {
    fn from_bytes_lossless(bytes: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytes for std::ffi::OsStr {
    fn from_bytes_lossless(bytes: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}
