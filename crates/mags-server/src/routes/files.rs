//! `POST /mags-files`: one file per request, multipart part `file`,
//! streamed into object storage (never whole in memory). Larger than the
//! server's upload limit (`--upload-max-bytes`, default
//! [`mags_api::MAX_UPLOAD_BYTES`]) is a 413, larger than what is left of
//! the user's disk quota a 403; either leaves nothing behind, and the rest
//! of the body is read and dropped first, so the client sees the answer
//! rather than a reset connection.

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiMultipart};
use crate::text::Esc;
use crate::workspaces::clean_name;
use crate::AppState;
use axum::extract::multipart::MultipartError;
use axum::extract::State;
use axum::Json;
use futures::StreamExt as _;
use mags_api::UploadResponse;

/// Most bytes read and dropped after an upload was refused: this many
/// times the upload limit.
const DRAIN_FACTOR: u64 = 4;

/// `POST /mags-files`.
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiMultipart(mut form): ApiMultipart,
) -> Result<Json<UploadResponse>, ApiError> {
    while let Some(field) = form.next_field().await? {
        if field.name() != Some("file") {
            continue;
        }
        let raw = field.file_name().unwrap_or("upload").to_string();
        let name = clean_name(&raw)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid file name {raw:?}")))?;
        let max = state.limits.upload_max_bytes;
        let (room, by_quota) = state
            .quotas
            .upload_room(&state.store, &user.id, max)
            .await?;
        // A body that breaks off inside the part is the client's error (a
        // 400), not the store's: remember the multipart error to say so.
        let broken: std::sync::Mutex<Option<MultipartError>> = std::sync::Mutex::new(None);
        let mut body = Box::pin(field.map(|r| {
            r.map_err(|e| {
                let text = e.body_text();
                *broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                std::io::Error::other(text)
            })
        }));
        let stored = match state
            .workspaces
            .upload(&user.id, &name, &mut body, room)
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                drop(body);
                let broken = broken.into_inner().unwrap_or_else(|p| p.into_inner());
                return Err(broken.map_or_else(|| e.into(), ApiError::from));
            }
        };
        return match stored {
            Ok(up) => {
                tracing::info!(file = %up.id, size = up.size, user = %Esc(&user.name), "file uploaded");
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
                    if drained > DRAIN_FACTOR.saturating_mul(max) {
                        break;
                    }
                }
                drop(body);
                while let Ok(Some(mut f)) = form.next_field().await {
                    while let Ok(Some(_)) = f.chunk().await {}
                }
                if by_quota {
                    return Err(ApiError::Forbidden(format!(
                        "disk quota exceeded: file {name} is larger than the {} left of your \
                         disk quota; nothing was stored",
                        crate::quota::human_bytes(limit)
                    )));
                }
                Err(ApiError::PayloadTooLarge(format!(
                    "file {name} is larger than the upload limit of {}; nothing was stored",
                    upload_limit_words(limit)
                )))
            }
        };
    }
    Err(ApiError::BadRequest(
        "no multipart part named \"file\" in the request".into(),
    ))
}

/// `100 MB` for a limit in whole megabytes (10^6, as the contract says),
/// else the bytes.
fn upload_limit_words(limit: u64) -> String {
    if limit >= 1_000_000 && limit.is_multiple_of(1_000_000) {
        format!("{} MB ({limit} bytes)", limit / 1_000_000)
    } else {
        format!("{limit} bytes")
    }
}
