//! SSH access: `POST /mags-jobs/{id}/access` with port 22 gives the
//! gateway's host and port and a fresh access key for this sandbox only
//! ([`crate::ssh`]). Failures answer `{"success": false, "error"}` with the
//! status of the error; another user's job is a 404 like a missing one.
//! Access wakes a sleeping sandbox.
//!
//! [`ssh_access`] is the port-22 branch of `/access` (`routes/access.rs`).

use crate::audit::Caller;
use crate::error::ApiError;
use crate::routes::jobs::owned_job;
use crate::ssh::keys;
use crate::AppState;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mags_api::AuditAction;
use mags_api::{SshAccessError, SshAccessResponse};
use mags_control::sandboxes::check_live;

/// An [`ApiError`] in the SSH `/access` shape.
pub struct Failed(ApiError);

impl<E: Into<ApiError>> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed(e.into())
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let error = if status.is_server_error() && !matches!(self.0, ApiError::Unavailable(_)) {
            tracing::error!(error = %self.0, "access failed");
            "internal server error (details are in the server log)".to_string()
        } else {
            self.0.to_string()
        };
        let body = SshAccessError {
            success: false,
            error,
        };
        (status, Json(body)).into_response()
    }
}

/// SSH access to the caller's job `id`: wakes it, makes and records a key,
/// says where to connect (`headers` give the host the client reached the
/// API at).
pub async fn ssh_access(
    state: &AppState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
) -> Result<Json<SshAccessResponse>, Failed> {
    let job = owned_job(state, &caller.user.id, id).await?;
    check_live(&job, "SSH access")?;
    let Some(endpoint) = &state.ssh else {
        return Err(ApiError::Unavailable("this server runs no SSH gateway".into()).into());
    };
    // Wake it now (the contract's promise) and let it idle from here.
    state.sandboxes.wake(&job.id).await?;
    let key = keys::new_access_key(&format!("mags-{}", job.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Err(e) = state.store.delete_ended_ssh_keys().await {
        tracing::warn!(error = %e, "cannot forget the SSH keys of ended jobs");
    }
    state
        .store
        .add_ssh_key(&key.fingerprint, &job.id, &job.user_id)
        .await?;
    tracing::info!(job = %job.id, fingerprint = %key.fingerprint, "SSH access key issued");
    caller
        .done(
            &state.audit,
            AuditAction::AccessSsh,
            ("job", &job.id),
            Some(format!("key {}", key.fingerprint)),
        )
        .await;
    let api_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Ok(Json(SshAccessResponse {
        success: true,
        ssh_host: endpoint.host_for(api_host),
        ssh_port: endpoint.addr.port(),
        ssh_private_key: key.private_openssh,
        ssh_user: "root".into(),
    }))
}
