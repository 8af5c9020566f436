//! `cairn run`: a nightly job from a config file, end to end, against a
//! real PostgreSQL server (a cluster of its own, so it can go down) and the
//! S3 test server as the offsite.

// This test uses a part of the PostgreSQL support only.
#[allow(dead_code)]
#[path = "support/pg.rs"]
mod pgsupport;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

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

/// Bytes of the files below `dir`.
fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() { du(&e.path()) } else { meta.len() }
        })
        .sum()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} sent no JSON ({e}): {:?}", self.path, self.body))
    }
}

/// A local HTTP server that records every POST and answers 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let record = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let mut headers = BTreeMap::new();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                record.lock().unwrap().push(Received { path, headers, body });
                let _ =
                    reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { url, got }
    }

    /// What arrived since the last call.
    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

fn only<'a>(got: &'a [Received], prefix: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.path.starts_with(prefix)).collect()
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
    // An empty file: nothing to read back, yet the drill must pass with it.
    std::fs::write(data.join("empty"), "").unwrap();
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
    let hooks = Receiver::start();
    let config = home.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
heartbeat = "off"
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
rates = "aws-s3-standard"
budget = "1 USD/month"

[job.nightly]
into = "local"
copy-to = ["offsite"]
retention = {{ keep-last = 2, min-keep = 1 }}
check = {{ every = "7d", read-data-subset = "100%" }}
drill = {{ every = "30d", checks = ["SELECT count(*) = 2 FROM orders"], sample-files = "1MiB" }}
rpo = "1h"
before = ["echo ready > {home}/before.txt"]
after = ["echo $CAIRN_JOB_STATUS >> {home}/after.txt"]

[[job.nightly.source]]
files = ["{data}"]
exclude = ["*.tmp"]

[[job.nightly.source]]
postgres = "{conn}"

[[job.nightly.source]]
command = ["sh", "-c", "echo vault snapshot"]
filename = "vault.snap"

[metrics]
textfile = "{metrics}"

