//! Records the git commit this build comes from, for `cairn --version`.
//!
//! In order: `CAIRN_BUILD_COMMIT` (for packagers building from a tarball
//! who know the commit), cargo's `.cargo_vcs_info.json` (in a crate
//! downloaded from a registry, which has no `.git`), `git rev-parse`
//! (a checkout), else "unknown". None of these failing fails the build: a
//! version line without a commit beats no binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CAIRN_BUILD_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = std::env::var("CAIRN_BUILD_COMMIT")
        .ok()
        .filter(|c| is_commit(c))
        .or_else(|| vcs_info_commit(&manifest_dir))
        .or_else(|| git_commit(&manifest_dir))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CAIRN_GIT_COMMIT={commit}");
}

fn is_commit(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// `cargo package` writes `{"git": {"sha1": "..."}, ...}` into the crate.
fn vcs_info_commit(manifest_dir: &Path) -> Option<String> {
    let path = manifest_dir.join(".cargo_vcs_info.json");
    let text = std::fs::read_to_string(&path).ok()?;
    println!("cargo:rerun-if-changed={}", path.display());
    // No JSON parser for one field in a file cargo itself writes: the value
    // after "sha1".
    let after = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let value = after.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let sha1 = &value[..value.find('"')?];
    is_commit(sha1).then(|| short(sha1))
}

fn git(manifest_dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").arg("-C").arg(manifest_dir).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

fn git_commit(manifest_dir: &Path) -> Option<String> {
    let commit = git(manifest_dir, &["rev-parse", "HEAD"]).filter(|c| is_commit(c))?;
    // Rebuild the version when HEAD moves: HEAD itself (a checkout of
    // another branch), the branch's ref (a commit), and packed-refs (where
    // `git gc` moves refs). `--git-path` finds them in a worktree too.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(manifest_dir, &["rev-parse", "--path-format=absolute", "--git-path", &name]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(short(&commit))
}
