//! Accounts. A user owns tokens, jobs, workspaces, uploads, cron jobs and
//! URLs; names are unique. Removing a user removes all of those records
//! (foreign keys cascade; SSH keys, which have none, are removed here).

use crate::jobs::NOT_FINAL;
use crate::{clock, conflict_or, get, Store, StoreError};
use sqlx::any::AnyRow;

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: i64,
}

impl User {
    pub(crate) fn from_row(row: &AnyRow) -> Result<User, StoreError> {
        Ok(User {
            id: get(row, "id")?,
            name: get(row, "name")?,
            is_admin: get::<i64>(row, "is_admin")? != 0,
            created_at: get(row, "created_at")?,
        })
    }
}

/// What removing a user deleted: how many records of each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRemoval {
    pub tokens: i64,
    pub jobs: i64,
    pub live_jobs: i64,
    pub workspaces: i64,
    pub uploads: i64,
    pub cron_jobs: i64,
    pub url_aliases: i64,
}

/// Longest user name accepted.
pub const MAX_USER_NAME: usize = 64;

/// Whether `name` is a valid user name: 1-64 of letters, digits, `-`,
/// `_`, `.` and `@`, not starting with `.` or `-`.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

const USER_COLUMNS: &str = "id, name, is_admin, created_at";

impl Store {
    /// Creates a user; [`StoreError::Conflict`] if the name is taken.
    pub async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            is_admin,
            created_at: clock::now_ms(),
        };
        sqlx::query("INSERT INTO users (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&user.id)
            .bind(&user.name)
            .bind(i64::from(user.is_admin))
            .bind(user.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, || format!("user {name:?}")))?;
        Ok(user)
    }

    /// The user called `name`, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(User::from_row).transpose()
    }

    /// A page of the users, by name, and how many there are.
    pub async fn users(&self, page: crate::Page) -> Result<(Vec<User>, i64), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY name, id{}",
            page.sql()
        ))
        .fetch_all(&self.pool)
        .await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        let total = crate::get(&row, "n")?;
        Ok((
            rows.iter().map(User::from_row).collect::<Result<_, _>>()?,
            total,
        ))
    }

    /// The user called `name`, created (with `is_admin`) if missing.
    pub async fn ensure_user(&self, name: &str, is_admin: bool) -> Result<User, StoreError> {
        if let Some(u) = self.user_by_name(name).await? {
            return Ok(u);
        }
        match self.create_user(name, is_admin).await {
            Ok(u) => Ok(u),
            // Someone else created it between our two queries.
            Err(StoreError::Conflict(_)) => self
                .user_by_name(name)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("user {name:?} vanished"))),
            Err(e) => Err(e),
        }
    }

    /// How many records `user_id` owns, by kind (what [`Store::remove_user`]
    /// would delete); `live_jobs` counts jobs not yet final.
    pub async fn user_records(&self, user_id: &str) -> Result<UserRemoval, StoreError> {
        let count = |sql: String| {
            let pool = self.pool.clone();
            async move {
                let row = sqlx::query(&sql).bind(user_id).fetch_one(&pool).await?;
                get::<i64>(&row, "n")
            }
        };
        let of = |table: &str| format!("SELECT COUNT(*) AS n FROM {table} WHERE user_id = $1");
        Ok(UserRemoval {
            tokens: count(of("tokens")).await?,
            jobs: count(of("jobs")).await?,
            live_jobs: count(format!("{} AND {NOT_FINAL}", of("jobs"))).await?,
            workspaces: count(of("workspaces")).await?,
            uploads: count(of("uploads")).await?,
            cron_jobs: count(of("cron_jobs")).await?,
            url_aliases: count(of("url_aliases")).await?,
        })
    }

    /// Removes a user and everything it owns (the deletes in one
    /// transaction); returns what it owned, or `None` if there is no such
    /// user.
    pub async fn remove_user(&self, user_id: &str) -> Result<Option<UserRemoval>, StoreError> {
        let counts = self.user_records(user_id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ssh_keys WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((r.rows_affected() > 0).then_some(counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["alice", "a", "bob.smith", "ci-bot_2", "x@example.com"] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }
}
