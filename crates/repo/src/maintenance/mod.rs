//! Maintenance: check, prune (with its deletion records), repair, copy and
//! retention.

pub(crate) mod check;
pub(crate) mod copy;
pub(crate) mod forget;
pub(crate) mod prune;
pub(crate) mod repair;
pub(crate) mod retention;
pub(crate) mod snapshots;
pub(crate) mod trash;
pub(crate) mod usage;
