//! Persistent state of the Mags control plane.
//!
//! One set of queries and one set of migrations serve SQLite (the default:
//! one file, WAL) and Postgres (several hosts), through sqlx's `any` driver.
//! To stay portable the schema uses only TEXT and BIGINT (flags 0/1,
//! timestamps as unix milliseconds), ids are generated in Rust, and every
//! query uses `$N` placeholders (which SQLite understands too).
//!
//! - [`migrate`]: the embedded migrations and their runner.
//! - [`users`], [`tokens`]: accounts and API tokens (stored as SHA-256).
//! - [`audit`]: the audit log of security-relevant events.
//! - [`jobs`]: job records and their state changes.
//! - [`sandboxes`]: the extra states of persistent jobs (sleep, wake,
//!   script exit while live, live settings).
//! - [`output`]: raw output chunks of a job, in order.
//! - [`workspaces`]: workspace records (and their one-live-job claim) and
//!   uploaded files.
//! - [`hosts`]: hosts of a cluster, their leases and epochs, the leader,
//!   job claims, and [`Store::fenced`] handles whose job writes hold only
//!   while the writer still owns the job.
//! - [`cron`], [`cron_runs`]: scheduled jobs, and the one transaction
//!   that starts (or skips) each due run once across hosts.
//! - [`quota`]: what a user holds, for the per-user limits (pending jobs,
//!   disk bytes).
//!
//! Listings read one [`Page`] at a time (with the total count), so no
//! request reads a whole table however large it grows.

pub mod access;
pub mod audit;
pub mod clock;
pub mod cron;
pub mod cron_runs;
pub mod hosts;
pub mod jobs;
pub mod migrate;
pub mod output;
pub mod quota;
pub mod retention;
pub mod sandboxes;
pub mod ssh_keys;
pub mod tokens;
pub mod users;
pub mod workspace_versions;
pub mod workspaces;

pub use access::{Access, Alias, Route};
pub use audit::{AuditEvent, AuditFilter, NewAuditEvent};
pub use cron::{CronRow, CronUpdate, NewCron};
pub use cron_runs::{CronRun, DueRun};
pub use hosts::{Claim, Host, HostInfo, HostState, Lease, LostWork, Owner};
pub use jobs::{Finish, Job, NewJob};
pub use output::{NewChunk, OutputChunk};
pub use quota::DiskUsage;
pub use retention::{JobDeletion, LiveDisks};
pub use sandboxes::JobSettings;
pub use ssh_keys::SshKeyOwner;
pub use tokens::{display_prefix, generate_token, hash_token, Authenticated, TokenInfo, TokenRow};
pub use users::{valid_user_name, User, UserRemoval};
pub use workspace_versions::{Advance, Fence, Head, LiveVersions, VersionRow};
pub use workspaces::{Upload, WorkspaceRow};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor as _};
use std::time::Duration;

/// One page of a listing: at most `limit` rows after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: i64,
    pub limit: i64,
}

impl Page {
    /// The first `limit` rows.
    pub const fn first(limit: i64) -> Page {
        Page { offset: 0, limit }
    }

    /// The page after this one.
    pub const fn next(self) -> Page {
        Page {
            offset: self.offset + self.limit,
            limit: self.limit,
        }
    }

    /// `LIMIT .. OFFSET ..` for this page (values clamped to be >= 0).
    pub(crate) fn sql(self) -> String {
        format!(" LIMIT {} OFFSET {}", self.limit.max(0), self.offset.max(0))
    }
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database has migration {0}, newer than this build knows; upgrade magsd")]
    TooNew(i64),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    /// A fenced write about a job this host no longer owns.
    #[error("{0} belongs to another host now; this host's write was refused")]
    Fenced(String),
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Set on a [`Store::fenced`] handle: whom its job writes are for.
    fence: Option<std::sync::Arc<Owner>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `sqlite::memory:` or
    /// `postgres://...`) and applies pending migrations. A SQLite file is
    /// created if missing and put in WAL mode.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalize_url(url)?;
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        opts = match backend {
            Backend::Sqlite => opts.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => opts.max_connections(10),
        };
        let pool = opts.connect(&url).await?;
        let store = Store {
            pool,
            backend,
            fence: None,
        };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for queries this crate does not offer.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `sql` (a `SELECT COUNT(*) AS n ... $1`) for `key`.
    pub(crate) async fn count(&self, sql: &str, key: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(sql).bind(key).fetch_one(&self.pool).await?;
        get(&row, "n")
    }

    /// Closes every connection (waits for checked-out ones).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Checks the scheme and, for SQLite, asks for the file to be created.
fn normalize_url(url: &str) -> Result<(Backend, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.contains("mode=") || rest.starts_with(":memory:") {
            return Ok((Backend::Sqlite, url.to_string()));
        }
        let sep = if rest.contains('?') { '&' } else { '?' };
        return Ok((Backend::Sqlite, format!("{url}{sep}mode=rwc")));
    }
    Err(StoreError::UnsupportedUrl(url.to_string()))
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_or(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return StoreError::Conflict(what());
        }
    }
    StoreError::Database(err)
}

/// Reads column `col` of `row`.
fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row as _;
    Ok(row.try_get(col)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        let (b, u) = normalize_url("sqlite:///tmp/x/mags.db").expect("sqlite");
        assert_eq!(b, Backend::Sqlite);
        assert_eq!(u, "sqlite:///tmp/x/mags.db?mode=rwc");
        let (_, u) = normalize_url("sqlite:///a.db?cache=shared").expect("sqlite");
        assert_eq!(u, "sqlite:///a.db?cache=shared&mode=rwc");
        let (b, u) = normalize_url("postgres://u:p@localhost/db").expect("pg");
        assert_eq!(b, Backend::Postgres);
        assert_eq!(u, "postgres://u:p@localhost/db");
        assert!(matches!(
            normalize_url("mysql://x"),
            Err(StoreError::UnsupportedUrl(_))
        ));
    }
}
