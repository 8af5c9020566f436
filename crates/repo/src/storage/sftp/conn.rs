//! SFTP sessions over spawned `ssh` processes, and a small pool of them.
//!
//! Each connection is one child process (by default `ssh … host -s sftp`)
//! whose stdin and stdout carry the SFTP protocol; its stderr is kept (the
//! last few KiB) so that a failure can quote what ssh said. A connection
//! whose transport fails is dropped (which kills its child) and the next
//! request on its slot starts a new one, so the backend's retries of
//! transient errors reconnect.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh_sftp_client::{Sftp, SftpOptions as ClientOptions};
use tokio::io::AsyncReadExt;

use super::SftpFailure;

/// How much of ssh's stderr is kept for error messages.
const STDERR_KEEP: usize = 4096;
/// How long ssh may take to bring up an SFTP session (host lookup, TCP,
/// key exchange, login). Long enough for a slow link or a human typing a
/// passphrase; a host that drops packets is reported after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// One SFTP session over one child process.
pub(super) struct Conn {
    pub sftp: Sftp,
    child: Mutex<tokio::process::Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    dead: AtomicBool,
}

impl Conn {
    async fn connect(argv: &[String]) -> Result<Conn, object_store::Error> {
        let (program, args) = argv.split_first().ok_or_else(|| failure(SftpFailure::EmptyCommand))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|reason| failure(SftpFailure::Spawn { command: argv.join(" "), reason }))?;
        let (Some(stdin), Some(stdout), Some(mut err_pipe)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failure(SftpFailure::EmptyCommand));
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_done = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(STDERR_KEEP);
                kept.drain(..excess);
            }
        });
        let options = ClientOptions::new();
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, Sftp::new(stdin, stdout, options)).await;
        match result {
            Ok(Ok(sftp)) => Ok(Conn { sftp, child: Mutex::new(child), stderr, dead: AtomicBool::new(false) }),
            Ok(Err(_)) | Err(_) => {
                let timed_out = result.is_err();
                // The child has usually exited already (its stdout closed):
                // wait briefly for its status and the rest of its stderr.
                if timed_out {
                    let _ = child.start_kill();
                }
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.ok().and_then(Result::ok);
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
                let said = text(&stderr);
                Err(failure(SftpFailure::Connect {
                    command: argv.join(" "),
                    status: match status {
                        _ if timed_out => format!("no SFTP session within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                        Some(s) => s.to_string(),
                        None => "no SFTP session".into(),
                    },
                    stderr: said,
                }))
            }
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Marks the connection broken and describes how it ended, for the
    /// error that broke it.
    pub fn broken(&self) -> String {
        self.dead.store(true, Ordering::SeqCst);
        let status = match self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait() {
            Ok(Some(status)) => format!("the SFTP command ended ({status})"),
            // Not reaped yet (killed a moment ago), or still running with a
            // session that broke.
            _ => "the SFTP session ended unexpectedly (the SFTP command or the server went away)".to_owned(),
        };
        match text(&self.stderr) {
            s if s.is_empty() => status,
            s => format!("{status}: {s}"),
        }
    }
}

fn failure(f: SftpFailure) -> object_store::Error {
    f.into_store_error()
}

/// ssh's stderr as one line: its last non-empty lines, joined.
fn text(stderr: &Mutex<Vec<u8>>) -> String {
    let bytes = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let s = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// A fixed number of connection slots, used round-robin; each connects on
/// first use and again after its connection broke.
pub(super) struct Pool {
    argv: Vec<String>,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(argv: Vec<String>, connections: usize) -> Pool {
        let slots = (0..connections.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect();
        Pool { argv, slots, next: AtomicUsize::new(0) }
    }

    /// A live connection, starting one if its slot has none.
    pub async fn get(&self) -> Result<Arc<Conn>, object_store::Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_dead()) {
            return Ok(conn.clone());
        }
        // Drop the broken one first (which kills its child).
        *slot = None;
        match Conn::connect(&self.argv).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *slot = Some(conn.clone());
                Ok(conn)
            }
            // sshd drops some of many simultaneous logins (MaxStartups):
            // while another session works, use that one and try again
            // on this slot's next turn.
            Err(e) => {
                drop(slot);
                for (j, other) in self.slots.iter().enumerate() {
                    let Ok(other) = other.try_lock() else { continue };
                    if let Some(conn) = other.as_ref().filter(|c| j != i && !c.is_dead()) {
                        tracing::debug!("an extra SFTP session failed to start ({e}); sharing another");
                        return Ok(conn.clone());
                    }
                }
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("command", &self.argv).field("connections", &self.slots.len()).finish()
    }
}
