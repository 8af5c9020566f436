//! A bound on the bytes that readers hold for bundles ahead of the
//! assembler.
//!
//! A file read whole for its directory's bundle (see [`super::bundle`])
//! waits in memory until the assembler, which takes entries in walk order,
//! reaches it. Nothing else stops the readers: on a warm page cache they
//! run thousands of small files ahead, and every one of those is held
//! whole. The walker therefore takes a [`Permit`] for a file's size before
//! handing it to a reader, and the permit travels with the file's result
//! until the assembler has appended the bytes to the bundle and drops it.
//!
//! Permits are taken in walk order by the one walker thread, so every byte
//! held belongs to a file the assembler reaches before the file that waits:
//! the wait always ends (the walker flushes its batch of entries first, so
//! the assembler can see those files).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Bytes of bundled files in flight between the walker and the assembler.
pub(super) const READ_AHEAD_BYTES: u64 = 8 << 20;

/// The shared count of bytes held (see the module documentation).
pub(super) struct ReadAhead {
    limit: u64,
    held: Mutex<u64>,
    released: Condvar,
}

/// Bytes taken from a [`ReadAhead`], given back when dropped.
pub(super) struct Permit {
    budget: Arc<ReadAhead>,
    bytes: u64,
}

impl ReadAhead {
    pub(super) fn new(limit: u64) -> Arc<ReadAhead> {
        Arc::new(ReadAhead { limit, held: Mutex::new(0), released: Condvar::new() })
    }

    /// Takes `bytes` if they fit now. A request larger than the whole limit
    /// is taken as the limit, so that it fits once nothing else is held.
    pub(super) fn try_take(self: &Arc<Self>, bytes: u64) -> Option<Permit> {
        let bytes = bytes.min(self.limit);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        self.fits(*held, bytes).then(|| {
            *held += bytes;
            Permit { budget: Arc::clone(self), bytes }
        })
    }

    /// Takes `bytes`, waiting for earlier files to be released. Gives up
    /// (`None`) once `stop` says the backup is aborting, when nothing may be
    /// released any more.
    pub(super) fn take(self: &Arc<Self>, bytes: u64, stop: impl Fn() -> bool) -> Option<Permit> {
        let bytes = bytes.min(self.limit);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while !self.fits(*held, bytes) {
            if stop() {
                return None;
            }
            // The timeout only bounds how late an abort is noticed.
            held =
                self.released.wait_timeout(held, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
        }
        *held += bytes;
        Some(Permit { budget: Arc::clone(self), bytes })
    }

    fn fits(&self, held: u64, bytes: u64) -> bool {
        held + bytes <= self.limit
    }

    #[cfg(test)]
    fn held(&self) -> u64 {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(PoisonError::into_inner);
        *held -= self.bytes;
        drop(held);
        self.budget.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_hold_bytes_until_dropped() {
        let budget = ReadAhead::new(100);
        let a = budget.try_take(60).unwrap();
        assert!(budget.try_take(50).is_none(), "60 + 50 is over the limit");
        let b = budget.try_take(40).unwrap();
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_request_over_the_limit_fits_alone() {
        let budget = ReadAhead::new(100);
        let small = budget.try_take(1).unwrap();
        assert!(budget.try_take(1_000).is_none());
        drop(small);
        let big = budget.try_take(1_000).unwrap();
        assert_eq!(budget.held(), 100);
        drop(big);
    }

    #[test]
    fn a_waiting_take_ends_when_bytes_are_released_or_the_backup_stops() {
        let budget = ReadAhead::new(10);
        let held = budget.try_take(10).unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || budget.take(5, || false).map(|p| p.bytes))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(5));

        let _held = budget.try_take(10).unwrap();
        assert!(budget.take(5, || true).is_none(), "an abort ends the wait");
    }
}
