//! A Postgres database of a test's own, for tests of several hosts on one
//! database: a fresh schema at `MAGS_TEST_POSTGRES_URL` (required, like the
//! store tests': a missing server fails the test saying how to start one).

use sqlx::Executor as _;

/// A schema of its own; [`PgSchema::drop`] removes it.
pub struct PgSchema {
    admin: sqlx::AnyPool,
    name: String,
    /// Connects to the schema (`search_path`), for each host's `Store`.
    pub url: String,
}

impl PgSchema {
    pub async fn drop(self) {
        self.admin
            .execute(format!("DROP SCHEMA {} CASCADE", self.name).as_str())
            .await
            .expect("drop schema");
    }
}

/// A new schema named after `prefix`, empty (each `Store::connect` to its
/// url migrates it, the first one for real).
pub async fn schema(prefix: &str) -> PgSchema {
    let base = match std::env::var("MAGS_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "MAGS_TEST_POSTGRES_URL is not set: start PostgreSQL with \
             `eval \"$(scripts/test-postgres)\"` (or point it at any server)"
        ),
    };
    sqlx::any::install_default_drivers();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to Postgres");
    admin
        .execute(format!("CREATE SCHEMA {name}").as_str())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
    PgSchema { admin, name, url }
}
