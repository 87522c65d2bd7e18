//! Which stored version of each workspace is current, and which are kept.
//!
//! Hosts sharing this database and one object store never decide that by
//! replacing an object: a new version becomes current with one
//! compare-and-set on `workspaces.version` (from the version its disk was
//! made from), fenced by who may write the workspace: the job holding it,
//! or (the cache janitor, a maintenance save) nobody at all. The loser of
//! a race changes nothing and learns the current version. The kept
//! versions' rows are what garbage collection keeps.

use crate::{get, Store, StoreError};
use sqlx::any::AnyRow;

/// One kept version of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub version: u64,
    /// The manifest's object key in the object store.
    pub manifest: String,
    /// Disk size in bytes.
    pub size: u64,
    /// Unix ms.
    pub created_at: i64,
}

/// A workspace's current version as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Nothing recorded (no record, or one an older release made: its
    /// object store's `latest` ref is to be read and recorded).
    Unrecorded,
    /// Recorded: no stored version yet.
    Empty,
    At(VersionRow),
}

impl Head {
    /// The current version number, 0 for none.
    pub fn version(&self) -> u64 {
        match self {
            Head::At(v) => v.version,
            _ => 0,
        }
    }
}

/// Who may make a new version current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// Only while this job is the workspace's `live_job_id`.
    Job(&'a str),
    /// Only while no live job holds the workspace.
    Idle,
}

/// How a compare-and-set ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// The new version is current; these versions are no longer kept
    /// (their manifests are the caller's to delete).
    Won { pruned: Vec<VersionRow> },
    /// Nothing changed: the current version is not the expected parent,
    /// or the fence did not hold (`holder`: the live job holding it).
    Lost {
        current: u64,
        holder: Option<String>,
    },
}

/// What garbage collection keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveVersions {
    /// Workspaces (`user/name`) whose versions are recorded.
    pub workspaces: Vec<String>,
    /// The manifests of every kept version.
    pub manifests: Vec<String>,
}

fn version_from_row(row: &AnyRow) -> Result<VersionRow, StoreError> {
    Ok(VersionRow {
        version: get::<i64>(row, "version")?.max(0) as u64,
        manifest: get(row, "manifest")?,
        size: get::<i64>(row, "size")?.max(0) as u64,
        created_at: get(row, "created_at")?,
    })
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Live job states, as SQL.
const LIVE: &str = "('accepted', 'queued', 'running', 'sleeping')";

impl Store {
    /// The current version of workspace `name`.
    pub async fn workspace_head(&self, user_id: &str, name: &str) -> Result<Head, StoreError> {
        let row = sqlx::query(
            "SELECT w.version AS current, v.version, v.manifest, v.size, v.created_at \
             FROM workspaces w LEFT JOIN workspace_versions v ON v.user_id = w.user_id \
             AND v.name = w.name AND v.version = w.version \
             WHERE w.user_id = $1 AND w.name = $2",
        )
        .bind(user_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Head::Unrecorded);
        };
        match get::<Option<i64>>(&row, "current")? {
            None => Ok(Head::Unrecorded),
            Some(0) => Ok(Head::Empty),
            Some(_) => Ok(Head::At(version_from_row(&row)?)),
        }
    }

    /// Kept versions of workspace `name`, oldest first.
    pub async fn workspace_versions(
        &self,
        user_id: &str,
        name: &str,
    ) -> Result<Vec<VersionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, manifest, size, created_at FROM workspace_versions \
             WHERE user_id = $1 AND name = $2 ORDER BY version",
        )
        .bind(user_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Records the versions an older release stored (`current`: the one
    /// its `latest` ref named; `None`: none), once: false if they were
    /// already recorded (by another host) or the workspace has no record.
    pub async fn record_workspace_versions(
        &self,
        user_id: &str,
        name: &str,
        kept: &[VersionRow],
        current: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE workspaces SET version = $1 WHERE user_id = $2 AND name = $3 \
             AND version IS NULL",
        )
        .bind(int(current.unwrap_or(0)))
        .bind(user_id)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        for v in kept {
            insert_version(&mut tx, user_id, name, v).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Makes `new` the current version of workspace `name` if `parent`
    /// (0: none) is current and `fence` holds, keeping the newest `keep`
    /// versions.
    pub async fn advance_workspace_version(
        &self,
        user_id: &str,
        name: &str,
        fence: Fence<'_>,
        parent: u64,
        new: &VersionRow,
        keep: usize,
    ) -> Result<Advance, StoreError> {
        let mut tx = self.pool.begin().await?;
        let cas = "UPDATE workspaces SET version = $1 WHERE user_id = $2 AND name = $3 \
                   AND version = $4";
        let (sql, job) = match fence {
            Fence::Job(job) => (format!("{cas} AND live_job_id = $5"), Some(job)),
            Fence::Idle => (
                format!(
                    "{cas} AND (live_job_id IS NULL OR live_job_id NOT IN \
                     (SELECT id FROM jobs WHERE status IN {LIVE}))"
                ),
                None,
            ),
        };
        let mut q = sqlx::query(&sql)
            .bind(int(new.version))
            .bind(user_id)
            .bind(name)
            .bind(int(parent));
        if let Some(job) = job {
            q = q.bind(job);
        }
        let won = q.execute(&mut *tx).await?.rows_affected() == 1;
        if !won {
            tx.rollback().await?;
            let current = self.workspace_head(user_id, name).await?.version();
            let holder = self
                .workspace(user_id, name)
                .await?
                .and_then(|w| w.live_job_id);
            return Ok(Advance::Lost { current, holder });
        }
        insert_version(&mut tx, user_id, name, new).await?;
        let kept = sqlx::query(
            "SELECT version, manifest, size, created_at FROM workspace_versions \
             WHERE user_id = $1 AND name = $2 ORDER BY version DESC",
        )
        .bind(user_id)
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        let mut pruned = Vec::new();
        for row in kept.iter().skip(keep.max(1)) {
            let v = version_from_row(row)?;
            sqlx::query(
                "DELETE FROM workspace_versions WHERE user_id = $1 AND name = $2 AND version = $3",
            )
            .bind(user_id)
            .bind(name)
            .bind(int(v.version))
            .execute(&mut *tx)
            .await?;
            pruned.push(v);
        }
        tx.commit().await?;
        Ok(Advance::Won { pruned })
    }

    /// Every kept version's manifest, and which workspaces have their
    /// versions recorded (read first: a workspace recorded meanwhile is
    /// then not in the list, so GC keeps its older release's manifests).
    pub async fn live_workspace_versions(&self) -> Result<LiveVersions, StoreError> {
        let ws = sqlx::query("SELECT user_id, name FROM workspaces WHERE version IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        let workspaces = ws
            .iter()
            .map(|r| {
                Ok(format!(
                    "{}/{}",
                    get::<String>(r, "user_id")?,
                    get::<String>(r, "name")?
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let manifests = sqlx::query("SELECT manifest FROM workspace_versions")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| get(r, "manifest"))
            .collect::<Result<_, _>>()?;
        Ok(LiveVersions {
            workspaces,
            manifests,
        })
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    name: &str,
    v: &VersionRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workspace_versions (user_id, name, version, manifest, size, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, name, version) DO NOTHING",
    )
    .bind(user_id)
    .bind(name)
    .bind(int(v.version))
    .bind(&v.manifest)
    .bind(int(v.size))
    .bind(v.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
