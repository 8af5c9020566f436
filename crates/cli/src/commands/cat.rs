//! `cairn cat config|key|index|snapshot|pack ID`: decrypted objects as JSON.

use anyhow::{Context, Result};
use cairn_repo::FileKind;
use cairn_repo::KeyFile;

use crate::args::{CatArgs, CatWhat, GlobalArgs};
use crate::context;

pub async fn run(global: &GlobalArgs, args: CatArgs) -> Result<()> {
    let repo = context::open(global).await?;
    match args.what {
        CatWhat::Config => context::print_json(repo.config()),
        CatWhat::Key { id } => {
            let id = repo.find_id(FileKind::Key, &id).await?;
            let bytes = repo.backend().read(FileKind::Key, &id).await?;
            let file = KeyFile::decode(&bytes).with_context(|| format!("keys/{id} is corrupt"))?;
            context::print_json(&file)
        }
        CatWhat::Index { id } => {
            let id = repo.find_id(FileKind::Index, &id).await?;
            context::print_json(&repo.read_index_file(&id).await?)
        }
        CatWhat::Snapshot { id } => {
            // `latest` or an id prefix, as every command takes.
            let (_, snapshot) = repo.find_snapshot(&id, &cairn_repo::SnapshotFilter::default()).await?;
            context::print_json(&snapshot)
        }
        CatWhat::Pack { id } => {
            let id = repo.find_id(FileKind::Pack, &id).await?;
            let header = repo.read_pack_header(&id).await?;
            context::print_json(&serde_json::json!({ "id": id, "header": header }))
        }
    }
}
