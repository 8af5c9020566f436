//! Not an example to copy: the adversarial campaign's tool for crafting
//! hostile snapshots (`scripts/campaign.py`, campaign "crafted").
//!
//! ```sh
//! CAIRN_PASSWORD=secret cargo run -p cairn-repo --example hostile -- REPO KIND
//! ```
//!
//! It commits one snapshot of KIND into the existing repository REPO, written
//! with the real key through the raw writer (the `testing` feature, which
//! only tests enable), so everything is validly encrypted and only the
//! content is hostile: trees that expand or nest without end, names that
//! climb out of the target, extents past their blob, blobs of the wrong
//! type, and so on. `hostile --list` prints each kind with what a reader
//! must do with it: `refuse` (a clear error) or `accept` (restores, with
//! whatever a hostile-but-valid snapshot deserves, such as escaped names).

use std::sync::Arc;

use cairn_repo::testing::Writer;
use cairn_repo::{
    Backend, BackendOptions, BlobType, DataId, Extent, Node, NodeKind, OpenOptions, Repository, Snapshot, Tree, TreeId,
};

type Outcome = Result<(), Box<dyn std::error::Error>>;

/// Each kind: its name, what a reader must do, and what it is.
const KINDS: &[(&str, &str, &str)] = &[
    ("wide", "refuse", "41 trees, each naming the one below twice: 2^40 entries"),
    ("deep", "refuse", "directories nested 2,100 deep"),
    ("dotdot", "refuse", "a directory named `..` with a file in it"),
    ("slash", "refuse", "an entry named `../../escaped`"),
    ("missing-tree", "refuse", "a root tree the repository does not have"),
    ("data-as-tree", "refuse", "a root tree id that names a data blob"),
    ("tree-as-data", "refuse", "a file whose extent names a tree blob"),
    ("garbage-tree", "refuse", "a tree blob of random bytes"),
    ("extent-past-end", "refuse", "an extent that runs past the end of its blob"),
    ("huge-hole", "either", "a file of one 2^62-byte hole"),
    ("escapes", "accept", "names and a symlink target with terminal escape sequences"),
    ("outside-symlink", "accept", "a symlink to a path outside the target, and a hard link to it"),
    ("many-entries", "accept", "one directory of 100,000 entries"),
    ("setuid-device", "accept", "a setuid root file and a 0666 device node"),
];

#[tokio::main]
async fn main() -> Outcome {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--list") {
        for (name, verdict, what) in KINDS {
            println!("{name}\t{verdict}\t{what}");
        }
        return Ok(());
    }
    let (Some(location), Some(kind)) = (args.get(1), args.get(2)) else {
        return Err("usage: hostile REPO KIND  (or: hostile --list)".into());
    };
    let password = std::env::var("CAIRN_PASSWORD").map_err(|_| "set CAIRN_PASSWORD")?;
    let backend = Backend::open(location, &BackendOptions::default())?;
    let repo = Repository::open(backend, password.as_bytes(), OpenOptions::default()).await?;
    let writer = Writer::new(&repo, Arc::new(repo.load_index().await?))?;
    let root = craft(&writer, kind).await?;
    writer.flush().await?;
    let id = writer.commit(&Snapshot::new(root, vec![format!("/{kind}")])).await?;
    println!("{}", id.to_hex());
    Ok(())
}

fn dir(name: &str, subtree: TreeId) -> Node {
    let mut node = Node::new(name, NodeKind::Dir);
    node.mode = 0o755;
    node.subtree = Some(subtree);
    node
}

fn file(name: &str, content: Vec<Extent>) -> Node {
    let mut node = Node::new(name, NodeKind::File);
    node.mode = 0o644;
    node.size = content.iter().map(Extent::len).sum();
    node.content = content;
    node
}

/// A tree whose entry named `placeholder` is renamed to `name` in the
/// encoding, past the checks `Tree::new` makes (same length, so the
/// encoding stays well-formed).
async fn tree_with_raw_name(writer: &Writer, node: Node, name: &[u8]) -> Result<TreeId, Box<dyn std::error::Error>> {
    let placeholder = node.name.clone();
    assert_eq!(placeholder.len(), name.len(), "the placeholder has the length of the name");
    let mut bytes = Tree::new(vec![node])?.encode();
    let at =
        bytes.windows(placeholder.len()).position(|w| w == placeholder).ok_or("placeholder not in the encoding")?;
    bytes[at..at + name.len()].copy_from_slice(name);
    Ok(TreeId(writer.add_blob(BlobType::Tree, &bytes).await?))
}

