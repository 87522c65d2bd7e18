//! Public URLs: per-job access records (subdomain -> job and port) and
//! URL aliases (subdomain -> whichever job is live in a workspace), and
//! resolving a subdomain to where a request should go.

use crate::{clock, conflict_or, get, Store, StoreError};
use sqlx::any::AnyRow;

/// A job's public URL for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub subdomain: String,
    pub job_id: String,
    pub user_id: String,
    pub port: u16,
    pub created_at: i64,
    /// Set for a browser session's CDP endpoint: requests must carry it.
    pub secret: Option<String>,
}

/// A stable subdomain for a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub id: String,
    pub subdomain: String,
    pub user_id: String,
    pub workspace_id: String,
    pub domain: Option<String>,
    pub created_at: i64,
}

/// Where a subdomain leads now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This job's sandbox, this port (the job may have ended; the caller checks).
    Job {
        job_id: String,
        user_id: String,
        port: u16,
        /// The access record's secret (a browser session's CDP endpoint):
        /// requests without it must be refused.
        secret: Option<String>,
    },
    /// An alias whose workspace has no live job.
    NoLiveJob { workspace_id: String },
}

/// Port used by an alias whose workspace never asked for a URL.
pub const DEFAULT_PORT: u16 = 8080;

fn access_from_row(r: &AnyRow) -> Result<Access, StoreError> {
    Ok(Access {
        subdomain: get(r, "subdomain")?,
        job_id: get(r, "job_id")?,
        user_id: get(r, "user_id")?,
        port: port(get(r, "port")?)?,
        created_at: get(r, "created_at")?,
        secret: get(r, "secret")?,
    })
}

const ACCESS_COLUMNS: &str = "subdomain, job_id, user_id, port, created_at, secret";

fn alias_from_row(r: &AnyRow) -> Result<Alias, StoreError> {
    Ok(Alias {
        id: get(r, "id")?,
        subdomain: get(r, "subdomain")?,
        user_id: get(r, "user_id")?,
        workspace_id: get(r, "workspace_id")?,
        domain: get(r, "domain")?,
        created_at: get(r, "created_at")?,
    })
}

fn port(v: i64) -> Result<u16, StoreError> {
    u16::try_from(v).map_err(|_| StoreError::Corrupt(format!("port {v}")))
}

impl Store {
    /// The access record of `job_id` for `port`, made with `subdomain` if
    /// there is none yet (the existing one wins).
    pub async fn ensure_access(
        &self,
        job_id: &str,
        user_id: &str,
        port: u16,
        subdomain: &str,
    ) -> Result<Access, StoreError> {
        self.ensure_access_with(job_id, user_id, port, subdomain, None)
            .await
    }

