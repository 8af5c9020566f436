//! The file-system source and target: the archiver (backup of directory
//! trees), the restorer, file metadata, path filters, the directory cache
//! that lets unchanged directories be skipped, and the trees a put-only
//! client keeps locally.

pub(crate) mod archiver;
pub(crate) mod dircache;
pub(crate) mod filter;
pub(crate) mod fsmeta;
pub(crate) mod localtrees;
pub(crate) mod restorer;
