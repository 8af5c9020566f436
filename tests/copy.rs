//! `cairn copy` between repositories: re-encrypted into an unrelated one,
//! verbatim into one made with `init --from-repo`; idempotent and
//! incremental.

mod support;

use support::{Env, FAST_KDF, fails, fstree, ok, run};

fn cmd_on(env: &Env, repo: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = support::cairn(&env.root().join("cache"));
    c.args(["-r", repo.to_str().unwrap(), "--password-file", &env.pw()]).args(args);
    c
}

fn copy_summary(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn copies_re_encrypted_and_verbatim() {
    let env = Env::new();
    env.init();
    let src = env.root().join("src");
    fstree::build(&src);
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    let source = env.repo();

    // An unrelated destination with its own secret: blobs are re-encrypted.
    let other = env.root().join("other");
    let mut init = vec!["init"];
    init.extend(FAST_KDF);
    ok(run(&mut cmd_on(&env, &other, &init)));
    let out = copy_summary(&ok(run(&mut cmd_on(&env, &other, &["--json", "copy", "--from-repo", &source]))));
    assert_eq!(out["verbatim"], false);
    assert_eq!(out["copied"].as_array().unwrap().len(), 1);
    let target = env.root().join("from-other");
    ok(run(&mut cmd_on(&env, &other, &["restore", "latest", "--target", target.to_str().unwrap()])));
    fstree::assert_same_tree(&src, &target);
    let again = copy_summary(&ok(run(&mut cmd_on(&env, &other, &["--json", "copy", "--from-repo", &source]))));
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 1);

    // A destination made from the source: packs are copied verbatim.
    let sibling = env.root().join("sibling");
    let mut init = vec!["init", "--from-repo", source.as_str()];
    init.extend(FAST_KDF);
    ok(run(&mut cmd_on(&env, &sibling, &init)));
    let out = copy_summary(&ok(run(&mut cmd_on(&env, &sibling, &["--json", "copy", "--from-repo", &source]))));
    assert_eq!(out["verbatim"], true, "{out}");
    assert!(out["packs"].as_u64().unwrap() >= 2, "{out}");
    let target = env.root().join("from-sibling");
    ok(run(&mut cmd_on(&env, &sibling, &["restore", "latest", "--target", target.to_str().unwrap()])));
    fstree::assert_same_tree(&src, &target);
    let checked = ok(run(&mut cmd_on(&env, &sibling, &["check", "--read-data"])));
    assert!(checked.contains("no problems found"), "{checked}");

    // Incremental: a new source snapshot copies only what is new.
    std::fs::write(src.join("docs/new-file"), fstree::noise(77, 50_000)).unwrap();
    ok(run(&mut env.cmd(&["backup", "-q", src.to_str().unwrap()])));
    let more = copy_summary(&ok(run(&mut cmd_on(&env, &sibling, &["--json", "copy", "--from-repo", &source]))));
    assert_eq!(more["copied"].as_array().unwrap().len(), 1, "{more}");
    assert_eq!(more["skipped"].as_array().unwrap().len(), 1, "{more}");
    let listing = ok(run(&mut cmd_on(&env, &sibling, &["ls", "latest", "/docs"])));
    assert!(listing.contains("/docs/new-file"), "{listing}");

    // A wrong source password is named as such.
    let wrong = env.root().join("wrong-pw");
    std::fs::write(&wrong, "not it\n").unwrap();
    let failed = run(&mut cmd_on(
        &env,
        &other,
        &["copy", "--from-repo", &source, "--from-password-file", wrong.to_str().unwrap()],
    ));
    fails(failed, 1, &["wrong password"]);
}
