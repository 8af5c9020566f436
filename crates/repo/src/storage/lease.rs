//! The prune lease (`locks/prune`): keeps two prunes from running at once
//! without anything that could ever need an `unlock` (FORMAT.md §12.3).
//!
//! The lease is a small JSON object `{"owner", "nonce", "acquired",
//! "expires"}` (times in seconds since the Unix epoch), created with a
//! conditional create. Its holder renews it every [`RENEW_EVERY`] by
//! deleting and re-creating it, reading back its random nonce each time; a
//! lease past its expiry may be deleted and taken over by anyone, so a
//! crashed prune blocks others for at most [`TTL`]; less when it ran on
//! this machine: a lease records its holder's process (host, boot, pid
//! namespace, pid), and a lease whose process is gone from this very machine
//! is taken over at once. A holder that fails to
//! renew, or finds another nonce, has lost the lease and stops before its
//! next deletion ([`Lease::ensure`]). Backups never look at the lease.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::backend::{Backend, WriteOutcome};

/// The lease object's name.
pub const LEASE_NAME: &str = "locks/prune";
/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(15 * 60);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(3 * 60);

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    owner: String,
    nonce: String,
    acquired: i64,
    expires: i64,
    /// The holder's process, where it could be told (absent in leases of
    /// older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<Process>,
}

/// A process, precisely enough to tell from the same machine whether it
/// still runs: the host name, the kernel's boot id and the pid namespace
/// (so a restarted machine or another container with the same host name
/// is never mistaken for this one), and the pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Process {
    host: String,
    boot: String,
    pid_namespace: String,
    pid: u32,
}

impl Process {
    /// This process, when the system tells its boot and namespace.
    fn current() -> Option<Process> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_owned();
        let pid_namespace = std::fs::read_link("/proc/self/ns/pid").ok()?.to_string_lossy().into_owned();
        Some(Process { host: crate::util::hostname(), boot, pid_namespace, pid: std::process::id() })
    }

    /// Whether `self` is known to have ended: it ran on this machine, in
    /// this boot and pid namespace, and no process has its pid now. (A pid
    /// reused since only delays a takeover until the lease expires.)
    fn is_gone(&self) -> bool {
        let Some(here) = Process::current() else { return false };
        self.host == here.host
            && self.boot == here.boot
            && self.pid_namespace == here.pid_namespace
            && self.pid != here.pid
            && !std::path::Path::new("/proc").join(self.pid.to_string()).exists()
    }
}

/// A held lease, renewed in the background until released or dropped.
pub struct Lease {
    backend: Backend,
    nonce: String,
    /// The owner of a lease taken over because its process had ended.
    took_over_from: Option<String>,
    /// Set when renewal failed or another holder was found; with the time
    /// of the last successful renewal.
    state: Arc<Mutex<LeaseState>>,
    renewer: tokio::task::JoinHandle<()>,
}

struct LeaseState {
    lost: Option<String>,
    renewed: Instant,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map(|t| t.to_string()).unwrap_or_else(|_| unix.to_string())
}

impl Lease {
    /// Takes the lease for `owner`, taking over an expired one. Fails with
    /// [`Error::PruneRunning`] while another holder's lease is valid.
    pub async fn acquire(backend: &Backend, owner: &str) -> Result<Lease> {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut took_over_from = None;
        for _ in 0..3 {
            match write(backend, owner, &nonce).await? {
                WriteOutcome::Created => {
                    // Stores without conditional create check-then-write:
                    // read back to learn who really won.
                    match read(backend).await? {
                        Some(file) if file.nonce == nonce => {
                            let mut lease = Lease::start(backend.clone(), nonce);
                            lease.took_over_from = took_over_from;
                            return Ok(lease);
                        }
                        Some(file) => return Err(held(&file)),
                        None => continue,
                    }
                }
                WriteOutcome::AlreadyExists => match read(backend).await? {
                    Some(file) if file.process.as_ref().is_some_and(Process::is_gone) => {
                        tracing::info!("taking over the prune lease of {}, which is no longer running", file.owner);
                        took_over_from = Some(file.owner);
                        backend.delete_name(LEASE_NAME).await?;
                    }
                    Some(file) if file.expires > now_unix() => return Err(held(&file)),
                    // Expired or unreadable: a crashed prune's lease.
                    _ => {
                        tracing::info!("taking over an expired prune lease");
                        backend.delete_name(LEASE_NAME).await?;
                    }
                },
            }
        }
        Err(Error::LeaseLost("other prunes kept taking the lease at the same time".into()))
    }

