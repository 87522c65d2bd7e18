//! The audit log: security-relevant events, newest last, bounded by age
//! and count ([`Store::prune_audit`]). Events hold names, ids and display
//! prefixes, never a secret.

use crate::{clock, get, Store, StoreError};
use sqlx::any::AnyRow;

/// One event to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Who did it (`None`: the server operator, or nobody known).
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub token_id: Option<String>,
    pub token_prefix: Option<String>,
    /// What happened, `kind.verb` (`token.revoke`, `auth.fail`, ...).
    pub action: String,
    /// What it happened to (`job`, `workspace`, `token`, ...) and its id.
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    /// Anything else worth knowing (never a secret).
    pub detail: Option<String>,
    pub source_ip: Option<String>,
}

impl NewAuditEvent {
    /// An event of `action` by nobody in particular.
    pub fn new(action: mags_api::AuditAction) -> NewAuditEvent {
        NewAuditEvent {
            action: action.as_str().to_string(),
            ..Default::default()
        }
    }

    /// What it happened to.
    pub fn target(mut self, kind: &str, id: &str) -> NewAuditEvent {
        self.target_kind = Some(kind.to_string());
        self.target_id = Some(id.to_string());
        self
    }

    /// Anything else worth knowing (never a secret).
    pub fn detail(mut self, detail: impl Into<String>) -> NewAuditEvent {
        self.detail = Some(detail.into());
        self
    }

    /// Done by `user` (without a token: the operator acting for them, or
    /// an SSH key).
    pub fn by_user(mut self, user_id: &str, user_name: Option<&str>) -> NewAuditEvent {
        self.user_id = Some(user_id.to_string());
        self.user_name = user_name.map(str::to_string);
        self
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    /// Unix milliseconds.
    pub at: i64,
    pub event: NewAuditEvent,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user's events.
    pub user_id: Option<String>,
    /// Only events at or after this time (unix ms).
    pub since: Option<i64>,
    /// Only this action.
    pub action: Option<String>,
    /// At most this many (the newest).
    pub limit: i64,
}

const COLUMNS: &str = "id, at, user_id, user_name, token_id, token_prefix, action, \
    target_kind, target_id, detail, source_ip";

impl AuditEvent {
    fn from_row(row: &AnyRow) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: get(row, "id")?,
            at: get(row, "at")?,
            event: NewAuditEvent {
                user_id: get(row, "user_id")?,
                user_name: get(row, "user_name")?,
                token_id: get(row, "token_id")?,
                token_prefix: get(row, "token_prefix")?,
                action: get(row, "action")?,
                target_kind: get(row, "target_kind")?,
                target_id: get(row, "target_id")?,
                detail: get(row, "detail")?,
                source_ip: get(row, "source_ip")?,
            },
        })
    }
}

/// The `WHERE` clauses of `f` (`$1` is the `since` bound, then the
/// returned values in order).
fn filter_sql(f: &AuditFilter) -> (String, Vec<&String>) {
    let mut sql = "at >= $1".to_string();
    let mut binds = Vec::new();
    for (col, v) in [("user_id", &f.user_id), ("action", &f.action)] {
        if let Some(v) = v {
            binds.push(v);
            sql.push_str(&format!(" AND {col} = ${}", binds.len() + 1));
        }
    }
    (sql, binds)
}

impl Store {
    /// Appends an event; returns it as stored.
    pub async fn record_audit(&self, e: &NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let stored = AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            at: clock::monotonic_ms(),
            event: e.clone(),
        };
        sqlx::query(&format!(
            "INSERT INTO audit_events ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&stored.id)
        .bind(stored.at)
        .bind(&e.user_id)
        .bind(&e.user_name)
        .bind(&e.token_id)
        .bind(&e.token_prefix)
        .bind(&e.action)
        .bind(&e.target_kind)
        .bind(&e.target_id)
        .bind(&e.detail)
        .bind(&e.source_ip)
        .execute(&self.pool)
        .await?;
        Ok(stored)
    }

    /// Events matching `f`, oldest first (the newest `f.limit` of them).
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_events WHERE at >= $1");
        let mut n = 1;
        let mut clause = |col: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&format!(" AND {col} = ${n}"));
        };
        if f.user_id.is_some() {
            clause("user_id", &mut sql);
        }
        if f.action.is_some() {
            clause("action", &mut sql);
        }
        sql.push_str(&format!(
            " ORDER BY at DESC, id DESC LIMIT {}",
            f.limit.max(0)
        ));
        let mut q = sqlx::query(&sql).bind(f.since.unwrap_or(i64::MIN));
        for v in [&f.user_id, &f.action].into_iter().flatten() {
            q = q.bind(v);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut events = rows
            .iter()
            .map(AuditEvent::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    /// Where the newest `f.limit` events matching `f` start: the position
    /// (time, id) of the event just older than them, `None` if there are
    /// no more than `f.limit`. Read on with [`Store::audit_page`].
    pub async fn audit_start(&self, f: &AuditFilter) -> Result<Option<(i64, String)>, StoreError> {
        let (clauses, binds) = filter_sql(f);
        let sql = format!(
            "SELECT at, id FROM audit_events WHERE {clauses} \
             ORDER BY at DESC, id DESC LIMIT 1 OFFSET {}",
            f.limit.max(0)
        );
        let mut q = sqlx::query(&sql).bind(f.since.unwrap_or(i64::MIN));
        for v in binds {
            q = q.bind(v);
        }
        let row = q.fetch_optional(&self.pool).await?;
        row.map(|r| Ok((get(&r, "at")?, get(&r, "id")?)))
            .transpose()
    }

    /// Up to `page` events matching `f` (its `limit` aside) after position
    /// `after` (from the first when `None`), oldest first: a listing of
    /// any length read in bounded pieces.
    pub async fn audit_page(
        &self,
        f: &AuditFilter,
        after: Option<(i64, &str)>,
        page: i64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (clauses, binds) = filter_sql(f);
        let n = 2 + binds.len();
        let after_sql = if after.is_some() {
            format!(" AND (at > ${n} OR (at = ${n} AND id > ${}))", n + 1)
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {clauses}{after_sql} \
             ORDER BY at, id LIMIT {}",
            page.max(0)
        );
        let mut q = sqlx::query(&sql).bind(f.since.unwrap_or(i64::MIN));
        for v in binds {
            q = q.bind(v);
        }
        if let Some((at, id)) = after {
            q = q.bind(at).bind(id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(AuditEvent::from_row).collect()
    }

    /// Deletes events older than `before` (unix ms) and all but the newest
    /// `keep` events; returns how many went.
    pub async fn prune_audit(&self, before: i64, keep: i64) -> Result<u64, StoreError> {
        let old = sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let cutoff = sqlx::query("SELECT at FROM audit_events ORDER BY at DESC LIMIT 1 OFFSET $1")
            .bind(keep.max(0))
            .fetch_optional(&self.pool)
            .await?;
        let extra = match cutoff {
            Some(row) => sqlx::query("DELETE FROM audit_events WHERE at <= $1")
                .bind(get::<i64>(&row, "at")?)
                .execute(&self.pool)
                .await?
                .rows_affected(),
            None => 0,
        };
        Ok(old + extra)
    }
}
