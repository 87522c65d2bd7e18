//! API tokens. Only their SHA-256 (hex) is stored, never the token itself;
//! a short prefix is kept for display. Tokens look like `mags_` followed by
//! 40 random base62 characters.

use crate::{clock, conflict_or, get, Store, StoreError, User};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use sqlx::any::AnyRow;

/// What every generated token starts with.
pub const TOKEN_PREFIX: &str = "mags_";
/// Random characters after the prefix.
const TOKEN_RANDOM_LEN: usize = 40;
/// How many leading characters are kept for display.
const DISPLAY_PREFIX_LEN: usize = 12;
/// `last_used_at` is refreshed at most this often, to spare writes.
const TOUCH_INTERVAL_MS: i64 = 60_000;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh random token (from the OS-seeded CSPRNG).
pub fn generate_token() -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN);
    s.push_str(TOKEN_PREFIX);
    for _ in 0..TOKEN_RANDOM_LEN {
        s.push(char::from(BASE62[rng.gen_range(0..BASE62.len())]));
    }
    s
}

/// The stored form of a token: SHA-256, lowercase hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A stored token (without the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    /// The first characters, for display (`mags_AbCdEfG`).
    pub prefix: String,
    pub created_at: i64,
}

/// A stored token as listings show it (without the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked: bool,
}

impl TokenRow {
    fn from_row(row: &AnyRow) -> Result<TokenRow, StoreError> {
        Ok(TokenRow {
            id: get(row, "id")?,
            user_id: get(row, "user_id")?,
            user_name: get(row, "user_name")?,
            prefix: get(row, "prefix")?,
            created_at: get(row, "created_at")?,
            last_used_at: get(row, "last_used_at")?,
            revoked: get::<i64>(row, "revoked")? != 0,
        })
    }
}

const TOKEN_ROW_SELECT: &str = "SELECT t.id AS id, t.user_id AS user_id, u.name AS user_name, \
    t.prefix AS prefix, t.created_at AS created_at, t.last_used_at AS last_used_at, \
    t.revoked AS revoked FROM tokens t JOIN users u ON u.id = t.user_id";

/// The result of a successful [`Store::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user: User,
    pub token_id: String,
    /// The token's display prefix (for the audit log).
    pub token_prefix: String,
}

/// The display prefix of a presented token, if it looks like one of ours
/// (anything else may be a secret pasted by mistake: keep none of it).
pub fn display_prefix(token: &str) -> Option<String> {
    let looks_ours = token.starts_with(TOKEN_PREFIX)
        && token.len() == TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    looks_ours.then(|| token.chars().take(DISPLAY_PREFIX_LEN).collect())
}

impl Store {
    /// Creates a new token for `user_id`; returns it in clear, once.
    pub async fn create_token(&self, user_id: &str) -> Result<(TokenInfo, String), StoreError> {
        let token = generate_token();
        let info = self.add_token(user_id, &token).await?;
        Ok((info, token))
    }

    /// Registers a token the caller already has (e.g. a local token file
    /// that outlived its database).
    pub async fn add_token(&self, user_id: &str, token: &str) -> Result<TokenInfo, StoreError> {
        let info = TokenInfo {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_string(),
            prefix: token.chars().take(DISPLAY_PREFIX_LEN).collect(),
            created_at: clock::monotonic_ms(),
        };
        sqlx::query(
            "INSERT INTO tokens (id, user_id, token_hash, prefix, created_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(&info.id)
        .bind(&info.user_id)
        .bind(hash_token(token))
        .bind(&info.prefix)
        .bind(info.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, || "token".to_string()))?;
        Ok(info)
    }

