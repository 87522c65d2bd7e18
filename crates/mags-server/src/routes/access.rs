//! Public URLs over the API: `POST /mags-jobs/{id}/access` gives a job's
//! port a URL served by the [URL proxy](crate::proxy); `/mags-url-aliases`
//! manages stable subdomains that follow a workspace's live job.

use crate::audit::Caller;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::jobs::owned_job;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mags_api::AuditAction;
use mags_api::{
    valid_subdomain, AccessRequest, AccessResponse, AliasInfo, AliasList, CreateAliasRequest,
};
use mags_control::sandboxes::check_live;
use mags_store::clock::rfc3339;
use mags_store::{Alias, StoreError};

/// `POST /mags-jobs/{id}/access`.
pub async fn access(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AccessRequest>,
) -> Result<Response, ApiError> {
    if req.port == mags_api::SSH_PORT {
        // SSH: the gateway's host and port and a key for this sandbox.
        return Ok(
            crate::routes::ssh::ssh_access(&state, &caller, &id, &headers)
                .await
                .into_response(),
        );
    }
    let user = &caller.user;
    let job = owned_job(&state, &user.id, &id).await?;
    if req.port == 0 {
        return Err(ApiError::BadRequest("port must be 1-65535".into()));
    }
    check_live(&job, "URL access")?;
    let access = loop {
        let candidate = new_subdomain();
        if state.store.subdomain_taken(&candidate).await? {
            continue;
        }
        match state
            .store
            .ensure_access(&job.id, &user.id, req.port, &candidate)
            .await
        {
            Ok(a) => break a,
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    caller
        .done(
            &state.audit,
            AuditAction::AccessUrl,
            ("job", &job.id),
            Some(format!("port {} at {}", access.port, access.subdomain)),
        )
        .await;
    // Access wakes a sleeping sandbox (in the background: the URL works
    // either way, its first request waits for the wake).
    if job.status == mags_api::JobState::Sleeping {
        let (sandboxes, user_id, job_id) =
            (state.sandboxes.clone(), user.id.clone(), job.id.clone());
        tokio::spawn(async move {
            if let Err(e) = sandboxes.connect(&user_id, &job_id).await {
                tracing::warn!(job = %job_id, "wake for URL access failed: {e}");
            }
        });
    } else {
        state.sandboxes.touch(&job.id);
    }
    Ok(Json(AccessResponse {
        success: true,
        url: state.apps.url(&access.subdomain),
        port: access.port,
        subdomain: access.subdomain,
    })
    .into_response())
}

/// A fresh random subdomain: 12 characters of `[a-z0-9]`.
pub(crate) fn new_subdomain() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(12)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn alias_info(state: &AppState, a: Alias) -> AliasInfo {
    AliasInfo {
        id: a.id,
        url: state.apps.url(&a.subdomain),
        subdomain: a.subdomain,
        workspace_id: a.workspace_id,
        created_at: Some(rfc3339(a.created_at)),
    }
}

/// `POST /mags-url-aliases`: 409 if the subdomain is taken.
pub async fn create_alias(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CreateAliasRequest>,
) -> Result<Json<AliasInfo>, ApiError> {
    let sub = req.subdomain.trim().to_ascii_lowercase();
    if !valid_subdomain(&sub) {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not a valid subdomain: use 1-63 of a-z, 0-9 and '-'",
            req.subdomain
        )));
    }
    let ws = req.workspace_id.trim();
    if ws.is_empty() {
        return Err(ApiError::BadRequest("workspace_id is required".into()));
    }
    mags_control::jobs::check_workspace_id(ws)?;
    let taken = || ApiError::Conflict(format!("the subdomain {sub} already exists"));
    if state.store.subdomain_taken(&sub).await? {
        return Err(taken());
    }
    // An alias must follow one of the caller's workspaces.
    if state.store.workspace(&user.id, ws).await?.is_none() {
        return Err(ApiError::NotFound(format!("workspace {ws} not found")));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let alias = state
        .store
        .create_alias(&id, &sub, &user.id, ws, req.domain.as_deref())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => taken(),
            e => e.into(),
        })?;
    Ok(Json(alias_info(&state, alias)))
}

/// `GET /mags-url-aliases`.
pub async fn list_aliases(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<mags_api::PageQuery>,
) -> Result<Json<AliasList>, ApiError> {
    let (rows, total) = state
        .store
        .aliases(&user.id, crate::routes::page(&q)?)
        .await?;
    let aliases: Vec<AliasInfo> = rows.into_iter().map(|a| alias_info(&state, a)).collect();
    Ok(Json(AliasList {
        total: usize::try_from(total).unwrap_or(usize::MAX),
        aliases,
    }))
}

/// `DELETE /mags-url-aliases/{subdomain}`.
pub async fn delete_alias(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(sub): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sub = sub.to_ascii_lowercase();
    if !state.store.delete_alias(&caller.user.id, &sub).await? {
        return Err(ApiError::NotFound(format!("no alias {sub}")));
    }
    caller
        .done(
            &state.audit,
            AuditAction::AliasDelete,
            ("alias", &sub),
            None,
        )
        .await;
    Ok(Json(serde_json::json!({
        "success": true,
        "message": format!("alias {sub} removed"),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_subdomains_are_valid() {
        for _ in 0..100 {
            let s = new_subdomain();
            assert_eq!(s.len(), 12);
            assert!(valid_subdomain(&s), "{s}");
        }
    }
}
