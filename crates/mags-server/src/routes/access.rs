//! `POST /mags-jobs/{id}/access`: a way into a live sandbox. Port 22 gives
//! SSH: the gateway's host and port and a fresh access key for this
//! sandbox only ([`crate::ssh`]). Other ports (URLs) are not served here
//! yet. Failures answer `{"success": false, "error"}` with the status of
//! the error; another user's job is a 404 like a missing one. Access on a
//! sleeping sandbox wakes it.

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::routes::jobs::owned_job;
use crate::sandboxes::check_live;
use crate::ssh::keys;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mags_api::{AccessError, AccessRequest, SshAccessResponse, SSH_PORT};

/// An [`ApiError`] in the `/access` shape.
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
        let body = AccessError {
            success: false,
            error,
        };
        (status, Json(body)).into_response()
    }
}

/// `POST /mags-jobs/{id}/access` `{"port"}`.
pub async fn access(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AccessRequest>,
) -> Result<Json<SshAccessResponse>, Failed> {
    if req.port != SSH_PORT {
        return Err(ApiError::BadRequest(format!(
            "access to port {} is not available on this server; port 22 gives SSH",
            req.port
        ))
        .into());
    }
    let job = owned_job(&state, &user.id, &id).await?;
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
        .add_ssh_key(&key.fingerprint, &job.id, &user.id)
        .await?;
    tracing::info!(job = %job.id, fingerprint = %key.fingerprint, "SSH access key issued");
    let api_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Ok(Json(SshAccessResponse {
        success: true,
        ssh_host: endpoint.host_for(api_host),
        ssh_port: endpoint.addr.port(),
        ssh_private_key: key.private_openssh,
        ssh_user: "root".into(),
    }))
}
