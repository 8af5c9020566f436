//! Embedding cairn: back up a directory into a repository, then read a file
//! back from the snapshot.
//!
//! ```sh
//! cargo run -p cairn-repo --example embed                 # a temporary repository, removed at the end
//! CAIRN_PASSWORD=secret cargo run -p cairn-repo --example embed -- /srv/backup/repo
//! ```
//!
//! The repository is created on first use. `cairn -r LOCATION check
//! --read-data` and `cairn -r LOCATION restore latest --target DIR` work on
//! what this example writes.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_repo::{
    Backend, BackendOptions, Error, FileOptions, InitOptions, OpenOptions, Repository, SnapshotOptions, TreeLoader,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The repository: the first argument, or a temporary directory.
    let temporary = std::env::args().nth(1).is_none();
    let location = match std::env::args().nth(1) {
        Some(location) => location,
        None => std::env::temp_dir().join(format!("cairn-embed-{}", std::process::id())).display().to_string(),
    };
    let password = std::env::var("CAIRN_PASSWORD").unwrap_or_else(|_| "example password".into());
    let backend = Backend::open(&location, &BackendOptions { create: true, ..Default::default() })?;
    let repo =
        Repository::open_or_init(backend, password.as_bytes(), InitOptions::default(), OpenOptions::default()).await?;
    println!("repository {} at {}", repo.id().short(), repo.location());

    // One snapshot of this crate's source directory. The session chooses the
    // parent snapshot (the latest of the same paths), so a second run reads
    // no unchanged file.
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut session =
        repo.begin_snapshot(SnapshotOptions { tags: vec!["example".into()], ..Default::default() }).await?;
    session.add_paths(std::slice::from_ref(&source), &FileOptions::default()).await?;
    let committed = session.commit().await?;
    let id = committed.id.ok_or("a real session returns an id")?;
    let s = &committed.summary;
    println!(
        "snapshot {}: {} new, {} changed, {} unchanged files; {} bytes added",
        id.short(),
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        s.bytes_added
    );

    // Read lib.rs back from the snapshot and compare it with the original.
    let snapshot = repo.read_snapshot(&id).await?;
    let loader = TreeLoader::new(&repo, Arc::new(repo.load_index().await?), tokio::runtime::Handle::current());
    let restored = tokio::task::spawn_blocking(move || -> cairn_repo::Result<Vec<u8>> {
        let node = loader.resolve(&snapshot, "lib.rs")?;
        let mut bytes = Vec::new();
        loader
            .content(&node)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Io { context: "reading lib.rs from the snapshot".into(), source: e })?;
        Ok(bytes)
    })
    .await??;
    let original = std::fs::read(source.join("lib.rs"))?;
    if restored != original {
        return Err("lib.rs read back from the snapshot differs from the original".into());
    }
    println!("lib.rs read back: {} bytes, identical to the original", restored.len());

    if temporary {
        std::fs::remove_dir_all(&location)?;
    }
    Ok(())
}
