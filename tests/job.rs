//! `cairn run`: a nightly job from a config file, end to end, against a
//! real PostgreSQL server (a cluster of its own, so it can go down) and the
//! S3 test server as the offsite.

// This test uses a part of the PostgreSQL support only.
#[allow(dead_code)]
#[path = "support/pg.rs"]
mod pgsupport;
mod support;

use std::path::Path;
use std::process::Command;

use pgsupport::Pg;
use support::{Kind, Service, fails, ok, run, stderr};

fn cairn(home: &Path, args: &[&str]) -> Command {
    let mut c = support::cairn(&home.join("cache"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") || k == "STATE_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c.env("HOME", home).args(args);
    c
}

/// The snapshots of `repository` (`local`, or the offsite's location).
fn snapshots(home: &Path, repository: &str) -> Vec<serde_json::Value> {
    let mut c = cairn(home, &["--json", "snapshots"]);
    c.env("CAIRN_PASSWORD_FILE", home.join("password"));
    match repository {
        "local" => c.env("CAIRN_REPOSITORY", home.join("repo")),
        offsite => c.env("CAIRN_REPOSITORY", offsite).envs(s3_env()),
    };
    serde_json::from_str(&ok(run(&mut c))).expect("snapshots JSON")
}

fn s3_env() -> Vec<(String, String)> {
    let s3 = Service::shared(Kind::S3).expect("started by the test");
    s3.env.clone()
}

#[test]
fn nightly_job_good_night_database_down_due_check_and_lock() {
    let Some(s3) = Service::shared(Kind::S3) else { return };
    let Some(pg) = Pg::separate("cjob") else { return };
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let data = home.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(data.join("sub/b.txt"), "beta\n").unwrap();
    std::fs::write(home.join("password"), "job password\n").unwrap();
    let env_file = home.join("offsite.env");
    std::fs::write(
        &env_file,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_REGION={}\n",
            s3.var("AWS_ACCESS_KEY_ID"),
            s3.var("AWS_SECRET_ACCESS_KEY"),
            s3.var("AWS_REGION")
        ),
    )
    .unwrap();
    for secret in [home.join("password"), env_file.clone()] {
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'tea'), (2, 'cake')",
    );
    let prefix = format!("job-{}", std::process::id());
    let offsite = format!("s3:{}/{}/{prefix}", s3.var("AWS_ENDPOINT_URL"), s3.var("AWS_BUCKET"));
    let config = home.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[repository.local]
location = "{repo}"
password-file = "{password}"
init = true

[repository.offsite]
location = "s3:{bucket}/{prefix}"
s3-endpoint = "{endpoint}"
s3-path-style = true
env-file = "{env_file}"
password-file = "{password}"
init = true

[job.nightly]
into = "local"
copy-to = ["offsite"]
retention = {{ keep-last = 2, min-keep = 1 }}
check = {{ every = "7d", read-data-subset = "100%" }}

[[job.nightly.source]]
files = ["{data}"]
exclude = ["*.tmp"]

[[job.nightly.source]]
postgres = "{conn}"

[[job.nightly.source]]
command = ["sh", "-c", "echo vault snapshot"]
filename = "vault.snap"
"#,
            repo = home.join("repo").display(),
            password = home.join("password").display(),
            bucket = s3.var("AWS_BUCKET"),
            endpoint = s3.var("AWS_ENDPOINT_URL"),
            env_file = env_file.display(),
            data = data.display(),
            conn = pg.conn("app"),
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let state = home.join("state");
    let state_arg = state.to_str().unwrap();

    // The config checks, and every repository opens once it exists.
    let printed = ok(run(&mut cairn(home, &["config", "check", "--config", config_arg])));
    assert!(printed.contains("[job.nightly]") && printed.contains("keep-last = 2"), "{printed}");

    // Night 1, a good night: three snapshots, copied offsite, checked.
    let night = |extra: &[&str]| {
        let mut args = vec!["run", "nightly", "--config", config_arg, "--state-dir", state_arg];
        args.extend_from_slice(extra);
        run(&mut cairn(home, &args))
    };
    let first = night(&[]);
    let log = stderr(&first);
    assert_eq!(first.status.code(), Some(0), "{log}");
    assert_eq!(log.matches("ok      sources").count(), 3, "{log}");
    assert!(log.contains("copy      repository offsite: 3 snapshot(s) copied"), "{log}");
    assert!(log.contains("check     repository local") && log.contains("no problems"), "{log}");
    assert_eq!(snapshots(home, "local").len(), 3);
    assert_eq!(snapshots(home, &offsite).len(), 3);
    ok(run(&mut cairn(home, &["config", "check", "--config", config_arg, "--connect"])));

    // Night 2: PostgreSQL is down. The files and the command output are
    // still saved and copied; the run fails (exit 1) naming the database;
    // the check is not due again for a week.
    pg.stop();
    std::fs::write(data.join("a.txt"), "alpha, changed\n").unwrap();
    let second = night(&[]);
    let log = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{log}");
    assert_eq!(log.matches("ok      sources").count(), 2, "{log}");
    assert!(log.contains("FAILED  sources   postgres") && log.contains("cannot connect to PostgreSQL"), "{log}");
    assert!(log.contains("skipped check") && log.contains("not due until"), "{log}");
    assert!(log.contains("copy      repository offsite: 2 snapshot(s) copied"), "{log}");
    assert_eq!(snapshots(home, &offsite).len(), 5);

    // The state file has both runs, with each step's outcome.
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("nightly.json")).unwrap()).unwrap();
    let runs = recorded["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let failed: Vec<&serde_json::Value> =
        runs[1]["steps"].as_array().unwrap().iter().filter(|s| s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{recorded}");
    assert!(recorded["last_success"]["check"].is_string(), "{recorded}");

    // Night 3: retention keeps the newest two of each source.
    let third = night(&["--only", "sources"]);
    assert_eq!(third.status.code(), Some(1), "{}", stderr(&third));
    let retention = night(&["--only", "retention"]);
    let log = stderr(&retention);
    assert_eq!(retention.status.code(), Some(0), "{log}");
    assert!(log.contains("kept 5, removed 2 snapshot(s)"), "{log}");

    // A check on demand runs even though it is not due.
    let check = night(&["--only", "check"]);
    assert!(stderr(&check).contains("no problems"), "{}", stderr(&check));

    // A second run while one holds the job's lock: exit 75, nothing run.
    let lock = cairn::job::StateDir::new(&state).lock("nightly").unwrap();
    let locked = night(&[]);
    assert_eq!(locked.status.code(), Some(75), "{}", stderr(&locked));
    assert!(stderr(&locked).contains("already running"), "{}", stderr(&locked));
    drop(lock);

    // A typo in the config is a usage error (exit 2) that names the key.
    let text = std::fs::read_to_string(&config).unwrap().replace("copy-to", "copy_to");
    std::fs::write(&config, text).unwrap();
    fails(night(&[]), 2, &["copy_to"]);
}
