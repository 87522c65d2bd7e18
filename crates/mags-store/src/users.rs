//! Accounts. A user owns tokens and jobs; names are unique.

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
        let row = sqlx::query("SELECT id, name, is_admin, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(User::from_row).transpose()
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
}
