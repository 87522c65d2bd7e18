//! Files magsd leaves for its local user: the token file
//! (`--local-token-file`) and the server file (`--server-file`). Both are
//! written atomically (temp file + rename) so a reader never sees half.

use mags_api::ServerFile;
use mags_store::{Store, StoreError};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Errors writing or reading these files.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` with `mode`, atomically.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Makes sure `path` holds a token of user `admin` that this database
/// knows. A missing file gets a new token (mode 0600); an existing one
/// whose token the database does not know (say, it was wiped) is adopted;
/// one whose token was revoked is replaced.
pub async fn ensure_local_token(store: &Store, path: &Path) -> Result<(), FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            // A revoked token is not adopted again: the file gets a new one.
            let revoked = !token.is_empty() && store.revoked_token(token).await?.is_some();
            if !token.is_empty() && !revoked && store.authenticate(token).await?.is_none() {
                let admin = store.ensure_user("admin", true).await?;
                store.add_token(&admin.id, token).await?;
                tracing::info!(file = %path.display(), "registered the token of the local token file");
            }
            if !token.is_empty() && !revoked {
                return Ok(());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let admin = store.ensure_user("admin", true).await?;
    let (_, token) = store.create_token(&admin.id).await?;
    write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
    tracing::info!(file = %path.display(), "wrote a new local token");
    Ok(())
}

/// Writes the server file for a server listening at `url`.
pub fn write_server_file(path: &Path, url: &str) -> Result<(), FileError> {
    let body = ServerFile {
        url: url.to_string(),
        pid: std::process::id(),
    };
    let json = serde_json::to_vec(&body).map_err(|e| io(path)(e.into()))?;
    write_atomic(path, &json, 0o600)
}

/// Removes the server file if it still names this process.
pub fn remove_server_file(path: &Path) {
    let ours = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<ServerFile>(&b).ok())
        .is_some_and(|s| s.pid == std::process::id());
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the server file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/file");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o600).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub"))
                .expect("ls")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn local_token_is_created_once_and_adopted_after_a_wipe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
        ensure_local_token(&store, &file).await.expect("create");
        let token = std::fs::read_to_string(&file)
            .expect("read")
            .trim()
            .to_string();
        assert!(token.starts_with("mags_"));
        ensure_local_token(&store, &file).await.expect("again");
        assert_eq!(std::fs::read_to_string(&file).expect("read").trim(), token);
        let auth = store
            .authenticate(&token)
            .await
            .expect("auth")
            .expect("known");
        assert_eq!(auth.user.name, "admin");

        let other = Store::connect(&format!("sqlite://{}/b.db", dir.path().display()))
            .await
            .expect("fresh store");
        ensure_local_token(&other, &file).await.expect("adopt");
        assert!(other.authenticate(&token).await.expect("auth").is_some());

        // Revoked (say, with `mags token revoke`): replaced, not re-adopted.
        store.revoke_token(&auth.token_id).await.expect("revoke");
        ensure_local_token(&store, &file).await.expect("replace");
        let new = std::fs::read_to_string(&file).expect("read");
        assert_ne!(new.trim(), token);
        assert!(store
            .authenticate(new.trim())
            .await
            .expect("auth")
            .is_some());
        assert!(store.authenticate(&token).await.expect("auth").is_none());
    }
}
