//! The WAL side: [`push`](self) (`wal-push`: the foreground, the spool and
//! the background pusher), `get` (`wal-get` with prefetch) and the page
//! header checks every pushed segment passes.

pub(crate) mod get;
pub(crate) mod header;
pub(crate) mod push;
pub(crate) mod spool;
