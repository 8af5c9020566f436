//! Prune at the library level: mark then sweep after the grace period,
//! rescue of marked data that a backup started before the mark reuses,
//! repacking, and refusal on a damaged repository.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_repo::testing::Writer;
use cairn_repo::{Backend, FileKind, Index, OpenOptions, Repository, Snapshot, SnapshotId};
use cairn_repo::{Extent, Node, NodeKind, Tree};
use cairn_repo::{PruneOptions, PruneReport, UnusedLimit};
use common::{bytes, fast_init};

/// A repository on which prune accepts a zero grace period, so a test can
/// mark and sweep in consecutive runs.
async fn new_repo() -> Repository {
    let options = fast_init();
    let open = OpenOptions { minimum_grace: Duration::ZERO, ..OpenOptions::default() };
    Repository::init(Backend::memory(), b"pw", options, open).await.unwrap()
}

/// Commits a snapshot of one file made of the blobs with these seeds,
/// deduplicating against `index`.
async fn snapshot(repo: &Repository, index: Arc<Index>, seeds: &[u64]) -> SnapshotId {
    let writer = Writer::new(repo, index).unwrap();
    let mut node = Node::new("f", NodeKind::File);
    for &seed in seeds {
        let data = bytes(seed, 100_000);
        let id = writer.add_data(&data).await.unwrap();
        node.content.push(Extent::Blob { id, offset: 0, length: data.len() as u32 });
        node.size += data.len() as u64;
    }
    let tree = Tree::new(vec![node]).unwrap();
    let tree_id = writer.add_tree(&tree).await.unwrap();
    writer.commit(&Snapshot::new(tree_id, vec!["/f".into()])).await.unwrap()
}

async fn fresh_index(repo: &Repository) -> Arc<Index> {
    Arc::new(repo.load_index().await.unwrap())
}

/// Reads every blob of the file in snapshot `id` and checks its content.
async fn assert_restores(repo: &Repository, id: &SnapshotId, seeds: &[u64]) {
    let index = repo.load_index().await.unwrap();
    let snapshot = repo.read_snapshot(id).await.unwrap();
    let tree = Tree::decode(&repo.read_blob(&index, &snapshot.tree).await.unwrap()).unwrap();
    let node = &tree.nodes()[0];
    assert_eq!(node.content.len(), seeds.len());
    for (extent, seed) in node.content.iter().zip(seeds) {
        let Extent::Blob { id, .. } = extent else { panic!("a hole") };
        assert_eq!(repo.read_blob(&index, id).await.unwrap(), bytes(*seed, 100_000));
    }
}

async fn run(repo: &Repository, options: &PruneOptions) -> PruneReport {
    cairn_repo::prune(repo, options, &|_| {}).await.unwrap()
}

fn zero_grace() -> PruneOptions {
    PruneOptions { grace: Duration::ZERO, ..Default::default() }
}

async fn count(repo: &Repository, kind: FileKind) -> usize {
    repo.backend().list(kind).await.unwrap().len()
}

async fn assert_check_clean(repo: &Repository) {
    let report = cairn_repo::check(repo, Some(cairn_repo::CheckSubset::All)).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.unindexed_packs.is_empty(), "{:?}", report.unindexed_packs);
}

#[tokio::test]
async fn marked_packs_are_deleted_only_by_a_later_prune() {
    let repo = new_repo().await;
    let old = snapshot(&repo, fresh_index(&repo).await, &[1, 2]).await;
    let kept = snapshot(&repo, fresh_index(&repo).await, &[3]).await;
    assert_eq!(count(&repo, FileKind::Pack).await, 4, "a data and a tree pack per session");
    repo.backend().delete(FileKind::Snapshot, &old).await.unwrap();

    let first = run(&repo, &zero_grace()).await;
    assert_eq!((first.packs_marked, first.packs_deleted, first.records_swept), (2, 0, 0), "{first:?}");
    assert_eq!(count(&repo, FileKind::Pack).await, 4, "marking deletes nothing");
    assert_eq!(count(&repo, FileKind::Trash).await, 1);
    assert_restores(&repo, &kept, &[3]).await;

    // Inside the grace period nothing goes.
    let waiting = run(&repo, &PruneOptions { grace: Duration::from_secs(3600), ..Default::default() }).await;
    assert_eq!((waiting.records_pending, waiting.packs_deleted), (1, 0), "{waiting:?}");

    let second = run(&repo, &zero_grace()).await;
    assert_eq!((second.records_swept, second.packs_deleted, second.packs_marked), (1, 2, 0), "{second:?}");
    assert_eq!(count(&repo, FileKind::Pack).await, 2);
    assert_eq!(count(&repo, FileKind::Trash).await, 0);
    assert_restores(&repo, &kept, &[3]).await;
    assert_check_clean(&repo).await;

    // Dry runs change nothing.
    repo.backend().delete(FileKind::Snapshot, &kept).await.unwrap();
    let before = (count(&repo, FileKind::Pack).await, count(&repo, FileKind::Index).await);
    let dry = run(&repo, &PruneOptions { dry_run: true, ..zero_grace() }).await;
    assert_eq!(dry.packs_marked, 2, "{dry:?}");
    assert_eq!((count(&repo, FileKind::Pack).await, count(&repo, FileKind::Index).await), before);
    assert_eq!(count(&repo, FileKind::Trash).await, 0);
}

