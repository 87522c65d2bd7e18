//! Keys of the SSH gateway: the server's host key (made once, kept in the
//! data dir) and the per-sandbox access keys handed out by `/access`.
//!
//! An access key is a fresh ed25519 pair: the private half goes to the
//! caller in OpenSSH format and is never stored or logged; the public
//! half is kept only as its SHA-256 fingerprint (`SHA256:...`, as
//! `ssh-keygen -l` prints it), enough to recognise a verified key.

use rand::RngCore as _;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot encode an SSH key: {0}")]
    Encode(String),
    #[error("cannot read the SSH host key {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write the SSH host key {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A new access key: the private key for the caller and the fingerprint
/// to store.
pub struct AccessKey {
    pub private_openssh: String,
    pub fingerprint: String,
}

fn random_ed25519(comment: &str) -> PrivateKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    key.set_comment(comment);
    key
}

/// The fingerprint a public key is stored and looked up by.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A fresh ed25519 access key.
pub fn new_access_key(comment: &str) -> Result<AccessKey, KeyError> {
    let key = random_ed25519(comment);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?
        .to_string();
    Ok(AccessKey {
        private_openssh,
        fingerprint: fingerprint(key.public_key()),
    })
}

/// The host key at `path`, made (mode 0600) if missing.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| KeyError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_ed25519("magsd host key");
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| KeyError::Encode(e.to_string()))?;
            let write = |source| KeyError::Write {
                path: path.to_path_buf(),
                source,
            };
            // A temporary name, then rename: a crash never leaves half a key.
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(write)?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(write)?;
            std::fs::rename(&tmp, path).map_err(write)?;
            tracing::info!(path = %path.display(), fingerprint = %fingerprint(key.public_key()), "made the SSH host key");
            Ok(key)
        }
        Err(e) => Err(KeyError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_are_openssh_ed25519_and_distinct() {
        let a = new_access_key("t").expect("key");
        let b = new_access_key("t").expect("key");
        assert!(a
            .private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_ne!(a.fingerprint, b.fingerprint);
        let parsed = PrivateKey::from_openssh(a.private_openssh.as_bytes()).expect("parses");
        assert_eq!(fingerprint(parsed.public_key()), a.fingerprint);
        assert!(a.fingerprint.starts_with("SHA256:"), "{}", a.fingerprint);
    }

    #[test]
    fn the_host_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ssh_host_ed25519_key");
        let first = load_or_create_host_key(&path).expect("create");
        let again = load_or_create_host_key(&path).expect("load");
        assert_eq!(first.public_key(), again.public_key());
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
