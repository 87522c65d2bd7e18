//! The object store behind workspaces and uploads: a local directory by
//! default, any S3 endpoint by configuration (`object_store` does the
//! talking). [`Objects::put_durable`] returns only once the object would
//! survive a crash: S3 acknowledges durably by itself; on a local directory
//! the file and its directory are fsynced (the store renames a staged file
//! into place, so a reader never sees half an object).

use crate::{Error, Result};
use bytes::Bytes;
#[cfg(feature = "s3")]
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An S3 endpoint. Credentials not given here come from the usual `AWS_*`
/// environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`; empty for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Where objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectConfig {
    /// A directory on this host (created if missing).
    Local(PathBuf),
    S3(S3Config),
}

/// A connected object store; cheap to clone.
#[derive(Clone)]
pub struct Objects {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// Set for a local directory: the root, for fsync.
    local_root: Option<PathBuf>,
    describe: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Objects {
    /// Opens the store `cfg` names (no network traffic yet).
    pub fn open(cfg: &ObjectConfig) -> Result<Objects> {
        match cfg {
            ObjectConfig::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let root = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
                let store = LocalFileSystem::new_with_prefix(&root)?;
                Ok(Objects {
                    store: Arc::new(store),
                    describe: format!("local directory {}", root.display()),
                    local_root: Some(root),
                })
            }
            #[cfg(not(feature = "s3"))]
            ObjectConfig::S3(_) => Err(Error::Config(
                "this build has no S3 support (mags-workspace's `s3` feature)".into(),
            )),
            #[cfg(feature = "s3")]
            ObjectConfig::S3(s3) => {
                if s3.bucket.is_empty() {
                    return Err(Error::Config("an S3 bucket name is required".into()));
                }
                let mut b = AmazonS3Builder::from_env().with_bucket_name(&s3.bucket);
                if let Some(ep) = &s3.endpoint {
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(ep.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                b = b.with_region(s3.region.as_deref().unwrap_or("us-east-1"));
                // Retried with backoff, but bounded: an unreachable store is
                // reported in well under a minute, while a live sync still
                // holds the guest's disk frozen (it thaws by itself at 120 s).
                b = b.with_retry(object_store::RetryConfig {
                    max_retries: 5,
                    retry_timeout: std::time::Duration::from_secs(30),
                    ..Default::default()
                });
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &s3.secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                let store = b.build()?;
                Ok(Objects {
                    store: Arc::new(store),
                    describe: format!(
                        "S3 bucket {} at {}",
                        s3.bucket,
                        s3.endpoint.as_deref().unwrap_or("AWS")
                    ),
                    local_root: None,
                })
            }
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Writes `data` at `key`, replacing what is there, and returns once it
    /// is durable.
    pub async fn put_durable(&self, key: &str, data: Bytes) -> Result<()> {
        let path = ObjPath::parse(key).map_err(|_| Error::BadKey(key.to_string()))?;
        self.store.put(&path, PutPayload::from(data)).await?;
        self.make_durable(key).await
    }

    /// Writes `data` at `key`, which must not exist yet (a conditional
    /// create where the store has one), and returns once it is durable.
    pub async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        let path = ObjPath::parse(key).map_err(|_| Error::BadKey(key.to_string()))?;
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&path, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(Error::Taken(key.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
        self.make_durable(key).await
    }

    /// fsyncs a local object and its directory (no-op on S3).
    pub(crate) async fn make_durable(&self, key: &str) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(key);
        tokio::task::spawn_blocking(move || fsync_with_dir(&file))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Reads an object whole; `None` if it does not exist.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>> {
        let path = ObjPath::parse(key).map_err(|_| Error::BadKey(key.to_string()))?;
        match self.store.get(&path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; a missing one is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = ObjPath::parse(key).map_err(|_| Error::BadKey(key.to_string()))?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn fsync_with_dir(file: &Path) -> Result<()> {
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(file, e))?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}
