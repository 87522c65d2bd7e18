//! `POST/GET /mags-cron`, `GET/PATCH/DELETE /mags-cron/{id}` (id or name).
//! Another user's cron job is a 404, exactly like a missing one.

use crate::audit::Caller;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::routes::page;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mags_api::limits::{MAX_CRONS_PER_USER, MAX_SCRIPT_BYTES};
use mags_api::AuditAction;
use mags_api::{CronCreateRequest, CronJob, CronList, CronUpdateRequest, PageQuery};
use mags_control::cron::{self, expr::CronExpr};
use mags_control::jobs::{check_environment, check_workspace_id};
use mags_control::text::Esc;
use mags_store::{CronRow, CronUpdate, NewCron, Page, StoreError};
use std::collections::BTreeMap;

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("cron job {id} not found"))
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
        e => ApiError::Store(e),
    }
}

/// Checks the fields of a cron job (create and update) as a job would be.
pub fn check_fields(
    name: &str,
    script: &str,
    persistent: bool,
    workspace_id: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::BadRequest(m.to_string()));
    if name.trim().is_empty() || name.len() > 256 {
        return bad("name is required (up to 256 characters)");
    }
    mags_control::text::check_name("name", name)?;
    if script.trim().is_empty() {
        return bad("script is required");
    }
    if script.len() > MAX_SCRIPT_BYTES {
        return bad("script is larger than 1 MiB");
    }
    if let Some(ws) = workspace_id {
        check_workspace_id(ws)?;
    }
    if persistent && workspace_id.is_none() {
        return bad("persistent needs a workspace_id: the workspace each run keeps");
    }
    Ok(check_environment(env)?)
}

/// The workspace of a persistent cron job given none: one named after the
/// cron job (characters a workspace id cannot have become `-`).
pub fn default_workspace(cron_name: &str) -> String {
    cron_name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

/// The workspace a cron job's runs use: the one given, else for a
/// persistent one [`default_workspace`].
fn workspace_for(name: &str, persistent: bool, given: Option<String>) -> Option<String> {
    given.or_else(|| persistent.then(|| default_workspace(name)))
}

/// The next fire time after now, if enabled. Now is the database's clock,
/// the one the ticker of every host decides due runs by.
async fn next_run(
    state: &AppState,
    expr: &CronExpr,
    enabled: bool,
) -> Result<Option<i64>, ApiError> {
    if !enabled {
        return Ok(None);
    }
    Ok(expr.next_after(state.store.db_now_ms().await?))
}

/// `POST /mags-cron` -> 201 with the cron job.
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CronCreateRequest>,
) -> Result<(StatusCode, Json<CronJob>), ApiError> {
    let expr = cron::parse(&req.cron_expression)?;
    let ws = req.workspace_id.filter(|w| !w.trim().is_empty());
    let ws = workspace_for(&req.name, req.persistent, ws);
    check_fields(
        &req.name,
        &req.script,
        req.persistent,
        ws.as_deref(),
        &req.environment,
    )?;
    let (_, count) = state.store.crons(&user.id, Page::first(0)).await?;
    if count >= MAX_CRONS_PER_USER as i64 {
        return Err(ApiError::Conflict(format!(
            "at most {MAX_CRONS_PER_USER} cron jobs per user; delete one first"
        )));
    }
    if let (true, Some(ws)) = (req.persistent, &ws) {
        state.store.mark_workspace_persistent(&user.id, ws).await?;
    }
    let row = state
        .store
        .insert_cron(&NewCron {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            name: req.name.trim().to_string(),
            expression: req.cron_expression.trim().to_string(),
            script: req.script,
            persistent: req.persistent,
            workspace_id: ws,
            environment: req.environment,
            enabled: req.enabled,
            next_run_at: next_run(&state, &expr, req.enabled).await?,
        })
        .await
        .map_err(store_err)?;
    tracing::info!(cron = %Esc(&row.name), user = %Esc(&user.name), "cron job created");
    Ok((StatusCode::CREATED, Json(crate::view::cron_job(&row))))
}

