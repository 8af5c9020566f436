//! The library's examples are its documentation: each runs against a
//! repository, and what it wrote passes `cairn check --read-data` and
//! restores with `cairn restore`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Env, ok, run};

/// An example program of cairn-repo, built by `cargo test --workspace`
/// next to this test's own binary.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir: PathBuf = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples with `cargo test --workspace` (or `cargo build -p cairn-repo --examples`)",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env("CAIRN_PASSWORD", "correct horse").env_remove("CAIRN_REPOSITORY");
    cmd
}

fn run_example(name: &str, env: &Env) -> String {
    let out = example(name).arg(env.repo()).output().expect("cannot run the example");
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn embed_writes_a_snapshot_that_checks_and_restores() {
    let env = Env::new();
    env.init();
    let first = run_example("embed", &env);
    assert!(first.contains("identical to the original"), "{first}");
    // A second run compares with the first: nothing is read again.
    let second = run_example("embed", &env);
    assert!(second.contains(" 0 new, 0 changed"), "{second}");
    let check = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(check.contains("no problems found"), "{check}");
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    let original = std::fs::read(support::root().join("crates/repo/src/lib.rs")).unwrap();
    assert_eq!(std::fs::read(target.join("lib.rs")).unwrap(), original);
    assert!(target.join("writing/session.rs").is_file());
}

#[test]
fn custom_source_writes_a_snapshot_that_checks_and_restores() {
    let env = Env::new();
    env.init();
    let out = run_example("custom_source", &env);
    assert!(out.contains("restored 20 notes, identical"), "{out}");
    let check = ok(run(&mut env.cmd(&["check", "--read-data"])));
    assert!(check.contains("no problems found"), "{check}");
    let target = env.root().join("restored");
    ok(run(&mut env.cmd(&["restore", "latest", "--target", target.to_str().unwrap()])));
    let note = std::fs::read_to_string(target.join("notes/note-03.txt")).unwrap();
    assert_eq!(note, format!("note 3: {}\n", "text ".repeat(3)));
    assert_eq!(std::fs::metadata(target.join("attachments/big.bin")).unwrap().len(), 3 << 20);
    let json = ok(run(&mut env.cmd(&["--json", "snapshots"])));
    assert!(json.contains("\"notes\""), "the source's metadata is in the snapshot: {json}");
}
