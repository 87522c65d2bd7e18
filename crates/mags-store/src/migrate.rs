//! The embedded schema migrations and their runner.
//!
//! Migrations are plain SQL files in `migrations/`, applied in order, each
//! in its own transaction, and recorded in `mags_migrations`; any not
//! recorded there is applied, even one older than the newest applied. They are
//! written in the SQL that SQLite and Postgres share; the only dialect word
//! is `{{BLOB}}` (`BLOB` on SQLite, `BYTEA` on Postgres). On Postgres a
//! session advisory lock keeps two hosts from migrating at once.

use crate::{clock, get, Backend, Store, StoreError};
use sqlx::Executor as _;

/// One schema change.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. Never edit one that has shipped: add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "sandboxes",
        sql: include_str!("../migrations/0002_sandboxes.sql"),
    },
    Migration {
        version: 3,
        name: "workspaces",
        sql: include_str!("../migrations/0003_workspaces.sql"),
    },
    Migration {
        version: 4,
        name: "cron",
        sql: include_str!("../migrations/0004_cron.sql"),
    },
    Migration {
        version: 5,
        name: "access",
        sql: include_str!("../migrations/0005_access.sql"),
    },
    Migration {
        version: 6,
        name: "ssh_keys",
        sql: include_str!("../migrations/0006_ssh_keys.sql"),
    },
    Migration {
        version: 7,
        name: "browser_and_no_internet",
        sql: include_str!("../migrations/0007_browser.sql"),
    },
    Migration {
        version: 8,
        name: "audit",
        sql: include_str!("../migrations/0008_audit.sql"),
    },
    Migration {
        version: 9,
        name: "job_egress",
        sql: include_str!("../migrations/0009_job_egress.sql"),
    },
    Migration {
        version: 10,
        name: "job_timeout",
        sql: include_str!("../migrations/0010_job_timeout.sql"),
    },
    Migration {
        version: 11,
        name: "job_output_retention",
        sql: include_str!("../migrations/0011_job_output_retention.sql"),
    },
    Migration {
        version: 12,
        name: "hosts",
        sql: include_str!("../migrations/0012_hosts.sql"),
    },
    Migration {
        version: 13,
        name: "cron_runs",
        sql: include_str!("../migrations/0013_cron_runs.sql"),
    },
    Migration {
        version: 14,
        name: "workspace_versions",
        sql: include_str!("../migrations/0014_workspace_versions.sql"),
    },
];

/// Arbitrary key for `pg_advisory_lock` ("mags" in ASCII).
const PG_LOCK_KEY: i64 = 0x6d61_6773;

/// Applies every migration the database does not have yet.
pub async fn run(store: &Store) -> Result<(), StoreError> {
    let mut conn = store.pool.acquire().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let result = apply_pending(store.backend, &mut conn).await;
    if store.backend == Backend::Postgres {
        // Unlock even after a failure; the connection goes back to the pool.
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *conn)
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "could not release the migration lock");
        }
    }
    result
}

async fn apply_pending(
    backend: Backend,
    conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
) -> Result<(), StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS mags_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await?;
    let rows = sqlx::query("SELECT version FROM mags_migrations")
        .fetch_all(&mut **conn)
        .await?;
    let applied = rows
        .iter()
        .map(|r| get::<i64>(r, "version"))
        .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(&current) = applied.last().filter(|v| **v > newest) {
        return Err(StoreError::TooNew(current));
    }
    // Every one not recorded, even below the newest applied: migrations
    // made side by side may land in either order (each stands alone).
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = dialect(m.sql, backend);
        let fail = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = sqlx::Connection::begin(&mut **conn).await.map_err(fail)?;
        tx.execute(sql.as_str()).await.map_err(fail)?;
        sqlx::query("INSERT INTO mags_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(clock::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

/// Replaces the dialect words of a migration.
fn dialect(sql: &str, backend: Backend) -> String {
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    sql.replace("{{BLOB}}", blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.name);
            last = m.version;
        }
    }

    #[test]
    fn dialect_words_are_replaced() {
        let s = dialect("data {{BLOB}} NOT NULL", Backend::Postgres);
        assert_eq!(s, "data BYTEA NOT NULL");
        for m in MIGRATIONS {
            assert!(!dialect(m.sql, Backend::Sqlite).contains("{{"));
        }
    }
}