/// `GET /mags-cron`.
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<CronList>, ApiError> {
    let (rows, total) = state.store.crons(&user.id, page(&q)?).await?;
    Ok(Json(CronList {
        total: usize::try_from(total).unwrap_or(usize::MAX),
        cron_jobs: rows.iter().map(crate::view::cron_job).collect(),
    }))
}

async fn owned(state: &AppState, user_id: &str, id: &str) -> Result<CronRow, ApiError> {
    state
        .store
        .cron(user_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// `GET /mags-cron/{id}`.
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CronJob>, ApiError> {
    Ok(Json(crate::view::cron_job(
        &owned(&state, &user.id, &id).await?,
    )))
}

/// `PATCH /mags-cron/{id}`: any subset of the fields; the next run is
/// recomputed from the (new) schedule.
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CronUpdateRequest>,
) -> Result<Json<CronJob>, ApiError> {
    let cur = owned(&state, &user.id, &id).await?;
    let expression = req
        .cron_expression
        .clone()
        .unwrap_or(cur.expression.clone());
    let expr = cron::parse(&expression)?;
    let ws = match &req.workspace_id {
        Some(w) if w.trim().is_empty() => None,
        Some(w) => Some(w.clone()),
        None => cur.workspace_id.clone(),
    };
    let persistent = req.persistent.unwrap_or(cur.persistent);
    let ws = workspace_for(req.name.as_deref().unwrap_or(&cur.name), persistent, ws);
    let enabled = req.enabled.unwrap_or(cur.enabled);
    check_fields(
        req.name.as_deref().unwrap_or(&cur.name),
        req.script.as_deref().unwrap_or(&cur.script),
        persistent,
        ws.as_deref(),
        req.environment.as_ref().unwrap_or(&cur.environment),
    )?;
    if let (true, Some(ws)) = (persistent, &ws) {
        state.store.mark_workspace_persistent(&user.id, ws).await?;
    }
    // Unchanged schedule and still enabled: keep the run already due.
    let next = match (req.cron_expression.is_none(), cur.enabled, enabled) {
        (true, true, true) => cur.next_run_at,
        _ => next_run(&state, &expr, enabled).await?,
    };
    let row = state
        .store
        .update_cron(
            &user.id,
            &cur.id,
            &CronUpdate {
                name: req.name.map(|n| n.trim().to_string()),
                expression: req.cron_expression.map(|e| e.trim().to_string()),
                script: req.script,
                persistent: req.persistent,
                workspace_id: Some(ws),
                environment: req.environment,
                enabled: req.enabled,
                next_run_at: next,
            },
        )
        .await
        .map_err(store_err)?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(crate::view::cron_job(&row)))
}

/// `DELETE /mags-cron/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = &caller.user;
    let cur = owned(&state, &user.id, &id).await?;
    if !state.store.delete_cron(&user.id, &cur.id).await? {
        return Err(not_found(&id));
    }
    caller
        .done(
            &state.audit,
            AuditAction::CronDelete,
            ("cron", &cur.id),
            Some(cur.name.clone()),
        )
        .await;
    Ok(Json(serde_json::json!({
        "success": true,
        "id": cur.id,
        "message": format!("cron job {} deleted", cur.name),
    })))
}

#[cfg(test)]
mod tests {
    use super::default_workspace;

    #[test]
    fn a_cron_name_becomes_a_valid_workspace_id() {
        assert_eq!(default_workspace("daily-backup"), "daily-backup");
        assert_eq!(default_workspace(" my job/1.x "), "my-job-1-x");
        let long = default_workspace(&"a".repeat(300));
        assert_eq!(long.len(), 128);
        for name in ["..", "a b", "ü"] {
            assert!(mags_control::jobs::check_workspace_id(&default_workspace(name)).is_ok());
        }
    }
}
