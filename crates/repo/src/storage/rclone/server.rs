//! The `rclone serve restic` child: started on the first request, killed
//! when the store is dropped, and never outliving cairn.
//!
//! It listens on a loopback port chosen by the kernel (`--addr
//! 127.0.0.1:0`) and requires a random user and password (given in its
//! environment, never on its command line where `ps` shows them), so other
//! local users cannot talk to it. Unlike `--stdio`, rclone does not notice
//! when cairn goes away, so the child is spawned by a thread of its own
//! with the parent-death signal set to SIGKILL: that thread lives until the
//! store is dropped (it then kills and reaps the child), and if the whole
//! process dies first the kernel kills rclone.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::RcloneFailure;

/// How long rclone may take to say where it listens (restic's
/// `rclone.timeout` default): a cloud remote may first refresh a token.
const STARTUP: Duration = Duration::from_secs(60);
/// Lines of rclone's stderr kept for error messages.
const KEEP_LINES: usize = 20;
/// What rclone prints once it serves.
const READY: &str = "Serving restic REST API on ";

/// A running `rclone serve restic`.
pub(super) struct Server {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    pub user: String,
    pub pass: String,
    pub pid: u32,
    child: Arc<Mutex<Child>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Dropping it tells the keeper thread to kill the child.
    stop: Option<std::sync::mpsc::Sender<()>>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("url", &self.url).field("pid", &self.pid).finish()
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Server {
    /// Starts `command` (program, then arguments) and waits until it serves.
    pub async fn start(command: Vec<String>) -> Result<Server, RcloneFailure> {
        let shown = command.join(" ");
        let program = command.first().cloned().unwrap_or_default();
        let (user, pass) = (random_token(), random_token());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let env = (user.clone(), pass.clone());
        let keeper = std::thread::Builder::new()
            .name("rclone-keeper".into())
            .spawn(move || {
                let child = match spawn(&command, &env.0, &env.1) {
                    Ok(child) => Arc::new(Mutex::new(child)),
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                if started_tx.send(Ok(child.clone())).is_err() {
                    return;
                }
                // Wait for the store to go away (the sender is dropped).
                let _ = stop_rx.recv();
                let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
                let _ = child.kill();
                let _ = child.wait();
            })
            .map_err(|reason| RcloneFailure::Spawn { program: shown.clone(), reason })?;
        let child = match tokio::task::spawn_blocking(move || started_rx.recv()).await {
            Ok(Ok(Ok(child))) => child,
            Ok(Ok(Err(reason))) => return Err(RcloneFailure::Spawn { program, reason }),
            _ => {
                return Err(RcloneFailure::Spawn {
                    program,
                    reason: std::io::Error::other("the thread starting rclone stopped"),
                });
            }
        };
        let pid = child.lock().map(|c| c.id()).unwrap_or_default();
        let stderr_pipe = child.lock().ok().and_then(|mut c| c.stderr.take());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
        if let Some(pipe) = stderr_pipe {
            let lines = stderr.clone();
            // Keeps draining stderr for the child's whole life (a full pipe
            // would block rclone), remembering the last lines for errors.
            std::thread::Builder::new()
                .name("rclone-stderr".into())
                .spawn(move || {
                    let mut url_tx = Some(url_tx);
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        if let Some(at) = line.find(READY) {
                            let url = line[at + READY.len()..].trim().to_owned();
                            if let Some(tx) = url_tx.take() {
                                let _ = tx.send(url);
                            }
                            continue;
                        }
                        tracing::debug!("rclone: {line}");
                        // rclone says this when it runs without a config file:
                        // noise here.
                        // Neither is this: a listing of a directory that no
                        // object has created yet (cairn takes it as empty).
                        if line.contains("not found - using defaults")
                            || line.contains("error listing: directory not found")
                        {
                            continue;
                        }
                        let mut kept = lines.lock().unwrap_or_else(|p| p.into_inner());
                        if kept.len() == KEEP_LINES {
                            kept.remove(0);
                        }
                        kept.push(line);
                    }
                })
                .map_err(|reason| RcloneFailure::Spawn { program: program.clone(), reason })?;
        }
        let mut server =
            Server { url: String::new(), user, pass, pid, child, stderr, stop: Some(stop_tx), keeper: Some(keeper) };
        match tokio::time::timeout(STARTUP, url_rx).await {
            Ok(Ok(url)) if url.starts_with("http://") => {
                server.url = if url.ends_with('/') { url } else { format!("{url}/") };
                Ok(server)
            }
            Ok(Ok(url)) => Err(RcloneFailure::Startup {
                command: shown,
                status: format!("it serves at {url:?}, not a plain http:// address"),
                stderr: server.stderr_text(),
            }),
            // stderr closed without the line: rclone exited.
            Ok(Err(_)) => {
                let status = server.wait_exit(Duration::from_secs(5)).await;
                Err(RcloneFailure::Startup { command: shown, status, stderr: server.stderr_text() })
            }
            Err(_) => Err(RcloneFailure::Startup {
                command: shown,
                status: format!("it did not start serving within {}s", STARTUP.as_secs()),
                stderr: server.stderr_text(),
            }),
        }
    }

    /// rclone's last stderr lines, one line.
    pub fn stderr_text(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().map(|l| strip_log_prefix(l)).collect::<Vec<_>>().join(" | ")
    }

    /// How the child ended, if it did within `wait`.
    pub async fn wait_exit(&self, wait: Duration) -> String {
        match self.exited_within(wait).await {
            Some(status) => status,
            None => "still running".into(),
        }
    }

    /// `Some(status)` once the child has exited (polled for up to `wait`:
    /// a killed rclone breaks the connection a moment before it is reaped).
    pub async fn exited_within(&self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self.child.lock().ok().and_then(|mut c| c.try_wait().ok().flatten());
            if let Some(status) = status {
                return Some(status.to_string());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The keeper kills and reaps the child once the sender is gone.
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// `2026/12/05 22:27:32 ERROR : ...` → `ERROR : ...`.
fn strip_log_prefix(line: &str) -> &str {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(d), Some(t), Some(rest)) if d.len() == 10 && d.as_bytes()[4] == b'/' && t.contains(':') => rest,
        _ => line,
    }
}

fn spawn(command: &[String], user: &str, pass: &str) -> std::io::Result<Child> {
    let (program, args) = command.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("RCLONE_USER", user)
        .env("RCLONE_PASS", pass)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (prctl, getppid, _exit), and nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL))?;
                // The parent may have died before the signal was armed.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_prefix() {
        assert_eq!(super::strip_log_prefix("2026/12/05 22:27:32 ERROR : x: y"), "ERROR : x: y");
        assert_eq!(super::strip_log_prefix("plain words here"), "plain words here");
    }
}
