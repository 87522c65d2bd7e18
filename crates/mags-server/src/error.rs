//! The one mapping from errors to HTTP responses, and extractors whose
//! rejections use it, so every error body is JSON `{"error": "..."}`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mags_api::ErrorBody;
use mags_control::sandboxes::SandboxError;
use mags_control::text::Esc;
use mags_control::ControlError;
use mags_store::StoreError;
use serde::de::DeserializeOwned;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid API token (send Authorization: Bearer <token>)")]
    Unauthorized,
    /// The caller's role does not allow this (a non-admin on an admin
    /// endpoint). Never used for a resource of another user: that is a
    /// [`ApiError::NotFound`], so existence does not leak.
    /// Not allowed for this user (a quota); the message says which.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Over a per-user limit that passes with time; answered with
    /// `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// Temporarily unable (a sandbox that cannot wake, too many running);
    /// the message is shown to the caller.
    #[error("{0}")]
    Unavailable(String),
    /// The host's disk cannot hold what was asked for (507); the message
    /// names the free space.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// 404 for a job the caller cannot see (missing or someone else's).
    pub fn job_not_found(id: &str) -> Self {
        ApiError::NotFound(format!("job {id} not found"))
    }
}

/// The one mapping of the control layer's refusals and failures to HTTP.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        use mags_control::quota::QuotaError;
        use mags_control::workspaces::WsError;
        match e {
            ControlError::Invalid(e) => ApiError::BadRequest(e.0),
            ControlError::Sandbox(e) => match e {
                SandboxError::NotFound(id) => ApiError::job_not_found(&id),
                SandboxError::NotLive { .. }
                | SandboxError::NotPersistent(_)
                | SandboxError::Starting { .. }
                | SandboxError::Stopped => ApiError::Conflict(e.to_string()),
                SandboxError::Busy(_) | SandboxError::Unavailable(_) => {
                    ApiError::Unavailable(e.to_string())
                }
                SandboxError::UserBusy(_) => ApiError::TooManyRequests {
                    message: e.to_string(),
                    retry_after_secs: mags_control::quota::JOB_RETRY_AFTER_SECS,
                },
                SandboxError::Unsupported(_) => ApiError::BadRequest(e.to_string()),
                SandboxError::Store(e) => ApiError::Store(e),
            },
            ControlError::Workspace(e) => match e {
                WsError::NotFound(_) | WsError::NoBase(_) => ApiError::NotFound(e.to_string()),
                WsError::InUse { .. } | WsError::Conflict { .. } => {
                    ApiError::Conflict(e.to_string())
                }
                WsError::Invalid(_) => ApiError::BadRequest(e.to_string()),
                WsError::Disabled => ApiError::Unavailable(e.to_string()),
                WsError::Store(s) => ApiError::Store(s),
                WsError::Storage(_) | WsError::Disk(_) => ApiError::Internal(e.to_string()),
            },
            ControlError::Quota(e) => match e {
                QuotaError::TooManyPending { .. } | QuotaError::TooManySandboxes { .. } => {
                    ApiError::TooManyRequests {
                        retry_after_secs: e.retry_after_secs().unwrap_or(1),
                        message: e.to_string(),
                    }
                }
                QuotaError::Disk(m) => ApiError::Forbidden(m),
                QuotaError::HostDisk(m) => ApiError::InsufficientStorage(m),
                QuotaError::Store(s) => ApiError::Store(s),
            },
            ControlError::Store(e) => ApiError::Store(e),
        }
    }
}

/// Each module's error goes through [`ControlError`]'s mapping, so `?`
/// works on them in handlers.
macro_rules! through_control_error {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                ControlError::from(e).into()
            }
        }
    )*};
}
through_control_error!(
    SandboxError,
    mags_control::workspaces::WsError,
    mags_control::quota::QuotaError,
    mags_control::jobs::Invalid
);

/// A multipart body that breaks off or is malformed while it is read.
impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let shown = matches!(
            self,
            ApiError::Unavailable(_) | ApiError::InsufficientStorage(_)
        );
        let error = if status.is_server_error() && !shown {
            tracing::error!(error = %Esc(&self.to_string()), "request failed");
            "internal server error (details are in the server log)".to_string()
        } else {
            self.to_string()
        };
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let body = Json(ErrorBody { error });
        let mut resp = (status, body).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// A JSON object body, whatever the `Content-Type` says; errors are
/// [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(format!(
                        "request body is too large: at most {} bytes are accepted",
                        mags_api::limits::MAX_BODY_BYTES
                    ))
                } else {
                    ApiError::BadRequest(format!(
                        "could not read the request body: {}",
                        r.body_text()
                    ))
                }
            })?;
        parse_json_object(&bytes).map(ApiJson)
    }
}

/// A request body as [`ApiJson`] reads it: a JSON object (not an array,
/// not empty), deserialized into `T`.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::BadRequest(
                "the request body is empty; expected a JSON object".into(),
            ))
        }
        // serde would also take a struct from an array; we do not.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "invalid JSON body: expected a JSON object".into(),
            ))
        }
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Query parameters; errors are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r| ApiError::BadRequest(r.body_text()))
    }
}

/// A `multipart/form-data` body; a request that is not one (another
/// content type, no boundary) is a JSON 400 like every other error.
pub struct ApiMultipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for ApiMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Multipart::from_request(req, state)
            .await
            .map(ApiMultipart)
            .map_err(|r| {
                ApiError::BadRequest(format!(
                    "expected a multipart/form-data body with a boundary: {}",
                    r.body_text()
                ))
            })
    }
}

/// Path parameters; errors are [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| ApiError::BadRequest(r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::job_not_found("x").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ApiError::Internal("x".into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
