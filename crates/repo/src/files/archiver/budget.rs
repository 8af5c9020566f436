//! Budgets: a limit on something the pipeline's threads hold at once,
//! taken in units and given back when the [`Permit`] is dropped. Two are
//! used:
//!
//! * **Read-ahead** (bytes, [`READ_AHEAD_BYTES`]). A file read whole for its
//!   directory's bundle (see [`super::bundle`]) waits in memory until the
//!   assembler, which takes entries in walk order, reaches it. Nothing else
//!   stops the readers: on a warm page cache they ran ~16,000 small files
//!   ahead, every one held whole (140 MiB on 200,000 files). The walker takes
//!   a permit for a file's size before handing it to a reader, and the
//!   permit travels with the file's result until the assembler has appended
//!   the bytes to the bundle. Permits are taken in walk order by the one
//!   walker thread, so every byte held belongs to a file the assembler
//!   reaches before the file that waits: the wait always ends (the walker
//!   sends its batch of entries first, so the assembler can see them).
//! * **Streams** (readers, one per core). A large file goes through the
//!   stream chunker, whose buffer holds up to two maximal chunks, so only
//!   one reader per core streams at a time.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Bytes of bundled files in flight between the walker and the assembler.
pub(super) const READ_AHEAD_BYTES: u64 = 8 << 20;

/// Units held at once, at most `limit` (see the module documentation).
pub(super) struct Budget {
    limit: u64,
    held: Mutex<u64>,
    released: Condvar,
}

/// Units taken from a [`Budget`], given back when dropped.
pub(super) struct Permit {
    budget: Arc<Budget>,
    units: u64,
}

impl Budget {
    pub(super) fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget { limit, held: Mutex::new(0), released: Condvar::new() })
    }

    /// Takes `units` if they fit now. A request larger than the whole limit
    /// is taken as the limit, so that it fits once nothing else is held.
    pub(super) fn try_take(self: &Arc<Self>, units: u64) -> Option<Permit> {
        let units = units.min(self.limit);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        self.fits(*held, units).then(|| {
            *held += units;
            Permit { budget: Arc::clone(self), units }
        })
    }

    /// Takes `units`, waiting for others to be given back. Gives up (`None`)
    /// once `stop` says the backup is aborting, when nothing may be given
    /// back any more.
    pub(super) fn take(self: &Arc<Self>, units: u64, stop: impl Fn() -> bool) -> Option<Permit> {
        let units = units.min(self.limit);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while !self.fits(*held, units) {
            if stop() {
                return None;
            }
            // The timeout only bounds how late an abort is noticed.
            held =
                self.released.wait_timeout(held, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
        }
        *held += units;
        Some(Permit { budget: Arc::clone(self), units })
    }

    fn fits(&self, held: u64, units: u64) -> bool {
        held + units <= self.limit
    }

    #[cfg(test)]
    fn held(&self) -> u64 {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(PoisonError::into_inner);
        *held -= self.units;
        drop(held);
        self.budget.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_hold_bytes_until_dropped() {
        let budget = Budget::new(100);
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
        let budget = Budget::new(100);
        let small = budget.try_take(1).unwrap();
        assert!(budget.try_take(1_000).is_none());
        drop(small);
        let big = budget.try_take(1_000).unwrap();
        assert_eq!(budget.held(), 100);
        drop(big);
    }

    #[test]
    fn a_waiting_take_ends_when_bytes_are_released_or_the_backup_stops() {
        let budget = Budget::new(10);
        let held = budget.try_take(10).unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || budget.take(5, || false).map(|p| p.units))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(5));

        let _held = budget.try_take(10).unwrap();
        assert!(budget.take(5, || true).is_none(), "an abort ends the wait");
    }
}