    fn start(backend: Backend, nonce: String) -> Lease {
        let state = Arc::new(Mutex::new(LeaseState { lost: None, renewed: Instant::now() }));
        let renewer = {
            let (backend, nonce, state) = (backend.clone(), nonce.clone(), state.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let outcome = renew(&backend, &nonce).await;
                    let mut s = state.lock().expect("lease state poisoned");
                    match outcome {
                        Ok(()) => s.renewed = Instant::now(),
                        Err(e) => {
                            tracing::warn!("cannot renew the prune lease: {e}");
                            if matches!(e, Error::LeaseLost(_)) {
                                s.lost = Some(e.to_string());
                                return;
                            }
                        }
                    }
                }
            })
        };
        Lease { backend, nonce, took_over_from: None, state, renewer }
    }

    /// The owner of the lease this one replaced because its process, on
    /// this machine, had ended (a prune killed mid-way).
    pub fn took_over_from(&self) -> Option<&str> {
        self.took_over_from.as_deref()
    }

    /// Fails when the lease may no longer be ours: lost to another prune,
    /// or not renewed for so long that it may have expired. Called before
    /// every step that deletes or supersedes.
    pub fn ensure(&self) -> Result<()> {
        let s = self.state.lock().expect("lease state poisoned");
        if let Some(why) = &s.lost {
            return Err(Error::LeaseLost(why.clone()));
        }
        // A margin for clock and request delays.
        if s.renewed.elapsed() + Duration::from_secs(60) > TTL {
            return Err(Error::LeaseLost("it could not be renewed in time".into()));
        }
        Ok(())
    }

    /// Gives the lease up (deletes it if it is still ours).
    pub async fn release(self) {
        self.renewer.abort();
        if let Ok(Some(file)) = read(&self.backend).await {
            if file.nonce == self.nonce {
                if let Err(e) = self.backend.delete_name(LEASE_NAME).await {
                    tracing::warn!("cannot remove the prune lease (it expires by itself): {e}");
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn held(file: &LeaseFile) -> Error {
    Error::PruneRunning { owner: file.owner.clone(), until: rfc3339(file.expires) }
}

async fn write(backend: &Backend, owner: &str, nonce: &str) -> Result<WriteOutcome> {
    let now = now_unix();
    let file = LeaseFile {
        owner: owner.to_owned(),
        nonce: nonce.to_owned(),
        acquired: now,
        expires: now + TTL.as_secs() as i64,
        process: Process::current(),
    };
    let json = serde_json::to_vec(&file).expect("lease serializes");
    backend.create(LEASE_NAME, vec![Bytes::from(json)]).await
}

/// The current lease, `None` when there is none or it does not parse.
async fn read(backend: &Backend) -> Result<Option<LeaseFile>> {
    match backend.read_name(LEASE_NAME).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(Error::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renews by delete and re-create, checking the nonce before and after.
async fn renew(backend: &Backend, nonce: &str) -> Result<()> {
    let owner = match read(backend).await? {
        Some(file) if file.nonce == nonce => file.owner,
        Some(file) => return Err(Error::LeaseLost(format!("{} took it over", file.owner))),
        None => return Err(Error::LeaseLost("it was removed".into())),
    };
    backend.delete_name(LEASE_NAME).await?;
    match write(backend, &owner, nonce).await? {
        WriteOutcome::Created => match read(backend).await? {
            Some(file) if file.nonce == nonce => Ok(()),
            _ => Err(Error::LeaseLost("another prune took it over during renewal".into())),
        },
        WriteOutcome::AlreadyExists => Err(Error::LeaseLost("another prune took it over during renewal".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_leases_are_taken_over() {
        let backend = Backend::memory();
        let first = Lease::acquire(&backend, "a").await.unwrap();
        let err = Lease::acquire(&backend, "b").await.err().unwrap();
        assert!(matches!(err, Error::PruneRunning { ref owner, .. } if owner == "a"), "{err}");
        first.ensure().unwrap();
        renew(&backend, &first.nonce).await.unwrap();
        first.release().await;
        let second = Lease::acquire(&backend, "b").await.unwrap();
        // Simulate a crashed holder whose lease expired.
        std::mem::forget(second);
        let stale = LeaseFile { owner: "c".into(), nonce: "x".into(), acquired: 0, expires: 1, process: None };
        backend.delete_name(LEASE_NAME).await.unwrap();
        backend.create(LEASE_NAME, vec![Bytes::from(serde_json::to_vec(&stale).unwrap())]).await.unwrap();
        let third = Lease::acquire(&backend, "d").await.unwrap();
        assert!(matches!(renew(&backend, "x").await, Err(Error::LeaseLost(_))));
        third.release().await;
        assert!(read(&backend).await.unwrap().is_none());
    }

    /// A lease whose process ended on this machine is taken over at once;
    /// one of a live process, or of another machine, namespace or boot,
    /// only once it expires.
    #[tokio::test]
    async fn a_dead_local_holder_is_taken_over_at_once() {
        let here = Process::current().expect("Linux tells boot id and pid namespace");
        // A pid that is not running: past the kernel's largest.
        let dead = Process { pid: 4_194_305, ..here.clone() };
        let cases = [
            ("dead here", Some(dead.clone()), true),
            ("alive here (this process)", Some(Process { pid: std::process::id(), ..here.clone() }), false),
            ("another host", Some(Process { host: "elsewhere".into(), ..dead.clone() }), false),
            ("another boot", Some(Process { boot: "other-boot".into(), ..dead.clone() }), false),
            ("another pid namespace", Some(Process { pid_namespace: "pid:[1]".into(), ..dead.clone() }), false),
            ("an older version's lease", None, false),
        ];
        for (name, process, taken) in cases {
            let backend = Backend::memory();
            let now = now_unix();
            let held =
                LeaseFile { owner: "old prune".into(), nonce: "n".into(), acquired: now, expires: now + 900, process };
            backend.create(LEASE_NAME, vec![Bytes::from(serde_json::to_vec(&held).unwrap())]).await.unwrap();
            match Lease::acquire(&backend, "new prune").await {
                Ok(lease) => {
                    assert!(taken, "{name}: taken over");
                    assert_eq!(lease.took_over_from(), Some("old prune"), "{name}");
                    lease.release().await;
                }
                Err(e) => assert!(!taken && matches!(e, Error::PruneRunning { .. }), "{name}: {e}"),
            }
        }
    }
}