[[notify]]
type = "discord"
url = "{hooks}/discord"
[[notify]]
type = "slack"
url = "{hooks}/slack"
[[notify]]
type = "ntfy"
url = "{hooks}/ntfy/backups"
[[notify]]
type = "healthchecks"
url = "{hooks}/hc/5f2c"
[[notify]]
type = "webhook"
url = "{hooks}/hook"
on = ["failure", "recovered", "success"]
[[notify]]
type = "webhook"
url = "http://127.0.0.1:1/nobody-listens"
"#,
            hooks = hooks.url,
            metrics = home.join("cairn.prom").display(),
            repo = home.join("repo").display(),
            password = home.join("password").display(),
            bucket = s3.var("AWS_BUCKET"),
            endpoint = s3.var("AWS_ENDPOINT_URL"),
            env_file = env_file.display(),
            data = data.display(),
            conn = pg.conn("app"),
            home = home.display(),
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
    // The drill was due (never done): the database restored into a
    // temporary one where the check query holds, and a sample of each
    // other source's files restored and verified.
    assert!(log.contains("ok      drill     repository local"), "{log}");
    assert!(log.contains("app: 1 table(s), 2 row(s)") && log.contains("1 check(s) passed"), "{log}");
    assert_eq!(log.matches("sampled,").count(), 2, "files and command output: {log}");
    assert!(log.contains("ok      before") && log.contains("ok      after"), "{log}");
    assert_eq!(std::fs::read_to_string(home.join("before.txt")).unwrap(), "ready\n");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'").trim(), "0");
    assert_eq!(snapshots(home, "local").len(), 3);
    assert_eq!(snapshots(home, &offsite).len(), 3);
    ok(run(&mut cairn(home, &["config", "check", "--config", config_arg, "--connect"])));
    // A good first night: Healthchecks hears the start and exit 0 of the
    // same run; the webhook asked for successes; the chat targets stay quiet.
    let got = hooks.take();
    let hc = only(&got, "/hc/5f2c/");
    assert_eq!(hc.len(), 2, "{got:?}");
    let rid = hc[0].path.split("rid=").nth(1).unwrap().to_owned();
    assert!(hc[0].path.starts_with("/hc/5f2c/start?rid=") && hc[1].path == format!("/hc/5f2c/0?rid={rid}"), "{hc:?}");
    assert_eq!(only(&got, "/hook")[0].json()["event"], "success");
    assert!(only(&got, "/discord").is_empty() && only(&got, "/slack").is_empty() && only(&got, "/ntfy").is_empty());

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
    assert!(log.contains("skipped drill"), "{log}");
    // `after` ran whatever happened, and was told.
    assert_eq!(std::fs::read_to_string(home.join("after.txt")).unwrap(), "ok\nfailed\n");
    assert!(log.contains("copy      repository offsite: 2 snapshot(s) copied"), "{log}");
    assert_eq!(snapshots(home, &offsite).len(), 5);

    // The failure reaches every target in its own format.
    let got = hooks.take();
    let discord = only(&got, "/discord")[0].json();
    assert!(discord["content"].as_str().unwrap().contains("job nightly failed"), "{discord}");
    assert!(discord["content"].as_str().unwrap().chars().count() <= 2000);
    let embed = &discord["embeds"][0];
    assert!(embed["description"].as_str().unwrap().contains("cannot connect to PostgreSQL"), "{discord}");
    assert_eq!(embed["color"], 0xd93025);
    let slack = only(&got, "/slack")[0].json();
    assert!(slack["text"].as_str().unwrap().contains("failed") && slack["blocks"][0]["type"] == "section", "{slack}");
    assert_eq!(slack["blocks"][0]["text"]["type"], "mrkdwn");
    let ntfy = only(&got, "/ntfy/backups")[0];
    assert_eq!(ntfy.headers.get("priority").map(String::as_str), Some("5"), "{ntfy:?}");
    assert!(ntfy.headers["title"].contains("failed") && String::from_utf8_lossy(&ntfy.body).contains("postgres"));
    let hook = only(&got, "/hook")[0].json();
    assert_eq!((hook["event"].as_str(), hook["exit_code"].as_u64()), (Some("failure"), Some(1)), "{hook}");
    let hc = only(&got, "/hc/5f2c/");
    assert!(hc[1].path.starts_with("/hc/5f2c/1?rid="), "{hc:?}");
    assert!(String::from_utf8_lossy(&hc[1].body).contains("cannot connect to PostgreSQL"), "the log tail");

    // The state file has both runs, with each step's outcome.
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("nightly.json")).unwrap()).unwrap();
    let runs = recorded["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let failed: Vec<&serde_json::Value> =
        runs[1]["steps"].as_array().unwrap().iter().filter(|s| s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{recorded}");
    assert!(recorded["last_success"]["check"].is_string(), "{recorded}");
    // The metrics textfile has the last run: exit code 1, a check time.
    let prom = std::fs::read_to_string(home.join("cairn.prom")).unwrap();
    assert!(prom.contains("cairn_job_last_exit_code{job=\"nightly\"} 1\n"), "{prom}");
    assert!(prom.contains("cairn_check_last_success_timestamp_seconds{job=\"nightly\"}"), "{prom}");
    assert!(prom.contains("cairn_backup_added_bytes{job=\"nightly\",source=\"command output vault.snap\"}"), "{prom}");
    assert!(prom.contains("cairn_repository_size_bytes{repository=\"offsite\"}"), "{prom}");
    assert!(prom.contains("cairn_drill_restore_duration_seconds{job=\"nightly\"}"), "{prom}");

    // The target nobody listens at failed, was recorded, and changed nothing.
    let dead: Vec<&serde_json::Value> =
        runs[1]["notifications"].as_array().unwrap().iter().filter(|d| d["ok"] == false).collect();
    assert_eq!(dead.len(), 1, "{recorded}");
    assert!(dead[0]["target"].as_str().unwrap().contains("127.0.0.1:1"), "{recorded}");

    // Night 3: retention keeps the newest two of each source.
    let third = night(&["--only", "sources"]);
    assert_eq!(third.status.code(), Some(1), "{}", stderr(&third));
    let retention = night(&["--only", "retention"]);
    let log = stderr(&retention);
    assert_eq!(retention.status.code(), Some(0), "{log}");
    assert!(log.contains("kept 5, removed 2 snapshot(s)"), "{log}");
    // The first good run after failures (night 3's sources failed again): "recovered".
    let got = hooks.take();
    let discord = only(&got, "/discord").last().expect("discord messages").json();
    assert!(discord["content"].as_str().unwrap().contains("recovered"), "{discord}");

    // A test notification reaches every target but the dead one.
    let test = run(&mut cairn(home, &["notify", "test", "--config", config_arg]));
    assert_eq!(test.status.code(), Some(1), "the dead target fails the test");
    assert_eq!(only(&hooks.take(), "/").len(), 5);

    // A check on demand runs even though it is not due.
    let check = night(&["--only", "check"]);
    assert!(stderr(&check).contains("no problems"), "{}", stderr(&check));

    hooks.take();

    // A second run while one holds the job's lock: exit 75, nothing run.
    let lock = cairn::job::StateDir::new(&state).lock("nightly").unwrap();
    let locked = night(&[]);
    assert_eq!(locked.status.code(), Some(75), "{}", stderr(&locked));
    assert!(stderr(&locked).contains("already running"), "{}", stderr(&locked));
    // cron's hourly `--if-due` tick meanwhile: nothing is due, exit 0.
    let tick = night(&["--if-due"]);
    assert_eq!(tick.status.code(), Some(0), "{}", stderr(&tick));
    assert!(stderr(&tick).contains("nothing was run"), "{}", stderr(&tick));
    assert!(hooks.take().is_empty(), "no notification for a tick");
    drop(lock);

    // Night 4: PostgreSQL is back, and a heartbeat is due (every second,
    // for the test): it goes to the chat targets with the sizes, cost and
    // the last check and drill; Healthchecks only gets its pings.
    pg.restart();
    let text = std::fs::read_to_string(&config).unwrap().replace("heartbeat = \"off\"", "heartbeat = \"*:*:*\"");
    std::fs::write(&config, text).unwrap();
    hooks.take();
    let fourth = night(&[]);
    assert_eq!(fourth.status.code(), Some(0), "{}", stderr(&fourth));
    let got = hooks.take();
    let heartbeat = only(&got, "/discord").last().expect("a heartbeat").json();
    let text = heartbeat["embeds"][0]["description"].as_str().unwrap();
    assert!(heartbeat["content"].as_str().unwrap().contains("job nightly is alive"), "{heartbeat}");
    assert!(
        text.contains("repository offsite:") && text.contains("/month (aws-s3-standard:us-east-1), budget $1.00"),
        "{text}"
    );
    assert!(text.contains("drill: last good") && text.contains("restore took"), "{text}");
    assert!(text.contains("run(s) in the last") && text.contains("failed"), "{text}");
    assert_eq!(only(&got, "/ntfy/backups").last().unwrap().headers["tags"], "heartbeat");
    assert!(only(&got, "/hook").iter().all(|r| r.json()["event"] != "heartbeat"), "not asked for");
    assert_eq!(only(&got, "/hc/5f2c/").len(), 2, "start and end only");

    // `cairn status --json`: every source's newest snapshot read from the
    // repository within the RPO, the last check and drill, the sizes and
    // the offsite's cost.
    let status_of = |extra: &[&str]| {
        let mut args = vec!["status", "--config", config_arg, "--state-dir", state_arg];
        args.extend_from_slice(extra);
        run(&mut cairn(home, &args))
    };
    let status: serde_json::Value = serde_json::from_str(&ok(status_of(&["--json"][..]))).unwrap();
    let job = &status["jobs"][0];
    assert_eq!(job["sources"].as_array().unwrap().len(), 3, "{status}");
    for source in job["sources"].as_array().unwrap() {
        assert_eq!((source["stale"].as_bool(), source["verified"].as_bool()), (Some(false), Some(true)), "{source}");
        let age = source["age_seconds"].as_i64().unwrap();
        assert!((0..600).contains(&age), "{source}");
    }
    assert_eq!(job["rpo_seconds"], 3600);
    assert!(job["check"]["last_success"].is_string() && job["drill"]["restore_seconds"].as_f64().unwrap() > 0.0);
    assert!(job["problems"].as_array().unwrap().is_empty(), "{status}");
    let repos = status["repositories"].as_array().unwrap();
    let local = repos.iter().find(|r| r["repository"] == "local").unwrap();
    let stored = local["size"]["stored_bytes"].as_u64().unwrap();
    let on_disk = du(&home.join("repo/data"));
    assert!(stored > 0 && stored <= on_disk, "{stored} indexed, {on_disk} on disk");
    assert_eq!(local["size"]["snapshots"].as_u64(), Some(snapshots(home, "local").len() as u64));
    assert!(local["cost"].is_null(), "no rates for the local repository");
    let offsite_status = repos.iter().find(|r| r["repository"] == "offsite").unwrap();
    assert_eq!(offsite_status["size"]["snapshots"].as_u64(), Some(snapshots(home, &offsite).len() as u64));
    let cost = &offsite_status["cost"];
    let offsite_gb = offsite_status["size"]["stored_bytes"].as_f64().unwrap() / 1e9;
    assert_eq!(cost["rates"], "aws-s3-standard:us-east-1");
    assert!((cost["storage"].as_f64().unwrap() - offsite_gb * 0.023).abs() < 1e-9, "{cost}");
    assert!(cost["total"].as_f64().unwrap() >= cost["storage"].as_f64().unwrap(), "{cost}");
    assert_eq!(offsite_status["budget"], 1.0);
    assert_eq!(status_of(&["--check"][..]).status.code(), Some(0));
    let human = ok(status_of(&[][..]));
    assert!(human.contains("job nightly: last run") && human.contains("repository offsite"), "{human}");

    // An RPO the newest snapshots miss: `status --check` fails, naming it.
    let text = std::fs::read_to_string(&config).unwrap().replace("rpo = \"1h\"", "rpo = \"1s\"");
    std::fs::write(&config, text).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let stale = status_of(&["--check"][..]);
    assert_eq!(stale.status.code(), Some(1), "{}", support::stdout(&stale));
    assert!(support::stdout(&stale).contains("older than the RPO of 1s"), "{}", support::stdout(&stale));

    // The HTML report of these nights renders in a real browser, every
    // plot with data (sizes, bytes added, durations, the drill).
    let page = home.join("report.html");
    ok(run(&mut cairn(
        home,
        &["report", "--html", page.to_str().unwrap(), "--config", config_arg, "--state-dir", state_arg],
    )));
    if let Some(chromium) = support::browser::chromium() {
        let verdict = support::browser::render_and_check(&chromium, &page).unwrap_or_else(|e| panic!("{e}"));
        assert!(verdict.starts_with("ok 4 plots") && verdict.contains(" 0 empty"), "{verdict}");
    }

    // A typo in the config is a usage error (exit 2) that names the key.
    let text = std::fs::read_to_string(&config).unwrap().replace("copy-to", "copy_to");
    std::fs::write(&config, text).unwrap();
    fails(night(&[]), 2, &["copy_to"]);
}