#[tokio::test]
async fn a_backup_that_reused_marked_data_rescues_it() {
    let repo = new_repo().await;
    let old = snapshot(&repo, fresh_index(&repo).await, &[10, 11]).await;
    // A backup loads the index, then a forget and a prune mark its data.
    let loaded_before_the_mark = fresh_index(&repo).await;
    repo.backend().delete(FileKind::Snapshot, &old).await.unwrap();
    let mark = run(&repo, &zero_grace()).await;
    assert_eq!(mark.packs_marked, 2, "{mark:?}");
    // The backup deduplicates against the marked blob 10 and publishes.
    let late = snapshot(&repo, loaded_before_the_mark, &[10, 12]).await;
    let sweep = run(&repo, &zero_grace()).await;
    assert_eq!(sweep.packs_rescued, 1, "{sweep:?}");
    assert_eq!(sweep.packs_deleted, 1, "only the old tree pack goes: {sweep:?}");
    assert_restores(&repo, &late, &[10, 12]).await;
    assert_check_clean(&repo).await;
    // And later prunes keep it.
    run(&repo, &zero_grace()).await;
    run(&repo, &zero_grace()).await;
    assert_restores(&repo, &late, &[10, 12]).await;
    assert_check_clean(&repo).await;
}

#[tokio::test]
async fn mostly_unused_packs_are_repacked() {
    let repo = new_repo().await;
    let old = snapshot(&repo, fresh_index(&repo).await, &[20, 21, 22, 23]).await;
    let kept = snapshot(&repo, fresh_index(&repo).await, &[20]).await;
    repo.backend().delete(FileKind::Snapshot, &old).await.unwrap();

    let unlimited = PruneOptions { max_unused: UnusedLimit::Unlimited, dry_run: true, ..zero_grace() };
    let report = run(&repo, &unlimited).await;
    assert_eq!((report.packs_repacked, report.packs_marked), (0, 1), "only the old tree pack: {report:?}");

    let capped = PruneOptions { max_repack_bytes: Some(1000), dry_run: true, ..zero_grace() };
    assert_eq!(run(&repo, &capped).await.packs_repacked, 0, "100 kB to copy exceeds the cap");

    let report = run(&repo, &zero_grace()).await;
    assert_eq!(report.packs_repacked, 1, "{report:?}");
    assert!(report.bytes_repacked > 100_000 && report.bytes_repacked < 110_000, "{report:?}");
    assert_restores(&repo, &kept, &[20]).await;
    let report = run(&repo, &zero_grace()).await;
    assert_eq!(report.packs_deleted, 2, "{report:?}");
    assert_restores(&repo, &kept, &[20]).await;
    assert_check_clean(&repo).await;
    let total: u64 = repo.backend().list(FileKind::Pack).await.unwrap().iter().map(|p| p.1).sum();
    assert!(total < 150_000, "one blob's pack and tree packs remain, not 400 kB: {total}");
}

#[tokio::test]
async fn prune_refuses_when_snapshots_need_missing_data_and_when_leased() {
    let repo = new_repo().await;
    let id = snapshot(&repo, fresh_index(&repo).await, &[30]).await;
    let index = repo.load_index().await.unwrap();
    let snapshot = repo.read_snapshot(&id).await.unwrap();
    let tree = Tree::decode(&repo.read_blob(&index, &snapshot.tree).await.unwrap()).unwrap();
    let Extent::Blob { id: blob, .. } = tree.nodes()[0].content[0] else { panic!() };
    let (pack, _) = index.get(&blob).unwrap();
    repo.backend().delete(FileKind::Pack, &pack.id).await.unwrap();
    let packs = count(&repo, FileKind::Pack).await;
    let err = cairn_repo::prune(&repo, &zero_grace(), &|_| {}).await.unwrap_err();
    // The library names the damage; the CLI adds which commands repair it.
    assert!(matches!(err, cairn_repo::Error::DamagedForPrune(_)), "{err}");
    assert!(err.to_string().contains("missing from storage") && err.to_string().contains("changed nothing"), "{err}");
    assert_eq!(count(&repo, FileKind::Pack).await, packs);
    assert_eq!(count(&repo, FileKind::Trash).await, 0);

    let lease = cairn_repo::Lease::acquire(repo.backend(), "someone else").await.unwrap();
    let err = cairn_repo::prune(&repo, &zero_grace(), &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("someone else") && err.to_string().contains("no unlock"), "{err}");
    lease.release().await;
}

/// `repair index` after a prune marked packs leaves them out, as prune
/// did: indexing them again would offer them to backups just before they
/// are deleted.
#[tokio::test]
async fn repair_index_leaves_out_packs_prune_marked() {
    let repo = new_repo().await;
    let old = snapshot(&repo, fresh_index(&repo).await, &[1, 2]).await;
    let kept = snapshot(&repo, fresh_index(&repo).await, &[3]).await;
    repo.forget_snapshot(&old).await.unwrap();
    let marked = run(&repo, &zero_grace()).await;
    assert_eq!(marked.packs_marked, 2, "{marked:?}");

    let rebuilt = cairn_repo::rebuild_index(&repo).await.unwrap();
    assert_eq!((rebuilt.packs_indexed, rebuilt.marked_left_out), (2, 2), "{rebuilt:?}");
    let index = repo.load_index().await.unwrap();
    assert_eq!(index.packs().len(), 2, "only the packs of the kept snapshot");
    assert_restores(&repo, &kept, &[3]).await;
    // The next prune deletes the marked packs, as it would have anyway.
    let swept = run(&repo, &zero_grace()).await;
    assert_eq!((swept.records_swept, swept.packs_deleted), (1, 2), "{swept:?}");
    assert_check_clean(&repo).await;
}