/// Builds the hostile content of `kind`; returns the root tree.
async fn craft(writer: &Writer, kind: &str) -> Result<TreeId, Box<dyn std::error::Error>> {
    let data = writer.add_data(b"hostile but honest bytes\n").await?;
    let plain = file("plain.txt", vec![Extent::Blob { id: data, offset: 0, length: 25 }]);
    let tree = |nodes: Vec<Node>| async move { writer.add_tree(&Tree::new(nodes)?).await.map_err(Into::into) };
    let contents: Result<TreeId, Box<dyn std::error::Error>> = match kind {
        "wide" => {
            let mut level = tree(vec![plain]).await?;
            for _ in 0..40 {
                level = tree(vec![dir("a", level), dir("b", level)]).await?;
            }
            Ok(level)
        }
        "deep" => {
            let mut level = tree(vec![plain]).await?;
            for _ in 0..2100 {
                level = tree(vec![dir("d", level)]).await?;
            }
            Ok(level)
        }
        "dotdot" => {
            let inside = tree(vec![file("escaped", vec![Extent::Blob { id: data, offset: 0, length: 25 }])]).await?;
            let dotdot = tree_with_raw_name(writer, dir("zz", inside), b"..").await?;
            tree(vec![dir("in", dotdot), plain]).await
        }
        "slash" => {
            let node = file("QQQQQQQQQQQQ", vec![Extent::Blob { id: data, offset: 0, length: 25 }]);
            let slash = tree_with_raw_name(writer, node, b"../../escape").await?;
            tree(vec![dir("in", slash), plain]).await
        }
        "missing-tree" => Ok(TreeId(cairn_repo::Id::of_object(b"no such tree"))),
        "data-as-tree" => Ok(TreeId(*data)),
        "tree-as-data" => {
            let leaf = tree(vec![plain]).await?;
            let confused = DataId(*leaf);
            tree(vec![file("confused", vec![Extent::Blob { id: confused, offset: 0, length: 16 }])]).await
        }
        "garbage-tree" => {
            let mut noise = vec![0u8; 4096];
            getrandom_fill(&mut noise);
            let garbage = TreeId(writer.add_blob(BlobType::Tree, &noise).await?);
            tree(vec![dir("garbage", garbage), plain]).await
        }
        "extent-past-end" => tree(vec![file("long", vec![Extent::Blob { id: data, offset: 10, length: 4000 }])]).await,
        "huge-hole" => tree(vec![file("hole", vec![Extent::Hole { length: 1 << 62 }])]).await,
        "escapes" => {
            let mut link = Node::new("link\x1b[2J", NodeKind::Symlink);
            link.link_target = b"\x1b]0;pwned\x07".to_vec();
            let inner =
                tree(vec![file("\x1b[31mred\x1b[0m", vec![Extent::Blob { id: data, offset: 0, length: 25 }])]).await?;
            tree(vec![dir("dir\r\x1b[1Aup", inner), link, plain]).await
        }
        "outside-symlink" => {
            let mut link = Node::new("etc", NodeKind::Symlink);
            link.link_target = b"/tmp/cairn-campaign-outside".to_vec();
            link.inode = 7;
            link.device = 1;
            link.links = 2;
            let mut twin = link.clone();
            twin.name = b"etc2".to_vec();
            let mut absolute = Node::new("abs", NodeKind::Symlink);
            absolute.link_target = b"../../../../../../../../tmp/cairn-campaign-outside/x".to_vec();
            tree(vec![link, twin, absolute, plain]).await
        }
        "many-entries" => {
            let nodes = (0..100_000).map(|i| file(&format!("f{i:06}"), Vec::new())).collect();
            tree(nodes).await
        }
        "setuid-device" => {
            let mut suid = file("suid", vec![Extent::Blob { id: data, offset: 0, length: 25 }]);
            suid.mode = 0o4755;
            let mut device = Node::new("null", NodeKind::CharDevice);
            device.mode = 0o666;
            device.rdev = libc_makedev(1, 3);
            tree(vec![suid, device, plain]).await
        }
        other => Err(format!("unknown kind {other:?}; `hostile --list` lists them").into()),
    };
    contents
}

fn getrandom_fill(buf: &mut [u8]) {
    // A fixed pattern would do as well; a campaign seed reproduces the rest.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// `makedev(major, minor)` as glibc encodes it.
fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffffff00) << 12) | (minor & 0xff)
}
