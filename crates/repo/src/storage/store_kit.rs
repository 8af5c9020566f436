//! What the object stores cairn implements itself (SFTP, rclone) share
//! in their `object_store::ObjectStore` impls: the error for what they do
//! not do, and deletes run a few at a time.

use std::future::Future;

use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;

/// `NotImplemented` from `implementer`: Backend turns an unsupported
/// conditional create into its check-then-write path.
pub(crate) fn not_implemented(implementer: &str, operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented { operation: operation.into(), implementer: implementer.into() }
}

/// `ObjectStore::delete_stream` from a single delete, `parallel` at a time,
/// in order.
pub(crate) fn delete_each<F, Fut>(
    locations: BoxStream<'static, object_store::Result<Path>>,
    parallel: usize,
    delete: F,
) -> BoxStream<'static, object_store::Result<Path>>
where
    F: Fn(Path) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = object_store::Result<()>> + Send + 'static,
{
    locations
        .map(move |location| {
            let deleted = location.map(|l| (delete(l.clone()), l));
            async move {
                let (deleting, location) = deleted?;
                deleting.await?;
                Ok(location)
            }
        })
        .buffered(parallel)
        .boxed()
}
