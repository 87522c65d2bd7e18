//! Uploaded files: streamed into object storage by `POST /mags-files`, and
//! placed at `/root/<name>` and `/uploads/<name>` in a job's VM before its
//! script starts (streamed over the agent channel, never whole in memory);
//! `/uploads` holds exactly this job's files.

use super::{Inner, Workspaces, WsError};
use crate::executor::{bash, ProcessEvent, Vm};
use bytes::Bytes;
use futures::StreamExt as _;
use mags_store::{Job, Upload};
use std::collections::BTreeMap;
use tokio::io::AsyncWriteExt as _;

/// A safe file name from an uploaded one: its last path component, with
/// anything but letters, digits and `._-+@=,` replaced by `_`.
pub fn clean_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+@=,".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

impl Workspaces {
    /// Streams `body` into storage as a new upload of `user_id` named
    /// `name`; more than `limit` bytes is refused ([`WsError::Invalid`]
    /// never; [`mags_workspace::Error::TooLarge`] inside `Storage`) and
    /// leaves nothing behind.
    pub async fn upload<S, E>(
        &self,
        user_id: &str,
        name: &str,
        body: &mut S,
        limit: u64,
    ) -> Result<Result<Upload, u64>, WsError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let inner = self.inner()?;
        let id = uuid::Uuid::new_v4().to_string();
        let (size, sha256) = match inner.blobs.put_stream(&id, body, limit).await {
            Ok(r) => r,
            Err(mags_workspace::Error::TooLarge { limit }) => return Ok(Err(limit)),
            Err(e) => return Err(e.into()),
        };
        let up = Upload {
            id,
            user_id: user_id.to_string(),
            name: name.to_string(),
            size,
            sha256,
            created_at: mags_store::clock::now_ms(),
        };
        if let Err(e) = inner.store().insert_upload(&up).await {
            let _ = inner.blobs.delete(&up.id).await;
            return Err(e.into());
        }
        Ok(Ok(up))
    }

    /// Removes uploads stored by a request that was then refused (a later
    /// part too large), so a refused request leaves nothing behind. Best
    /// effort: a failure is logged.
    pub async fn discard_uploads(&self, user_id: &str, ids: &[String]) {
        let Ok(inner) = self.inner() else { return };
        for id in ids {
            if let Err(e) = inner.store().delete_upload(user_id, id).await {
                tracing::warn!(file = %id, error = %e, "cannot forget a refused upload");
            }
            if let Err(e) = inner.blobs.delete(id).await {
                tracing::warn!(file = %id, error = %e, "cannot delete a refused upload");
            }
        }
    }

    /// Checks that every id names an upload of `user_id`.
    pub async fn check_files(&self, user_id: &str, ids: &[String]) -> Result<(), WsError> {
        let Some(id) = ids.first() else {
            return Ok(());
        };
        let Ok(inner) = self.inner() else {
            return Err(WsError::Invalid(format!("unknown file id {id:?}")));
        };
        for id in ids {
            if inner.store().upload(user_id, id).await?.is_none() {
                return Err(WsError::Invalid(format!("unknown file id {id:?}")));
            }
        }
        Ok(())
    }
}

/// Writes the job's uploaded files into the VM.
pub(crate) async fn place_files(ws: &Inner, vm: &dyn Vm, job: &Job) -> Result<(), WsError> {
    let mut names = Vec::new();
    for id in &job.file_ids {
        let up = ws
            .store()
            .upload(&job.user_id, id)
            .await?
            .ok_or_else(|| WsError::Invalid(format!("unknown file id {id:?}")))?;
        let mut chunks = ws.blobs.get_stream(&up.id).await?;
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let feed = tokio::spawn(async move {
            while let Some(c) = chunks.next().await {
                let c = c.map_err(|e| WsError::Storage(e.chain()))?;
                if tx.write_all(&c).await.is_err() {
                    break; // the agent side failed; it reports why
                }
            }
            Ok::<(), WsError>(())
        });
        let path = format!("/root/{}", up.name);
        let written = vm.write_file(&path, 0o644, Box::new(rx)).await;
        let fed = feed
            .await
            .map_err(|e| WsError::Disk(format!("upload reader: {e}")))?;
        fed?;
        written.map_err(|e| WsError::Disk(format!("writing {path}: {e}")))?;
        names.push(up.name);
    }
    // The same files under /uploads, as one public example expects them,
    // and nothing else: this is where the script starts (see
    // `executor::UPLOADS_DIR`), so an earlier job's uploads in the same
    // workspace must not be picked up by its globs.
    let mut script = String::from("set -e; rm -rf /uploads; mkdir -p /uploads");
    for n in &names {
        script.push_str(&format!(" && cp -f -- '/root/{n}' '/uploads/{n}'"));
    }
    let mut p = vm
        .run(bash(&script, &BTreeMap::new(), Some(120_000)))
        .await
        .map_err(|e| WsError::Disk(e.to_string()))?;
    loop {
        match p.next_event().await {
            Ok(Some(ProcessEvent::Exited { code: 0, .. })) => return Ok(()),
            Ok(Some(ProcessEvent::Exited { code, .. })) => {
                return Err(WsError::Disk(format!("copying to /uploads exited {code}")))
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(WsError::Disk("copying to /uploads: no exit".into())),
            Err(e) => return Err(WsError::Disk(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn names_are_plain() {
        assert_eq!(clean_name("a/b/data.csv").as_deref(), Some("data.csv"));
        assert_eq!(clean_name("C:\\x\\y z.txt").as_deref(), Some("y_z.txt"));
        assert_eq!(clean_name("it's").as_deref(), Some("it_s"));
        assert_eq!(clean_name(".."), None);
        assert_eq!(clean_name(""), None);
    }
}
