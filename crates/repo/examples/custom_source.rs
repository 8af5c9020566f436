//! A source of your own: an application backs up its records (here, notes
//! kept in memory) as files of a snapshot, then restores them.
//!
//! ```sh
//! cargo run -p cairn-repo --example custom_source                 # a temporary repository
//! CAIRN_PASSWORD=secret cargo run -p cairn-repo --example custom_source -- /srv/backup/repo
//! ```
//!
//! A [`Source`] stores bytes and lays out files through the
//! [`SourceContext`] it is given; the session around it picks the index,
//! deduplicates, seals on every core, and publishes the snapshot. The source
//! never writes trees or snapshots itself, so it cannot produce a snapshot
//! that `cairn check` rejects.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use cairn_repo::{
    Backend, BackendOptions, EntryMeta, Error, InitOptions, NodeKind, OpenOptions, Repository, SnapshotOptions, Source,
    SourceContext, TreeLoader,
};

/// The application's state: notes by title.
type Notes = BTreeMap<String, String>;

/// The notes as a snapshot source: `notes/TITLE.txt` per note, plus an
/// attachment streamed in batches (as a download or a database cursor would
/// arrive).
struct NotesSource<'a> {
    notes: &'a Notes,
    attachment: Vec<u8>,
}

#[async_trait::async_trait]
impl Source for NotesSource<'_> {
    type Error = Error;

    async fn back_up(&mut self, into: &SourceContext) -> Result<(), Error> {
        for (title, text) in self.notes {
            let content = into.store_bytes(text.clone().into_bytes()).await?;
            into.add_file(&format!("notes/{title}.txt"), content, &EntryMeta::file())?;
            into.progress().item_done();
        }
        let mut stream = into.stream()?;
        for batch in self.attachment.chunks(64 * 1024) {
            stream.send(bytes::Bytes::copy_from_slice(batch)).await?;
        }
        into.add_file("attachments/big.bin", stream.finish().await?, &EntryMeta::file())?;
        into.add_snapshot_path("/notes");
        into.set_metadata("notes", serde_json::json!({ "count": self.notes.len() }));
        Ok(())
    }
}

/// Reads the notes back from a snapshot.
fn restore_notes(loader: &TreeLoader, snapshot: &cairn_repo::Snapshot) -> cairn_repo::Result<Notes> {
    let mut notes = Notes::new();
    let dir = loader.resolve(snapshot, "/notes")?;
    loader.walk(&dir, |path, node| -> cairn_repo::Result<bool> {
        if node.kind == NodeKind::File {
            let mut text = String::new();
            loader
                .content(node)
                .read_to_string(&mut text)
                .map_err(|e| Error::Io { context: "reading a note".into(), source: e })?;
            let title = String::from_utf8_lossy(path).trim_start_matches('/').trim_end_matches(".txt").to_owned();
            notes.insert(title, text);
        }
        Ok(true)
    })?;
    Ok(notes)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temporary = std::env::args().nth(1).is_none();
    let location = match std::env::args().nth(1) {
        Some(location) => location,
        None => std::env::temp_dir().join(format!("cairn-notes-{}", std::process::id())).display().to_string(),
    };
    let password = std::env::var("CAIRN_PASSWORD").unwrap_or_else(|_| "example password".into());
    let backend = Backend::open(&location, &BackendOptions { create: true, ..Default::default() })?;
    let repo =
        Repository::open_or_init(backend, password.as_bytes(), InitOptions::default(), OpenOptions::default()).await?;

    let notes: Notes =
        (1..=20).map(|i| (format!("note-{i:02}"), format!("note {i}: {}\n", "text ".repeat(i)))).collect();
    // 3 MiB of noise (xorshift), which does not compress: several chunks.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let attachment: Vec<u8> = (0..3u32 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();

    let mut session = repo.begin_snapshot(SnapshotOptions { tags: vec!["notes".into()], ..Default::default() }).await?;
    session.add_source(&mut NotesSource { notes: &notes, attachment: attachment.clone() }).await?;
    let committed = session.commit().await?;
    let id = committed.id.ok_or("a real session returns an id")?;
    println!(
        "snapshot {} of {} notes: {} files, {} bytes added",
        id.short(),
        notes.len(),
        committed.summary.files_new,
        committed.summary.bytes_added
    );

    let snapshot = repo.read_snapshot(&id).await?;
    let loader = TreeLoader::new(&repo, Arc::new(repo.load_index().await?), tokio::runtime::Handle::current());
    let restored = tokio::task::spawn_blocking(move || restore_notes(&loader, &snapshot)).await??;
    if restored != notes {
        return Err("the restored notes differ from the originals".into());
    }
    println!("restored {} notes, identical to the originals", restored.len());

    if temporary {
        std::fs::remove_dir_all(&location)?;
    }
    Ok(())
}