    /// The user a token belongs to, if it is known and not revoked.
    /// Refreshes the token's `last_used_at` (at most once a minute).
    pub async fn authenticate(&self, token: &str) -> Result<Option<Authenticated>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.last_used_at AS last_used_at, t.prefix AS prefix, \
                    u.id AS id, u.name AS name, u.is_admin AS is_admin, u.created_at AS created_at \
             FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked = 0",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let token_id: String = get(&row, "token_id")?;
        let last_used: Option<i64> = get(&row, "last_used_at")?;
        let now = clock::now_ms();
        if last_used.is_none_or(|t| now - t >= TOUCH_INTERVAL_MS) {
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(Authenticated {
            user: User::from_row(&row)?,
            token_id,
            token_prefix: get(&row, "prefix")?,
        }))
    }

    /// The stored (revoked) token `token` is, with its owner, if it is one
    /// of ours: lets a refused request name whose revoked token it used.
    pub async fn revoked_token(&self, token: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query(&format!(
            "{TOKEN_ROW_SELECT} WHERE t.token_hash = $1 AND t.revoked = 1"
        ))
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(TokenRow::from_row).transpose()
    }

    /// A page of the tokens of `user_id` (every user's when `None`),
    /// newest first, and how many there are.
    pub async fn tokens(
        &self,
        user_id: Option<&str>,
        page: crate::Page,
    ) -> Result<(Vec<TokenRow>, i64), StoreError> {
        let order = format!("ORDER BY t.created_at DESC, t.id{}", page.sql());
        let (rows, total) = match user_id {
            Some(u) => (
                sqlx::query(&format!("{TOKEN_ROW_SELECT} WHERE t.user_id = $1 {order}"))
                    .bind(u)
                    .fetch_all(&self.pool)
                    .await?,
                self.count("SELECT COUNT(*) AS n FROM tokens WHERE user_id = $1", u)
                    .await?,
            ),
            None => {
                let rows = sqlx::query(&format!("{TOKEN_ROW_SELECT} {order}"))
                    .fetch_all(&self.pool)
                    .await?;
                let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
                    .fetch_one(&self.pool)
                    .await?;
                (rows, get(&row, "n")?)
            }
        };
        Ok((
            rows.iter()
                .map(TokenRow::from_row)
                .collect::<Result<_, _>>()?,
            total,
        ))
    }

    /// Tokens whose id is `key` or whose display prefix starts with `key`
    /// (at least 6 characters), of `user_id` when given.
    pub async fn find_tokens(
        &self,
        key: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<TokenRow>, StoreError> {
        // Prefixes are base62 after `mags_`: a key with anything else (a
        // LIKE wildcard, say) can only be an id.
        let plain = key.len() >= 6 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let pattern = if plain {
            format!("{key}%")
        } else {
            String::new()
        };
        let mut sql = format!("{TOKEN_ROW_SELECT} WHERE (t.id = $1 OR t.prefix LIKE $2)");
        if user_id.is_some() {
            sql.push_str(" AND t.user_id = $3");
        }
        sql.push_str(" ORDER BY t.created_at DESC, t.id LIMIT 100");
        let mut q = sqlx::query(&sql).bind(key).bind(pattern);
        if let Some(u) = user_id {
            q = q.bind(u);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut found = rows
            .iter()
            .map(TokenRow::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // LIKE ignores case on SQLite; prefixes do not.
        found.retain(|t| t.id == key || (plain && t.prefix.starts_with(key)));
        // An exact id wins over prefixes that happen to match.
        if let Some(i) = found.iter().position(|t| t.id == key) {
            found = vec![found.swap_remove(i)];
        }
        Ok(found)
    }

    /// Revokes a token; returns whether it existed.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = $1")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = generate_token();
        assert!(t.starts_with("mags_"));
        assert_eq!(t.len(), 45);
        assert!(t[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(t, generate_token());
        assert_eq!(display_prefix(&t).as_deref(), Some(&t[..12]));
    }

    #[test]
    fn only_our_tokens_have_a_display_prefix() {
        assert_eq!(display_prefix("mags_wrong"), None);
        assert_eq!(display_prefix("hunter2-my-password"), None);
        assert_eq!(display_prefix(&format!("mags_{}", "é".repeat(20))), None);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
