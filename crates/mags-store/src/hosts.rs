//! Hosts of a cluster: registration (a new epoch at every start), leases
//! on the database's clock, the leader, claims of waiting jobs, and what
//! becomes of a lost host's work.
//!
//! A host owns the jobs whose `host` and `host_epoch` name it (an
//! [`Owner`]). A [`Store::fenced`] handle adds that pair to every state
//! change it writes about a job (running, sleeping, final, output), so a
//! host that was declared lost (its jobs handed on) or that was restarted
//! under a new epoch changes nothing with a late write: the write matches
//! no row.
//!
//! Times here are the database's clock ([`crate::clock::db_now_expr`]),
//! never a host's: a host whose clock is off neither expires early nor
//! outlives its lease.

use crate::clock::db_now_expr;
use crate::jobs::{Job, JOB_COLUMNS, NOT_FINAL};
use crate::{get, Backend, Store, StoreError};
use sqlx::any::AnyRow;
use std::collections::BTreeMap;
use std::time::Duration;

/// Who writes: a host under one of its epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub epoch: i64,
}

/// What a host says of itself when it registers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    /// Where other hosts relay requests for its sandboxes.
    pub internal_url: Option<String>,
    /// One-shot jobs it runs at once.
    pub capacity: u32,
    pub labels: BTreeMap<String, String>,
}

/// Whether a host takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Up,
    /// Takes no new work (an operator's `drain`); its sandboxes move on.
    Draining,
    /// Declared dead by the leader; its work was handed on.
    Lost,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Draining => "draining",
            HostState::Lost => "lost",
        }
    }

    fn parse(s: &str) -> Result<HostState, StoreError> {
        match s {
            "up" => Ok(HostState::Up),
            "draining" => Ok(HostState::Draining),
            "lost" => Ok(HostState::Lost),
            other => Err(StoreError::Corrupt(format!("host state {other:?}"))),
        }
    }
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub info: HostInfo,
    pub epoch: i64,
    pub state: HostState,
    /// Database clock, unix ms.
    pub lease_until: i64,
    pub started_at: i64,
    pub renewed_at: i64,
    pub lost_reason: Option<String>,
}

impl Host {
    /// This host under its current epoch.
    pub fn owner(&self) -> Owner {
        Owner {
            host: self.info.name.clone(),
            epoch: self.epoch,
        }
    }

    fn from_row(row: &AnyRow) -> Result<Host, StoreError> {
        let labels: String = get(row, "labels")?;
        let state: String = get(row, "state")?;
        Ok(Host {
            info: HostInfo {
                name: get(row, "name")?,
                internal_url: get(row, "internal_url")?,
                capacity: u32::try_from(get::<i64>(row, "capacity")?).unwrap_or(0),
                labels: serde_json::from_str(&labels)
                    .map_err(|e| StoreError::Corrupt(format!("host labels: {e}")))?,
            },
            epoch: get(row, "epoch")?,
            state: HostState::parse(&state)?,
            lease_until: get(row, "lease_until")?,
            started_at: get(row, "started_at")?,
            renewed_at: get(row, "renewed_at")?,
            lost_reason: get(row, "lost_reason")?,
        })
    }
}

const HOST_COLUMNS: &str = "name, internal_url, capacity, labels, epoch, state, lease_until, \
                            started_at, renewed_at, lost_reason";

/// A renewed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Database clock, unix ms.
    pub until: i64,
    pub state: HostState,
}

/// Which waiting jobs a host claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Up to this many jobs nobody runs yet (`accepted`/`queued`), oldest first.
    Queue(i64),
    /// Up to this many `no_sleep` sandboxes whose host was lost: they come
    /// back by themselves.
    AlwaysOn(i64),
    /// This live job, if nobody owns it (a lost host's sandbox, on demand).
    One(String),
}

/// What was done with a lost host's work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostWork {
    /// One-shot jobs that were running there: ended `error`.
    pub failed: Vec<String>,
    /// Jobs it had claimed but not started: back in the queue.
    pub requeued: Vec<String>,
    /// Its persistent sandboxes: nobody's now, to come back elsewhere.
    pub orphaned: Vec<String>,
}

