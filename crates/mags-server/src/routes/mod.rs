//! The HTTP surface: `/health` and everything under `/api/v1`.
//!
//! - [`jobs`]: create, list, status, logs, delete (ended jobs).
//! - [`output`]: the NDJSON output stream our CLI follows.
//! - [`sandbox`]: persistent sandboxes: exec, settings, stop, sync.
//! - [`ssh`]: SSH access keys (`/access`, port 22); [`tty`]: the terminal WebSocket.
//! - [`files`], [`workspaces`]: uploads, workspace list/delete/resize.
//! - [`cron`]: scheduled jobs.
//! - [`meta`]: health, usage, pool status, whoami.
//! - [`access`]: public URLs and URL aliases.
//! - [`browser`]: browser sessions (Chromium with a CDP endpoint).
//! - [`users`]: API tokens, users (admin only) and the audit log.
//!
//! Requests whose Host is under the apps domain never reach these: the
//! [URL proxy](crate::proxy) takes them first.
//!
//! Unknown paths and methods answer JSON errors too.
//!
//! Request bodies: at most [`MAX_BODY_BYTES`] on every route but the upload
//! (which streams up to its own limit, see [`files`]): a body that says it
//! is larger is refused with a JSON 413 before any handler runs, and one
//! that turns out larger while a handler reads it likewise. Every
//! authenticated request first passes the per-user rate limit
//! ([`rate_limit`]).

pub mod access;
pub mod browser;
pub mod cron;
pub mod files;
pub mod jobs;
pub mod meta;
pub mod output;
pub mod sandbox;
pub mod ssh;
pub mod tty;
pub mod users;
pub mod workspaces;

use crate::error::ApiError;
use crate::{auth, AppState};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use axum::Router;
use mags_api::limits::MAX_BODY_BYTES;
use std::time::Instant;

/// The page a listing's `offset`/`limit` ask for; a `limit` outside
/// 1..=[`mags_api::limits::MAX_PAGE_LIMIT`] is a 400.
pub fn page(q: &mags_api::PageQuery) -> Result<mags_store::Page, ApiError> {
    let max = mags_api::limits::MAX_PAGE_LIMIT;
    let limit = q.limit.unwrap_or(max);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        )));
    }
    let offset = i64::try_from(q.offset.unwrap_or(0))
        .map_err(|_| ApiError::BadRequest("offset is too large".into()))?;
    Ok(mags_store::Page {
        offset,
        limit: i64::from(limit),
    })
}

/// The one route whose body may be larger than [`MAX_BODY_BYTES`].
const UPLOAD_PATH: &str = "/api/v1/mags-files";

/// The whole application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/mags-jobs", get(jobs::list).post(jobs::create))
        .route("/mags-jobs/usage", get(meta::usage))
        .route("/mags-jobs/pool-status", get(meta::pool_status))
        .route("/mags-jobs/{id}/status", get(jobs::status))
        .route("/mags-jobs/{id}/logs", get(jobs::logs))
        .route("/mags-jobs/{id}/output", get(output::follow))
        .route(
            "/mags-jobs/{id}",
            patch(sandbox::update).delete(jobs::delete),
        )
        .route("/mags-jobs/{id}/exec", post(sandbox::exec))
        .route("/mags-jobs/{id}/exec/stream", post(sandbox::exec_stream))
        .route("/mags-jobs/{id}/stop", post(sandbox::stop))
        .route("/mags-jobs/{id}/sync", post(sandbox::sync))
        .route("/mags-jobs/{id}/access", post(access::access))
        .route("/mags-browser", post(browser::create))
        .route(
            "/mags-url-aliases",
            get(access::list_aliases).post(access::create_alias),
        )
        .route(
            "/mags-url-aliases/{subdomain}",
            delete(access::delete_alias),
        )
        .route("/mags-jobs/{id}/exec/tty", get(tty::tty))
        .route(
            "/mags-files",
            post(files::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/mags-workspaces", get(workspaces::list))
        .route("/mags-workspaces/{id}", delete(workspaces::delete))
        .route("/mags-workspaces/{id}/resize", post(workspaces::resize))
        .route("/mags-cron", get(cron::list).post(cron::create))
        .route(
            "/mags-cron/{id}",
            get(cron::get).patch(cron::update).delete(cron::delete),
        )
        .route("/whoami", get(meta::whoami))
        .route(
            "/mags-tokens",
            get(users::list_tokens).post(users::create_token),
        )
        .route("/mags-tokens/{id}", delete(users::revoke_token))
        .route(
            "/mags-users",
            get(users::list_users).post(users::create_user),
        )
        .route("/mags-audit", get(users::audit))
        // Layers run last-added first: authentication, the rate limit,
        // then relaying a request for another host's sandbox there.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::relay::relay,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(meta::health))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(refuse_large_bodies))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::dispatch,
        ))
        .with_state(state)
}

/// The internal listener (`--internal-listen`): the whole application, for
/// requests signed by another host of the cluster only (see
/// [`crate::relay`]).
pub fn internal_router(state: AppState) -> Router {
    router(state.clone()).layer(middleware::from_fn_with_state(
        state,
        crate::relay::internal_only,
    ))
}

/// A listener that serves only the URL proxy (`--apps-listen`).
pub fn apps_router(state: AppState) -> Router {
    Router::new().fallback(crate::proxy::only).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// 413 for a request whose `Content-Length` is over [`MAX_BODY_BYTES`] (not
/// uploads), also on routes whose handlers never read a body: nothing runs.
async fn refuse_large_bodies(req: Request, next: Next) -> Result<Response, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared {
        if n > MAX_BODY_BYTES as u64 && req.uri().path() != UPLOAD_PATH {
            return Err(ApiError::PayloadTooLarge(format!(
                "request body is too large: {n} bytes, at most {MAX_BODY_BYTES} are accepted"
            )));
        }
    }
    Ok(next.run(req).await)
}

/// One debug line per request (path only: queries and headers may carry
/// secrets some day; tokens never appear here).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// Middleware (inside authentication): 429 with `Retry-After` when the
/// user's request rate is over the limit.
pub async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(caller) = req.extensions().get::<crate::audit::Caller>() {
        if let Err(wait) = state.quotas.rate.take(&caller.user.id) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many requests: at most {} per second per user (bursts of {}); \
                     retry in {secs} s",
                    state.quotas.limits.requests_per_sec, state.quotas.limits.request_burst
                ),
                retry_after_secs: secs,
            });
        }
    }
    Ok(next.run(req).await)
}
