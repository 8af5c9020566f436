//! `cairn mount MOUNTPOINT`: the snapshots as a read-only file system,
//! served until Ctrl-C, SIGTERM or an unmount from outside.

use std::time::Duration;

use anyhow::Result;
use cairn_repo::{MountOptions, SnapshotFs};

use crate::args::{GlobalArgs, MountArgs};
use crate::context;

pub async fn run(global: &GlobalArgs, args: MountArgs) -> Result<()> {
    let repo = context::open(global).await?;
    let options = MountOptions {
        filter: args.filter.filter(),
        // PostgreSQL snapshots show each table as CSV beside their manifest.
        derived: Some(std::sync::Arc::new(cairn_pgsource::TablesAsCsv)),
        ..Default::default()
    };
    let fs = SnapshotFs::open(&repo, options, tokio::runtime::Handle::current()).await?;
    let mountpoint = args.mountpoint.clone();
    let mount = cairn_repo::mount(fs, &mountpoint, args.allow_other)?;
    if !global.quiet {
        eprintln!(
            "serving the snapshots of {} at {}: snapshots/, hosts/, tags/, ids/\n\
             Ctrl-C (or `umount {}`) ends the mount",
            repo.location(),
            mountpoint.display(),
            mountpoint.display()
        );
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            // Unmounted from outside (`umount`, `fusermount3 -u`).
            _ = tokio::time::sleep(Duration::from_millis(250)) => if !mount.is_mounted() { break },
        }
    }
    tokio::task::spawn_blocking(move || mount.unmount()).await??;
    if !global.quiet {
        eprintln!("unmounted {}", mountpoint.display());
    }
    Ok(())
}