impl LostWork {
    pub fn is_empty(&self) -> bool {
        self.failed.is_empty() && self.requeued.is_empty() && self.orphaned.is_empty()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn ids(rows: &[AnyRow]) -> Result<Vec<String>, StoreError> {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| get(r, "id"))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

impl Store {
    /// This handle, writing as `owner`: every job state change it makes
    /// holds only while the job is still `owner`'s, and jobs it inserts
    /// are `owner`'s.
    pub fn fenced(&self, owner: Owner) -> Store {
        Store {
            fence: Some(std::sync::Arc::new(owner)),
            ..self.clone()
        }
    }

    /// Whom this handle writes as, if fenced.
    pub fn owner(&self) -> Option<&Owner> {
        self.fence.as_deref()
    }

    /// The fence of a job update whose next placeholder is `$n`: the job
    /// is the owner's, under this epoch, and that epoch is the host's
    /// current one and not lost; bound by [`Store::bind_fence`]. Empty for
    /// an unfenced handle.
    pub(crate) fn fence_sql(&self, n: usize) -> String {
        match &self.fence {
            Some(_) => format!(
                " AND host = ${n} AND host_epoch = ${e} AND EXISTS (SELECT 1 FROM hosts \
                 WHERE hosts.name = ${n} AND hosts.epoch = ${e} AND hosts.state <> 'lost')",
                e = n + 1
            ),
            None => String::new(),
        }
    }

    /// Binds what [`Store::fence_sql`] asked for.
    pub(crate) fn bind_fence<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match &self.fence {
            Some(o) => q.bind(o.host.as_str()).bind(o.epoch),
            None => q,
        }
    }

    /// Registers `info` (or registers it again): a new epoch, state `up`
    /// (a draining host stays draining), a lease of `lease` from now.
    pub async fn register_host(
        &self,
        info: &HostInfo,
        lease: Duration,
    ) -> Result<Host, StoreError> {
        let now = db_now_expr(self.backend);
        let labels = serde_json::to_string(&info.labels)
            .map_err(|e| StoreError::Corrupt(format!("host labels: {e}")))?;
        let sql = format!(
            "INSERT INTO hosts ({HOST_COLUMNS}) \
             VALUES ($1, $2, $3, $4, 1, 'up', {now} + $5, {now}, {now}, NULL) \
             ON CONFLICT (name) DO UPDATE SET internal_url = excluded.internal_url, \
             capacity = excluded.capacity, labels = excluded.labels, epoch = hosts.epoch + 1, \
             state = CASE WHEN hosts.state = 'draining' THEN 'draining' ELSE 'up' END, \
             lease_until = excluded.lease_until, started_at = excluded.started_at, \
             renewed_at = excluded.renewed_at, lost_reason = NULL \
             RETURNING {HOST_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&info.name)
            .bind(&info.internal_url)
            .bind(i64::from(info.capacity))
            .bind(labels)
            .bind(ms(lease))
            .fetch_one(&self.pool)
            .await?;
        Host::from_row(&row)
    }

    /// Extends `owner`'s lease to `lease` from now. `None`: the host is
    /// fenced (declared lost, or registered again under a newer epoch) and
    /// must stop.
    pub async fn renew_lease(
        &self,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let now = db_now_expr(self.backend);
        let sql = format!(
            "UPDATE hosts SET lease_until = {now} + $1, renewed_at = {now} \
             WHERE name = $2 AND epoch = $3 AND state <> 'lost' RETURNING lease_until, state"
        );
        let row = sqlx::query(&sql)
            .bind(ms(lease))
            .bind(&owner.host)
            .bind(owner.epoch)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let state: String = get(&r, "state")?;
            Ok(Lease {
                until: get(&r, "lease_until")?,
                state: HostState::parse(&state)?,
            })
        })
        .transpose()
    }