    /// Like [`Store::ensure_access`], with a secret the URL proxy requires
    /// when the record is made here (an existing record keeps its own).
    pub async fn ensure_access_with(
        &self,
        job_id: &str,
        user_id: &str,
        port: u16,
        subdomain: &str,
        secret: Option<&str>,
    ) -> Result<Access, StoreError> {
        sqlx::query(
            "INSERT INTO job_access (subdomain, job_id, user_id, port, created_at, secret) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id, port) DO NOTHING",
        )
        .bind(subdomain)
        .bind(job_id)
        .bind(user_id)
        .bind(i64::from(port))
        .bind(clock::monotonic_ms())
        .bind(secret)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("subdomain {subdomain}")))?;
        let row = sqlx::query(&format!(
            "SELECT {ACCESS_COLUMNS} FROM job_access \
             WHERE job_id = $1 AND port = $2"
        ))
        .bind(job_id)
        .bind(i64::from(port))
        .fetch_one(&self.pool)
        .await?;
        access_from_row(&row)
    }

    /// The first access record of a job (for its status), if any.
    pub async fn first_access(&self, job_id: &str) -> Result<Option<Access>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCESS_COLUMNS} FROM job_access \
             WHERE job_id = $1 ORDER BY created_at, port LIMIT 1"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(access_from_row).transpose()
    }

    /// Creates an alias; [`StoreError::Conflict`] if the subdomain is taken.
    pub async fn create_alias(
        &self,
        id: &str,
        subdomain: &str,
        user_id: &str,
        workspace_id: &str,
        domain: Option<&str>,
    ) -> Result<Alias, StoreError> {
        let now = clock::monotonic_ms();
        sqlx::query(
            "INSERT INTO url_aliases (id, subdomain, user_id, workspace_id, domain, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(subdomain)
        .bind(user_id)
        .bind(workspace_id)
        .bind(domain)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || format!("alias {subdomain}")))?;
        Ok(Alias {
            id: id.into(),
            subdomain: subdomain.into(),
            user_id: user_id.into(),
            workspace_id: workspace_id.into(),
            domain: domain.map(Into::into),
            created_at: now,
        })
    }

    /// A page of a user's aliases, oldest first, and how many they have.
    pub async fn aliases(
        &self,
        user_id: &str,
        page: crate::Page,
    ) -> Result<(Vec<Alias>, i64), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id, subdomain, user_id, workspace_id, domain, created_at FROM url_aliases \
             WHERE user_id = $1 ORDER BY created_at, subdomain{}",
            page.sql()
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let total = self
            .count(
                "SELECT COUNT(*) AS n FROM url_aliases WHERE user_id = $1",
                user_id,
            )
            .await?;
        Ok((
            rows.iter().map(alias_from_row).collect::<Result<_, _>>()?,
            total,
        ))
    }

    /// Deletes a user's alias; false if there was none.
    pub async fn delete_alias(&self, user_id: &str, subdomain: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM url_aliases WHERE user_id = $1 AND subdomain = $2")
            .bind(user_id)
            .bind(subdomain)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether any access record or alias uses `subdomain`.
    pub async fn subdomain_taken(&self, subdomain: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM job_access WHERE subdomain = $1) + \
             (SELECT COUNT(*) FROM url_aliases WHERE subdomain = $1) AS n",
        )
        .bind(subdomain)
        .fetch_one(&self.pool)
        .await?;
        Ok(get::<i64>(&row, "n")? > 0)
    }

    /// Where `subdomain` leads: a job's access record, or an alias's
    /// workspace's live job (with the port that workspace's jobs last
    /// asked a URL for). `None`: unknown subdomain.
    pub async fn route(&self, subdomain: &str) -> Result<Option<Route>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCESS_COLUMNS} FROM job_access \
             WHERE subdomain = $1"
        ))
        .bind(subdomain)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(a) = row.as_ref().map(access_from_row).transpose()? {
            return Ok(Some(Route::Job {
                job_id: a.job_id,
                user_id: a.user_id,
                port: a.port,
                secret: a.secret,
            }));
        }
        let row = sqlx::query(
            "SELECT id, subdomain, user_id, workspace_id, domain, created_at FROM url_aliases \
             WHERE subdomain = $1",
        )
        .bind(subdomain)
        .fetch_optional(&self.pool)
        .await?;
        let Some(alias) = row.as_ref().map(alias_from_row).transpose()? else {
            return Ok(None);
        };
        let live = sqlx::query(
            "SELECT id FROM jobs WHERE user_id = $1 AND workspace_id = $2 \
             AND status IN ('running', 'sleeping') ORDER BY created_at DESC LIMIT 1",
        )
        .bind(&alias.user_id)
        .bind(&alias.workspace_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(live) = live else {
            return Ok(Some(Route::NoLiveJob {
                workspace_id: alias.workspace_id,
            }));
        };
        let job_id: String = get(&live, "id")?;
        let port_row = sqlx::query(
            "SELECT a.port FROM job_access a JOIN jobs j ON j.id = a.job_id \
             WHERE j.user_id = $1 AND j.workspace_id = $2 \
             ORDER BY (CASE WHEN a.job_id = $3 THEN 0 ELSE 1 END), a.created_at DESC LIMIT 1",
        )
        .bind(&alias.user_id)
        .bind(&alias.workspace_id)
        .bind(&job_id)
        .fetch_optional(&self.pool)
        .await?;
        let port = match port_row {
            Some(r) => port(get(&r, "port")?)?,
            None => DEFAULT_PORT,
        };
        // An alias never bypasses a secret the job's port is protected by.
        let secret = sqlx::query("SELECT secret FROM job_access WHERE job_id = $1 AND port = $2")
            .bind(&job_id)
            .bind(i64::from(port))
            .fetch_optional(&self.pool)
            .await?
            .map(|r| get::<Option<String>>(&r, "secret"))
            .transpose()?
            .flatten();
        Ok(Some(Route::Job {
            job_id,
            user_id: alias.user_id,
            port,
            secret,
        }))
    }
}
