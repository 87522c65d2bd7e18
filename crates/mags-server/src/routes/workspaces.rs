//! `GET /mags-workspaces`, `DELETE /mags-workspaces/{id}` (409 while a job
//! is live on it), `POST /mags-workspaces/{id}/resize` (ours: grow only).

use crate::audit::Caller;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::page;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use mags_api::limits::MAX_DISK_GB;
use mags_api::AuditAction;
use mags_api::{PageQuery, ResizeRequest, WorkspaceActionResponse, WorkspaceList};

/// `GET /mags-workspaces?offset=&limit=`: a page, most recently used first.
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<WorkspaceList>, ApiError> {
    let (workspaces, total) = state.workspaces.list(&user.id, page(&q)?).await?;
    Ok(Json(WorkspaceList { total, workspaces }))
}

/// `DELETE /mags-workspaces/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WorkspaceActionResponse>, ApiError> {
    state.workspaces.delete(&caller.user.id, &id).await?;
    caller
        .done(
            &state.audit,
            AuditAction::WorkspaceDelete,
            ("workspace", &id),
            None,
        )
        .await;
    Ok(Json(WorkspaceActionResponse {
        success: true,
        message: format!("workspace {id} deleted"),
        workspace_id: id,
    }))
}

/// `POST /mags-workspaces/{id}/resize` `{"disk_gb": N}`.
pub async fn resize(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ResizeRequest>,
) -> Result<Json<WorkspaceActionResponse>, ApiError> {
    if req.disk_gb == 0 || req.disk_gb > MAX_DISK_GB {
        return Err(ApiError::BadRequest(format!(
            "disk_gb must be between 1 and {MAX_DISK_GB}"
        )));
    }
    // A workspace that does not exist is the resize's own 404.
    if let Some(ws) = state.store.workspace(&user.id, &id).await? {
        let bytes = u64::from(req.disk_gb) << 30;
        let change = mags_control::quota::DiskChange::Workspace { name: &id, bytes };
        state
            .quotas
            .check_disk(&state.store, &user.id, change)
            .await?;
        if let Some(dir) = &state.data_dir {
            let what = format!(
                "workspace {id} at {}",
                mags_control::quota::human_bytes(bytes)
            );
            let growth = bytes.saturating_sub(ws.disk_bytes);
            mags_control::quota::check_host_disk(&state.store, dir, growth, &what).await?;
        }
    }
    let message = state
        .workspaces
        .resize(&state.sandboxes, &user.id, &id, req.disk_gb)
        .await?;
    Ok(Json(WorkspaceActionResponse {
        success: true,
        workspace_id: id,
        message,
    }))
}