    /// Every registered host, by name.
    pub async fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(Host::from_row).collect()
    }

    /// The host `name`, if registered.
    pub async fn host(&self, name: &str) -> Result<Option<Host>, StoreError> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Host::from_row).transpose()
    }

    /// Stops (`true`) or resumes (`false`) new work on host `name`; false
    /// if there is no such host, or it was lost.
    pub async fn set_draining(&self, name: &str, draining: bool) -> Result<bool, StoreError> {
        let (to, from) = if draining {
            ("draining", "up")
        } else {
            ("up", "draining")
        };
        let r = sqlx::query("UPDATE hosts SET state = $1 WHERE name = $2 AND state IN ($1, $3)")
            .bind(to)
            .bind(name)
            .bind(from)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes host `name` from the list; only once it is lost or its
    /// lease has run out, and it owns no live job (else a conflict).
    /// False if there is no such host.
    pub async fn forget_host(&self, name: &str) -> Result<bool, StoreError> {
        let now = db_now_expr(self.backend);
        let owned = self
            .count(
                &format!("SELECT COUNT(*) AS n FROM jobs WHERE host = $1 AND {NOT_FINAL}"),
                name,
            )
            .await?;
        if owned > 0 {
            return Err(StoreError::Conflict(format!(
                "host {name} still owns {owned} live job(s); wait until it is declared lost"
            )));
        }
        let sql = format!(
            "DELETE FROM hosts WHERE name = $1 AND (state = 'lost' OR lease_until < {now})"
        );
        let r = sqlx::query(&sql).bind(name).execute(&self.pool).await?;
        if r.rows_affected() > 0 {
            return Ok(true);
        }
        match self.host(name).await? {
            Some(_) => Err(StoreError::Conflict(format!(
                "host {name} holds a lease; stop it first (or drain it)"
            ))),
            None => Ok(false),
        }
    }

    /// Takes waiting jobs for `owner` (while its lease holds and it is
    /// `up`), oldest first. On Postgres, rows another host is claiming
    /// at the same moment are skipped (`FOR UPDATE SKIP LOCKED`), so no
    /// job gets two owners and no claimer waits for another.
    pub async fn claim_jobs(&self, owner: &Owner, claim: &Claim) -> Result<Vec<Job>, StoreError> {
        let now = db_now_expr(self.backend);
        let skip = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let (which, limit, one) = match claim {
            Claim::Queue(n) => ("status IN ('accepted', 'queued')", *n, None),
            Claim::AlwaysOn(n) => (
                "status IN ('running', 'sleeping') AND persistent = 1 AND no_sleep = 1",
                *n,
                None,
            ),
            Claim::One(id) => (NOT_FINAL, 1, Some(id.as_str())),
        };
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let id_match = if one.is_some() { " AND id = $4" } else { "" };
        let sql = format!(
            "UPDATE jobs SET host = $1, host_epoch = $2 WHERE host IS NULL AND id IN (\
             SELECT id FROM jobs WHERE host IS NULL AND {which}{id_match} \
             ORDER BY created_at, id LIMIT $3{skip}) \
             AND EXISTS (SELECT 1 FROM hosts h WHERE h.name = $1 AND h.epoch = $2 \
             AND h.state = 'up' AND h.lease_until > {now}) \
             RETURNING {JOB_COLUMNS}"
        );
        let mut q = sqlx::query(&sql)
            .bind(&owner.host)
            .bind(owner.epoch)
            .bind(limit);
        if let Some(id) = one {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut jobs = rows
            .iter()
            .map(Job::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(jobs)
    }

    /// At `owner`'s start: the live jobs it owned under earlier epochs,
    /// and those from before hosts were recorded (no owner ever) that had
    /// started, now `owner`'s; oldest first. What it runs is up to it.
    pub async fn adopt_jobs(&self, owner: &Owner) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET host = $1, host_epoch = $2 WHERE {NOT_FINAL} AND \
             ((host = $1 AND host_epoch <> $2) OR (host IS NULL AND host_epoch IS NULL \
             AND status IN ('running', 'sleeping'))) RETURNING {JOB_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(&owner.host)
            .bind(owner.epoch)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = rows
            .iter()
            .map(Job::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(jobs)
    }

    /// Makes `owner` the leader, or keeps it so, for `lease` from now;
    /// when the current leader's lease has run out, whoever asks first
    /// takes over. Returns since when (database clock) `owner` leads, or
    /// `None` if another host does.
    pub async fn try_lead(
        &self,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let now = db_now_expr(self.backend);
        let insert = format!(
            "INSERT INTO cluster_leader (id, host, epoch, lease_until, since) \
             VALUES (1, $1, $2, {now} + $3, {now}) ON CONFLICT (id) DO NOTHING"
        );
        sqlx::query(&insert)
            .bind(&owner.host)
            .bind(owner.epoch)
            .bind(ms(lease))
            .execute(&self.pool)
            .await?;
        let update = format!(
            "UPDATE cluster_leader SET \
             since = CASE WHEN host = $1 AND epoch = $2 THEN since ELSE {now} END, \
             host = $1, epoch = $2, lease_until = {now} + $3 \
             WHERE id = 1 AND ((host = $1 AND epoch = $2) OR lease_until < {now}) \
             RETURNING since"
        );
        let row = sqlx::query(&update)
            .bind(&owner.host)
            .bind(owner.epoch)
            .bind(ms(lease))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| get(&r, "since")).transpose()
    }

    /// The current leader's name, while its lease holds.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let now = db_now_expr(self.backend);
        let sql = format!("SELECT host FROM cluster_leader WHERE id = 1 AND lease_until >= {now}");
        let row = sqlx::query(&sql).fetch_optional(&self.pool).await?;
        row.map(|r| get(&r, "host")).transpose()
    }

    /// Hosts not declared lost whose lease ran out more than `grace` ago.
    pub async fn expired_hosts(&self, grace: Duration) -> Result<Vec<Host>, StoreError> {
        let now = db_now_expr(self.backend);
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE state <> 'lost' AND lease_until < {now} - $1 \
             ORDER BY name"
        );
        let rows = sqlx::query(&sql)
            .bind(ms(grace))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Host::from_row).collect()
    }

    /// Declares `host` lost, in one transaction, if it is still as seen
    /// (same epoch, lease not renewed since): its running one-shot jobs
    /// end `error` with `reason`, the jobs it claimed but had not started
    /// go back to the queue, its persistent sandboxes belong to nobody
    /// (they come back on another host). `None` if it was not (any more)
    /// as seen: it renewed, started again, or was declared already.
    pub async fn declare_lost(
        &self,
        host: &Host,
        reason: &str,
    ) -> Result<Option<LostWork>, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE hosts SET state = 'lost', lost_reason = $1 \
             WHERE name = $2 AND epoch = $3 AND lease_until = $4 AND state <> 'lost'",
        )
        .bind(reason)
        .bind(&host.info.name)
        .bind(host.epoch)
        .bind(host.lease_until)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let failed = sqlx::query(
            "UPDATE jobs SET status = 'error', error = $1, finished_at = $2, \
             vm_ms = vm_ms + COALESCE($2 - vm_since, 0), vm_since = NULL \
             WHERE host = $3 AND persistent = 0 AND status = 'running' RETURNING id",
        )
        .bind(reason)
        .bind(now)
        .bind(&host.info.name)
        .fetch_all(&mut *tx)
        .await?;
        let requeued = sqlx::query(
            "UPDATE jobs SET host = NULL, host_epoch = NULL, status = 'accepted' \
             WHERE host = $1 AND status IN ('accepted', 'queued') RETURNING id",
        )
        .bind(&host.info.name)
        .fetch_all(&mut *tx)
        .await?;
        // `host_epoch` stays: nobody's now, but not from before hosts
        // were recorded (which a starting host adopts).
        let orphaned = sqlx::query(
            "UPDATE jobs SET host = NULL WHERE host = $1 AND persistent = 1 \
             AND status IN ('running', 'sleeping') RETURNING id",
        )
        .bind(&host.info.name)
        .fetch_all(&mut *tx)
        .await?;
        let lost = LostWork {
            failed: ids(&failed)?,
            requeued: ids(&requeued)?,
            orphaned: ids(&orphaned)?,
        };
        // Their logs say what happened, in the same transaction (the
        // sandboxes' new hosts append after these lines).
        let gone = format!(
            "{reason}: the sandbox's processes, memory and writes not yet synced are gone; \
             it starts again on another host (from its workspace's last synced version, if it \
             has one)\n"
        );
        let failed_line = format!("error: {reason}\n");
        let lines = (lost.failed.iter().map(|id| (id, &failed_line)))
            .chain(lost.orphaned.iter().map(|id| (id, &gone)));
        for (id, line) in lines {
            sqlx::query(
                "INSERT INTO job_output (job_id, seq, stream, data, ts) \
                 SELECT $1, COALESCE(MAX(seq), -1) + 1, 'system', $2, $3 FROM job_output \
                 WHERE job_id = $1",
            )
            .bind(id)
            .bind(line.as_bytes())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE jobs SET output_bytes = output_bytes + $1 WHERE id = $2")
                .bind(i64::try_from(line.len()).unwrap_or(i64::MAX))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(lost))
    }
}
