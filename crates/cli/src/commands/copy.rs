//! `cairn copy`

use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::HumanBytes;

use crate::args::{CopyArgs, GlobalArgs};
use crate::context;

pub async fn run(global: &GlobalArgs, args: CopyArgs) -> Result<()> {
    // The destination may be write-only (offsite): copy then works from the cache.
    let dst = context::open_writable(global).await?;
    let src = context::open_other(global, &args.from_repo, &args.from).await?;
    if src.id() == dst.id() {
        crate::exit::usage!("--from-repo is this repository itself; nothing to copy");
    }
    let snapshots = src.find_snapshots(&args.snapshots, &args.filter.filter()).await?;
    let handle = tokio::runtime::Handle::current();
    let (src, dst) = (Arc::new(src), Arc::new(dst));
    let outcome = {
        let (src, dst) = (src.clone(), dst.clone());
        tokio::task::spawn_blocking(move || cairn_repo::copy_snapshots(&src, &dst, &snapshots, &handle))
            .await
            .context("the copy thread panicked")??
    };
    if global.json {
        return context::print_json(&outcome);
    }
    if !global.quiet {
        for (from, to) in &outcome.copied {
            println!("copied snapshot {} as {}", from.short(), to.short());
        }
        let how = if outcome.verbatim {
            format!("{} packs copied verbatim", outcome.packs)
        } else {
            format!("{} blobs re-encrypted", outcome.blobs)
        };
        println!(
            "{} snapshots copied, {} already there; {how}, {} written",
            outcome.copied.len(),
            outcome.skipped.len(),
            HumanBytes(outcome.bytes)
        );
    }
    Ok(())
}
