//! The SSH gateway: a plain OpenSSH client (`ssh`, `scp`, `sftp`) reaches
//! a live sandbox with the key `POST /mags-jobs/{id}/access {"port": 22}`
//! handed out.
//!
//! One listener per server (`--ssh-listen`), speaking SSH with `russh`.
//! Public-key authentication only: the verified key's fingerprint names
//! the sandbox ([`keys`], stored by `mags-store`), and a key whose job has
//! ended is refused. A session then goes through the same seam as
//! everything that needs the guest itself, [`Sandboxes::connect`]: it
//! checks ownership, wakes a sleeping sandbox and keeps it awake while the
//! connection lasts. What each channel runs ([`session`]):
//! - `exec CMD`: `bash -c CMD` in `/root`, stdout and stderr apart, the
//!   exit status returned; with `pty-req` first, on a terminal.
//! - `shell`: `bash -l`, on a terminal if one was asked for (`window-change`
//!   resizes it), else reading commands from stdin.
//! - `subsystem sftp`: the guest's own `sftp-server` over stdin/stdout,
//!   so `sftp` and `scp` (SFTP by default since OpenSSH 9) work.
//!
//! Sessions are in the audit log: `ssh.open` when a key is accepted,
//! `ssh.close` when the connection ends, `ssh.refuse` for a verified key
//! that opens nothing (rate-bounded like other refusals).
//!
//! The host key is made once and kept in the data dir
//! (`ssh_host_ed25519_key`), or where `--ssh-host-key` says: every host of
//! a cluster given the same key shows one fingerprint. No private key or token is ever logged.

pub mod keys;
mod session;

use mags_control::audit::Audit;
use mags_control::sandboxes::Sandboxes;
use mags_store::Store;
use russh::server::Server as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where the gateway listens and what `/access` tells clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// Host name to give clients, when set (`--ssh-host`); otherwise the
    /// bound address, or the host the client reached the API at when
    /// bound to all interfaces.
    pub public_host: Option<String>,
}

impl SshEndpoint {
    /// The host a client should connect to, given the `Host` header of
    /// its API request.
    pub fn host_for(&self, api_host: Option<&str>) -> String {
        if let Some(h) = &self.public_host {
            return h.clone();
        }
        if !self.addr.ip().is_unspecified() {
            return self.addr.ip().to_string();
        }
        api_host
            .map(strip_port)
            .filter(|h| !h.is_empty())
            .unwrap_or("127.0.0.1")
            .to_string()
    }
}

/// `host` of `host:port`, `[v6]:port` or a bare host.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("cannot listen for SSH on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway; [`SshGateway::shutdown`] disconnects everyone.
pub struct SshGateway {
    pub endpoint: SshEndpoint,
    handle: russh::server::RunningServerHandle,
}

impl SshGateway {
    /// Binds `listen`, loads (or makes) the host key at `host_key` and
    /// serves in the background.
    pub async fn start(
        listen: &str,
        public_host: Option<String>,
        host_key: &Path,
        store: Store,
        sandboxes: Sandboxes,
        audit: Audit,
    ) -> Result<SshGateway, SshError> {
        let host_key = keys::load_or_create_host_key(host_key)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SshError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SshError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let config = Arc::new(russh::server::Config {
            keys: vec![host_key],
            methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
            // Wrong keys wait a little; OpenSSH's first "none" probe does not.
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            ..Default::default()
        });
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut server = session::Gateway::new(store, sandboxes, audit);
            let running = server.run_on_socket(config, &listener);
            let _ = handle_tx.send(running.handle());
            if let Err(e) = running.await {
                tracing::error!(error = %e, "the SSH gateway stopped");
            }
        });
        let handle = handle_rx.await.map_err(|_| SshError::Bind {
            addr: listen.to_string(),
            source: std::io::Error::other("the SSH gateway task ended at once"),
        })?;
        tracing::info!(%addr, "SSH gateway listening");
        Ok(SshGateway {
            endpoint: SshEndpoint { addr, public_host },
            handle,
        })
    }

    /// Stops accepting and disconnects every session.
    pub fn shutdown(&self) {
        self.handle.shutdown("the server is shutting down".into());
    }
}

/// The address to listen on for `--ssh-listen`: as given, or (when empty)
/// the API's host with a free port.
pub fn listen_addr(ssh_listen: Option<&str>, api_listen: &str) -> String {
    match ssh_listen.map(str::trim).filter(|s| !s.is_empty()) {
        Some(a) => a.to_string(),
        None => {
            let host = match api_listen.rsplit_once(':') {
                Some((h, _)) => h,
                None => "127.0.0.1",
            };
            format!("{host}:0")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_given_to_clients() {
        let bound = |a: &str, public: Option<&str>| SshEndpoint {
            addr: a.parse().expect("addr"),
            public_host: public.map(str::to_string),
        };
        assert_eq!(
            bound("127.0.0.1:2222", None).host_for(Some("x:7070")),
            "127.0.0.1"
        );
        assert_eq!(
            bound("0.0.0.0:2222", None).host_for(Some("box.example:7070")),
            "box.example"
        );
        assert_eq!(
            bound("0.0.0.0:2222", None).host_for(Some("[::1]:7070")),
            "::1"
        );
        assert_eq!(bound("0.0.0.0:2222", None).host_for(None), "127.0.0.1");
        assert_eq!(
            bound("0.0.0.0:2222", Some("ssh.example")).host_for(Some("a:1")),
            "ssh.example"
        );
    }

    #[test]
    fn listens_next_to_the_api_by_default() {
        assert_eq!(listen_addr(None, "127.0.0.1:7070"), "127.0.0.1:0");
        assert_eq!(listen_addr(Some(""), "0.0.0.0:7070"), "0.0.0.0:0");
        assert_eq!(listen_addr(Some("[::]:2222"), "x:1"), "[::]:2222");
        assert_eq!(listen_addr(None, "[::1]:7070"), "[::1]:0");
    }
}
