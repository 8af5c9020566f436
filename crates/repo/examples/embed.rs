//! Embedding cairn's repository in another program.
//!
//! Creates a repository in a temporary directory, stores a file (this
//! example's own source, chunked with the repository's keyed chunker),
//! publishes a snapshot, then opens the repository again and reads the file
//! back. Run with:
//!
//! ```sh
//! cargo run -p cairn-repo --example embed
//! ```

use std::sync::Arc;

use cairn_repo::{Backend, BackendOptions, BlobType, InitOptions, OpenOptions, Repository, Snapshot, Writer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cairn-embed-example-{}", std::process::id()));
    let location = dir.to_str().ok_or("temporary directory is not UTF-8")?;
    let password = b"example password";

    // 1. Create a repository (a local directory here; "s3:bucket/prefix" works the same).
    let backend = Backend::open(location, &BackendOptions { create: true, ..Default::default() })?;
    let repo = Repository::init(backend.clone(), password, InitOptions::default(), OpenOptions::default()).await?;
    println!("created repository {} at {}", repo.id().short(), repo.location());

    // 2. Chunk a file with the repository's keyed chunker and store its chunks.
    let source = std::fs::File::open(file!()).or_else(|_| std::fs::File::open("crates/repo/examples/embed.rs"))?;
    let writer = Writer::new(&repo, Arc::new(repo.load_index().await?))?;
    let mut chunk_ids = Vec::new();
    for chunk in repo.chunker().stream(source) {
        let chunk = chunk?;
        chunk_ids.push(writer.add_blob(BlobType::Data, &chunk.data).await?);
    }
    // A real archiver stores a tree blob listing files; here the "tree" is the id list.
    let tree = serde_json::to_vec(&chunk_ids)?;
    let tree_id = writer.add_blob(BlobType::Tree, &tree).await?;
    // 3. Publish: packs, then the index, then the snapshot.
    let snapshot_id = writer.commit(&Snapshot::new(tree_id, vec![file!().to_string()])).await?;
    println!("snapshot {} with {} chunk(s), {:?}", snapshot_id.short(), chunk_ids.len(), writer.stats());

    // 4. Open again and read everything back.
    let repo = Repository::open(backend, password, OpenOptions::default()).await?;
    let index = repo.load_index().await?;
    let (id, snapshot) = repo.list_snapshots().await?.pop().ok_or("no snapshot")?;
    let ids: Vec<cairn_repo::Id> = serde_json::from_slice(&repo.read_blob(&index, &snapshot.tree).await?)?;
    let mut restored = Vec::new();
    for chunk in &ids {
        restored.extend(repo.read_blob(&index, chunk).await?);
    }
    let original = std::fs::read(file!()).or_else(|_| std::fs::read("crates/repo/examples/embed.rs"))?;
    assert_eq!(restored, original);
    println!("snapshot {} restored {} bytes, identical to the original", id.short(), restored.len());

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
