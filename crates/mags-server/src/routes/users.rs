//! Tokens, users and the audit log over the API.
//!
//! - `GET/POST /mags-tokens`, `DELETE /mags-tokens/{id}`: a user's own
//!   tokens; an admin may name another user (`?user=`, `{"user"}`) and
//!   revoke any token. Another user's token is a 404 like a missing one.
//! - `GET/POST /mags-users`: admin only.
//! - `GET /mags-audit`: the caller's own events; an admin's sees all.
//!
//! Role checks are 403 ("needs an admin token"): the answer is the same
//! whatever is named, so it tells nothing about other users. Ownership
//! checks are 404. An admin has no power over other users' jobs,
//! workspaces, files, cron jobs or URLs: the admin role manages users,
//! tokens and the audit log only.

use crate::audit::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::view::{audit_entry, token_info, user_info};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mags_api::AuditAction;
use mags_api::{
    AuditEntry, AuditList, AuditQuery, CreateTokenRequest, CreateUserRequest, CreatedToken,
    PageQuery, RevokedToken, TokenList, TokenListQuery, UserInfo, UserList,
};
use mags_control::audit::parse_since;
use mags_store::clock::rfc3339;
use mags_store::{clock, valid_user_name, AuditFilter, User};

use mags_api::limits::MAX_AUDIT_LIMIT;

fn forbidden(what: &str) -> ApiError {
    ApiError::Forbidden(format!("{what} needs an admin token"))
}

/// The user a request names: the caller by default; another user only
/// for an admin (403 otherwise, whether or not that user exists).
async fn named_user(
    state: &AppState,
    caller: &Caller,
    name: Option<&str>,
) -> Result<User, ApiError> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(caller.user.clone()),
        Some(n) if n == caller.user.name => Ok(caller.user.clone()),
        Some(n) if caller.user.is_admin => state
            .store
            .user_by_name(n)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no user {n:?}"))),
        Some(_) => Err(forbidden("naming another user")),
    }
}

/// `GET /mags-tokens[?user=NAME&offset=&limit=]`: a page, newest first.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TokenListQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let page = crate::routes::page(&q.page())?;
    let user = named_user(&state, &caller, q.user.as_deref()).await?;
    let (rows, total) = state.store.tokens(Some(&user.id), page).await?;
    Ok(Json(TokenList {
        total: usize::try_from(total).unwrap_or(usize::MAX),
        tokens: rows.iter().map(token_info).collect(),
    }))
}

/// `POST /mags-tokens` `{"user"?}` -> 201 with the token, shown once.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let user = named_user(&state, &caller, req.user.as_deref()).await?;
    let (info, token) = state.store.create_token(&user.id).await?;
    caller
        .done(
            &state.audit,
            AuditAction::TokenCreate,
            ("token", &info.id),
            Some(format!("{} for user {}", info.prefix, user.name)),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            id: info.id,
            prefix: info.prefix,
            user: user.name,
            created_at: rfc3339(info.created_at),
        }),
    ))
}

/// `DELETE /mags-tokens/{id}`: id, or a prefix naming one token.
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RevokedToken>, ApiError> {
    let scope = (!caller.user.is_admin).then_some(caller.user.id.as_str());
    let mut found = state.store.find_tokens(&id, scope).await?;
    let token = match found.len() {
        0 => return Err(ApiError::NotFound(format!("token {id} not found"))),
        1 => found.remove(0),
        n => {
            return Err(ApiError::BadRequest(format!(
                "{id:?} matches {n} tokens; give more of the prefix or the id"
            )))
        }
    };
    let message = if token.revoked {
        format!("token {} was already revoked", token.prefix)
    } else {
        state.store.revoke_token(&token.id).await?;
        caller
            .done(
                &state.audit,
                AuditAction::TokenRevoke,
                ("token", &token.id),
                Some(format!("{} of user {}", token.prefix, token.user_name)),
            )
            .await;
        format!("token {} revoked", token.prefix)
    };
    Ok(Json(RevokedToken {
        success: true,
        id: token.id,
        prefix: token.prefix,
        message,
    }))
}

/// `GET /mags-users?offset=&limit=` (admin): a page, by name.
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<UserList>, ApiError> {
    if !caller.user.is_admin {
        return Err(forbidden("listing users"));
    }
    let (rows, total) = state.store.users(crate::routes::page(&q)?).await?;
    Ok(Json(UserList {
        total: usize::try_from(total).unwrap_or(usize::MAX),
        users: rows.iter().map(user_info).collect(),
    }))
}

/// `POST /mags-users` `{"name", "is_admin"?}` (admin) -> 201.
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    if !caller.user.is_admin {
        return Err(forbidden("adding users"));
    }
    if !valid_user_name(&req.name) {
        return Err(ApiError::BadRequest(format!(
            "invalid user name {:?}: use 1-64 letters, digits, '-', '_', '.' or '@'",
            req.name
        )));
    }
    let user = state
        .store
        .create_user(&req.name, req.is_admin)
        .await
        .map_err(|e| match e {
            mags_store::StoreError::Conflict(_) => {
                ApiError::Conflict(format!("user {:?} already exists", req.name))
            }
            e => e.into(),
        })?;
    let role = if user.is_admin { "admin" } else { "user" };
    caller
        .done(
            &state.audit,
            AuditAction::UserAdd,
            ("user", &user.id),
            Some(format!("{} ({role})", user.name)),
        )
        .await;
    Ok((StatusCode::CREATED, Json(user_info(&user))))
}

/// `GET /mags-audit?user=&since=&action=&limit=`: own events; an admin
/// sees everyone's (or `user`'s).
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let user_id = match q.user.as_deref() {
        None if caller.user.is_admin => None,
        name => Some(named_user(&state, &caller, name).await?.id),
    };
    let since = q
        .since
        .as_deref()
        .map(|s| parse_since(s, clock::now_ms()))
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_AUDIT_LIMIT}"
        )));
    }
    let filter = AuditFilter {
        user_id,
        since,
        action: q.action.filter(|a| !a.is_empty()),
        limit,
    };
    let events: Vec<AuditEntry> = state
        .store
        .audit_events(&filter)
        .await?
        .iter()
        .map(audit_entry)
        .collect();
    Ok(Json(AuditList {
        total: events.len(),
        events,
    }))
}
