//! `POST /mags-jobs`, `GET /mags-jobs`, `GET /mags-jobs/{id}/status`,
//! `GET /mags-jobs/{id}/logs` (streamed, see [`crate::logs`]), `DELETE
//! /mags-jobs/{id}` (ended jobs).
//!
//! A create request is checked, stored and scheduled by
//! [`mags_control::Control::submit`] (no HTTP there); a job of another user is a
//! 404, exactly like a missing one.

use crate::audit::Caller;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::logs::LogBody;
use crate::view::job_status;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mags_api::limits::MAX_JOB_PAGE_SIZE;
use mags_api::AuditAction;
use mags_api::{
    CreateJobRequest, CreateJobResponse, DeleteJobResponse, JobList, JobListQuery, JobStatus,
    LogsQuery,
};
use mags_control::quota::human_bytes;
use mags_control::text::Esc;
use mags_store::{Job, JobDeletion};

/// `POST /mags-jobs` -> 202.
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CreateJobRequest>,
) -> Result<(StatusCode, Json<CreateJobResponse>), ApiError> {
    let job = state.submit(&user.id, req).await?;
    tracing::info!(job = %job.id, user = %Esc(&user.name), "job accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(CreateJobResponse {
            request_id: job.spec.id,
            status: "accepted".into(),
            message: "job accepted".into(),
        }),
    ))
}

/// `GET /mags-jobs?page=&page_size=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let page = q.page.unwrap_or(1).max(1);
    let page_size = q.page_size.unwrap_or(20).clamp(1, MAX_JOB_PAGE_SIZE);
    let offset = i64::from(page - 1) * i64::from(page_size);
    let (jobs, total) = state
        .store
        .list_jobs(&user.id, offset, i64::from(page_size))
        .await?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(job_status).collect(),
        total,
        page,
        page_size,
    }))
}

/// The caller's job `id`, or 404.
pub async fn owned_job(state: &AppState, user_id: &str, id: &str) -> Result<Job, ApiError> {
    state
        .store
        .job_for_user(user_id, id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))
}

/// `GET /mags-jobs/{id}/status`.
pub async fn status(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobStatus>, ApiError> {
    let job = owned_job(&state, &user.id, &id).await?;
    let mut view = job_status(&job);
    if let Some(a) = state.store.first_access(&job.id).await? {
        view.url = Some(state.apps.url(&a.subdomain));
        view.subdomain = Some(a.subdomain);
    }
    Ok(Json(view))
}

/// `DELETE /mags-jobs/{id}` (ours): an ended job, its stored output, URL
/// routes and SSH keys; 409 while it is live (stop it first), 404 for a
/// job the caller cannot see. Audited (`job.delete`).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeleteJobResponse>, ApiError> {
    match state.store.delete_ended_job(&caller.user.id, &id).await? {
        JobDeletion::NotFound => Err(ApiError::job_not_found(&id)),
        JobDeletion::Live(status) => Err(ApiError::Conflict(format!(
            "job {id} is {status}: only an ended job can be deleted; stop it first"
        ))),
        JobDeletion::Deleted { output_bytes } => {
            let detail = format!("{} of output", human_bytes(output_bytes));
            caller
                .done(
                    &state.audit,
                    AuditAction::JobDelete,
                    ("job", &id),
                    Some(detail),
                )
                .await;
            tracing::info!(job = %id, user = %caller.user.name, output_bytes, "job deleted");
            Ok(Json(DeleteJobResponse {
                success: true,
                message: format!("job {id} deleted"),
                request_id: id,
                output_bytes,
            }))
        }
    }
}

/// `GET /mags-jobs/{id}/logs?offset=&limit=`: the output so far, as
/// lines, streamed from the store ([`LogBody`]): memory stays bounded
/// however much output the job has. A missing job is a 404 before any of
/// the body is sent.
pub async fn logs(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    if q.limit == Some(0) {
        return Err(ApiError::BadRequest("limit must be at least 1".into()));
    }
    let job = owned_job(&state, &user.id, &id).await?;
    let body = LogBody::new(
        state.store.clone(),
        job.spec.id,
        q.offset.unwrap_or(0),
        q.limit,
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body.into_stream()),
    )
        .into_response())
}
