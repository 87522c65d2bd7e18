//! `POST /mags-files`: one file per request, multipart part `file`,
//! streamed into object storage (never whole in memory). Larger than
//! [`MAX_UPLOAD_BYTES`] is a 413 that leaves nothing behind; the rest of
//! the body is read and dropped first, so the client sees the answer
//! rather than a reset connection.

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::workspaces::clean_name;
use crate::AppState;
use axum::extract::{Multipart, State};
use axum::Json;
use futures::StreamExt as _;
use mags_api::{UploadResponse, MAX_UPLOAD_BYTES};

/// Most bytes read and dropped after an upload was refused.
const DRAIN_LIMIT: u64 = 4 * MAX_UPLOAD_BYTES;

/// `POST /mags-files`.
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    mut form: Multipart,
) -> Result<Json<UploadResponse>, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text()))
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.name() != Some("file") {
            continue;
        }
        let raw = field.file_name().unwrap_or("upload").to_string();
        let name = clean_name(&raw)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid file name {raw:?}")))?;
        let mut body = Box::pin(field);
        let stored = state
            .workspaces
            .upload(&user.id, &name, &mut body, MAX_UPLOAD_BYTES)
            .await?;
        return match stored {
            Ok(up) => {
                tracing::info!(file = %up.id, size = up.size, user = %user.name, "file uploaded");
                Ok(Json(UploadResponse {
                    file_id: up.id,
                    name: up.name,
                    size: up.size,
                    sha256: up.sha256,
                }))
            }
            Err(limit) => {
                let mut drained = 0u64;
                while let Some(Ok(b)) = body.next().await {
                    drained += b.len() as u64;
                    if drained > DRAIN_LIMIT {
                        break;
                    }
                }
                drop(body);
                while let Ok(Some(mut f)) = form.next_field().await {
                    while let Ok(Some(_)) = f.chunk().await {}
                }
                Err(ApiError::PayloadTooLarge(format!(
                    "file {name} is larger than the upload limit of {} MB ({limit} bytes); nothing was stored",
                    limit / 1_000_000
                )))
            }
        };
    }
    Err(ApiError::BadRequest(
        "no multipart part named \"file\" in the request".into(),
    ))
}
