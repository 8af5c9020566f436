//! A fault-injecting `ObjectStore` wrapper for failure tests.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// What to do to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A transient transport error (connection reset).
    Transient,
    /// HTTP 403.
    Denied,
    /// The write reaches the store, but the reply is lost (a timeout).
    LandedButLost,
}

/// Which requests fail, and how.
#[derive(Clone)]
pub struct Rule {
    /// "put", "get", "list" or "delete".
    pub op: &'static str,
    /// The path must contain this.
    pub path_contains: &'static str,
    pub fault: Fault,
    /// How many matching requests fail before they succeed (usize::MAX: all).
    pub times: usize,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    rules: Mutex<Vec<(RuleDebug, usize)>>,
    pub calls: AtomicUsize,
}

#[derive(Debug, Clone)]
struct RuleDebug {
    op: &'static str,
    path_contains: &'static str,
    fault: Fault,
    times: usize,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore { inner, rules: Mutex::new(Vec::new()), calls: AtomicUsize::new(0) }
    }

    pub fn add(&self, rule: Rule) {
        let r = RuleDebug { op: rule.op, path_contains: rule.path_contains, fault: rule.fault, times: rule.times };
        self.rules.lock().unwrap().push((r, 0));
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    fn check(&self, op: &str, path: &str) -> Result<()> {
        match self.check_fault(op, path) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// `None`: go ahead; `Some((perform, err))`: fail with `err`, after
    /// doing the operation when `perform` is true.
    fn check_fault(&self, op: &str, path: &str) -> Option<(bool, object_store::Error)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut rules = self.rules.lock().unwrap();
        for (rule, used) in rules.iter_mut() {
            if rule.op == op && path.contains(rule.path_contains) && *used < rule.times {
                *used += 1;
                let transient = |kind| object_store::Error::Generic {
                    store: "faulty",
                    source: Box::new(std::io::Error::new(kind, "injected fault")),
                };
                return Some(match rule.fault {
                    Fault::Transient => (false, transient(std::io::ErrorKind::ConnectionReset)),
                    Fault::Denied => (
                        false,
                        object_store::Error::PermissionDenied {
                            path: path.to_string(),
                            source: "injected 403 Forbidden".into(),
                        },
                    ),
                    Fault::LandedButLost => (true, transient(std::io::ErrorKind::TimedOut)),
                });
            }
        }
        None
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        match self.check_fault("put", location.as_ref()) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some((perform, e)) => {
                if perform {
                    self.inner.put_opts(location, payload, opts).await?;
                }
                Err(e)
            }
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.check("put", location.as_ref())?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.check("get", location.as_ref())?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        if let Err(e) = self.check("delete", "") {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Err(e) = self.check("list", prefix.map(|p| p.as_ref()).unwrap_or("")) {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.check("list", prefix.map(|p| p.as_ref()).unwrap_or(""))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
