//! `cairn init`

use anyhow::Result;
use cairn_chunker::ChunkerParams;
use cairn_repo::{InitOptions, Repository};

use crate::args::{GlobalArgs, InitArgs};
use crate::context;
use crate::password;

pub async fn run(global: &GlobalArgs, args: InitArgs) -> Result<()> {
    if context::uses_default(global) {
        anyhow::bail!(
            "no repository given: use -r/--repo LOCATION or set CAIRN_REPOSITORY (`cairn backup` creates a default repository by itself)"
        );
    }
    let pw = match &args.generate_password {
        Some(file) => cairn::secret::generate_into(file)?,
        None => password::new_repository_password(global)?,
    };
    let mut options = InitOptions {
        chunker: ChunkerParams { min_size: args.chunk_min, avg_size: args.chunk_avg, max_size: args.chunk_max },
        compression_level: args.compression,
        pack_size: args.pack_size,
        kdf_memory_kib: kdf_kib(args.kdf.kdf_memory)?,
        kdf_iterations: args.kdf.kdf_iterations,
        ..InitOptions::default()
    };
    if let Some(from) = &args.from_repo {
        // Same secret and chunker as the source: copies move packs verbatim.
        let source = context::open_other(global, from, &args.from).await?;
        options = options
            .like(&source)
            .map_err(|e| anyhow::anyhow!("{e}: the key of {from} is put-only; --from-repo needs a full key of it"))?;
    }
    let backend = context::backend(global, true)?;
    let repo = Repository::init(backend, &pw, options, context::open_options(global)).await?;
    if global.json {
        context::print_json(&serde_json::json!({
            "message_type": "initialized",
            "id": repo.id(),
            "location": repo.location(),
            "key": repo.key_id(),
        }))?;
    } else if !global.quiet {
        println!("created cairn repository {} at {}", repo.id().short(), repo.location());
        println!();
        match &args.generate_password {
            Some(file) => println!(
                "The password is in {} (mode 0600): keep a copy somewhere safe, without it the backups cannot be read.",
                file.display()
            ),
            None => println!("The password is needed to read the repository: losing it means losing the backups."),
        }
    }
    Ok(())
}

/// Converts a byte size to KiB for Argon2.
pub fn kdf_kib(bytes: u64) -> Result<u32> {
    u32::try_from(bytes / 1024).map_err(|_| anyhow::anyhow!("--kdf-memory is too large"))
}
