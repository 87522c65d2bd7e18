//! `POST /mags-files`: multipart, one or more parts named `file`, each
//! streamed into object storage (never whole in memory) as its own upload.
//! A part larger than the server's upload limit (`--upload-max-bytes`,
//! default [`mags_api::limits::MAX_UPLOAD_BYTES`]) is a 413, larger than what is
//! left of the user's disk quota a 403; either leaves nothing behind (the
//! request's earlier parts are removed too), and the rest of the body is
//! read and dropped first, so the client sees the answer rather than a
//! reset connection.

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiMultipart};
use crate::AppState;
use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, State};
use axum::Json;
use futures::StreamExt as _;
use mags_api::limits::MAX_UPLOAD_PARTS;
use mags_api::{UploadResponse, UploadedFile};
use mags_control::text::Esc;
use mags_control::workspaces::clean_name;

/// Most bytes read and dropped after an upload was refused: this many
/// times the upload limit.
const DRAIN_FACTOR: u64 = 4;

/// `POST /mags-files`.
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiMultipart(mut form): ApiMultipart,
) -> Result<Json<UploadResponse>, ApiError> {
    let mut stored: Vec<UploadedFile> = Vec::new();
    let result = store_parts(&state, &user.id, &mut form, &mut stored).await;
    if let Err(e) = result {
        let ids: Vec<String> = stored.iter().map(|f| f.file_id.clone()).collect();
        state.workspaces.discard_uploads(&user.id, &ids).await;
        // Read what is left so the client gets the answer.
        while let Ok(Some(mut f)) = form.next_field().await {
            while let Ok(Some(_)) = f.chunk().await {}
        }
        return Err(e);
    }
    for f in &stored {
        tracing::info!(file = %f.file_id, size = f.size, user = %Esc(&user.name), "file uploaded");
    }
    let Some(first) = stored.first().cloned() else {
        return Err(ApiError::BadRequest(
            "no multipart part named \"file\" in the request".into(),
        ));
    };
    let several = stored.len() > 1;
    Ok(Json(UploadResponse {
        file_id: first.file_id,
        name: first.name,
        size: first.size,
        sha256: first.sha256,
        file_ids: if several {
            stored.iter().map(|f| f.file_id.clone()).collect()
        } else {
            Vec::new()
        },
        files: if several { stored } else { Vec::new() },
    }))
}

/// Stores every `file` part of `form` in order, pushing each to `stored`
/// as soon as it is kept (so the caller can remove them on a refusal).
async fn store_parts(
    state: &AppState,
    user_id: &str,
    form: &mut Multipart,
    stored: &mut Vec<UploadedFile>,
) -> Result<(), ApiError> {
    while let Some(field) = form.next_field().await? {
        if field.name() != Some("file") {
            continue;
        }
        if stored.len() == MAX_UPLOAD_PARTS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_UPLOAD_PARTS} files per request; nothing was stored"
            )));
        }
        let raw = field.file_name().unwrap_or("upload").to_string();
        let name = clean_name(&raw)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid file name {raw:?}")))?;
        let max = state.limits.upload_max_bytes;
        let (room, by_quota) = state.quotas.upload_room(&state.store, user_id, max).await?;
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
        let kept = match state
            .workspaces
            .upload(user_id, &name, &mut body, room)
            .await
        {
            Ok(kept) => kept,
            Err(e) => {
                drop(body);
                let broken = broken.into_inner().unwrap_or_else(|p| p.into_inner());
                return Err(broken.map_or_else(|| e.into(), ApiError::from));
            }
        };
        match kept {
            Ok(up) => stored.push(UploadedFile {
                file_id: up.id,
                name: up.name,
                size: up.size,
                sha256: up.sha256,
            }),
            Err(limit) => {
                let mut drained = 0u64;
                while let Some(Ok(b)) = body.next().await {
                    drained += b.len() as u64;
                    if drained > DRAIN_FACTOR.saturating_mul(max) {
                        break;
                    }
                }
                if by_quota {
                    return Err(ApiError::Forbidden(format!(
                        "disk quota exceeded: file {name} is larger than the {} left of your \
                         disk quota; nothing was stored",
                        mags_control::quota::human_bytes(limit)
                    )));
                }
                return Err(ApiError::PayloadTooLarge(format!(
                    "file {name} is larger than the upload limit of {}; nothing was stored",
                    upload_limit_words(limit)
                )));
            }
        }
    }
    Ok(())
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
