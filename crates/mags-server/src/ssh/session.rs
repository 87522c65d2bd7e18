//! One SSH connection: authentication by access key, then the session
//! channels and the guest processes behind them (see the module docs of
//! [`super`]).
//!
//! Requests arrive as `russh` handler calls in order, on the connection's
//! task: a channel's `pty-req` and `env` are remembered, `exec`, `shell` or
//! `subsystem` start its process, `data`, `eof`, `window-change` and
//! `signal` go to that process. A task per process sends its output back
//! through the session's [`Handle`], then the exit status, EOF and close.

use super::keys;
use mags_api::AuditAction;
use mags_control::audit::Audit;
use mags_control::executor::{ProcessEvent, ProcessInput, VmProcess};
use mags_control::sandboxes::{Connected, SandboxError, Sandboxes};
use mags_proto::{PtySpec, RunSpec};
use mags_store::{NewAuditEvent, SshKeyOwner, Store};
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, Session};
use russh::server::{Handler, VerifiedPublicKey};
use russh::{Channel, ChannelId, Pty, Sig};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// The guest's SFTP server (Debian's `openssh-sftp-server`).
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
/// SIGHUP: what a process gets when its session's channel goes away.
const SIGHUP: i32 = 1;
/// Exit status reported when the gateway itself failed the command.
const FAILED: u32 = 255;

/// Makes one [`Conn`] per accepted connection.
pub(super) struct Gateway {
    store: Store,
    sandboxes: Sandboxes,
    audit: Audit,
}

impl Gateway {
    pub(super) fn new(store: Store, sandboxes: Sandboxes, audit: Audit) -> Gateway {
        Gateway {
            store,
            sandboxes,
            audit,
        }
    }
}

impl russh::server::Server for Gateway {
    type Handler = Conn;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Conn {
        Conn {
            store: self.store.clone(),
            sandboxes: self.sandboxes.clone(),
            audit: self.audit.clone(),
            peer,
            owner: None,
            sandbox: None,
            channels: HashMap::new(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(%error, "SSH session ended with an error");
    }
}

/// What a session channel has been told so far.
#[derive(Default)]
struct Chan {
    pty: Option<PtySpec>,
    env: BTreeMap<String, String>,
    /// Set once its process runs.
    input: Option<Arc<dyn ProcessInput>>,
}

/// One client connection.
pub(super) struct Conn {
    store: Store,
    sandboxes: Sandboxes,
    audit: Audit,
    peer: Option<SocketAddr>,
    /// The sandbox the verified key opens.
    owner: Option<SshKeyOwner>,
    /// The live sandbox, connected at the first command; keeps it awake.
    sandbox: Option<Arc<Connected>>,
    channels: HashMap<ChannelId, Chan>,
}

impl Drop for Conn {
    /// A dropped connection hangs up on its processes, as sshd does, and
    /// is recorded as closed.
    fn drop(&mut self) {
        let inputs: Vec<Arc<dyn ProcessInput>> =
            self.channels.drain().filter_map(|(_, c)| c.input).collect();
        let closed = self
            .owner
            .take()
            .map(|o| self.event(AuditAction::SshClose, &o));
        if inputs.is_empty() && closed.is_none() {
            return;
        }
        let audit = self.audit.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for i in inputs {
                    let _ = i.signal(SIGHUP).await;
                }
                if let Some(e) = closed {
                    audit.record(e).await;
                }
            });
        }
    }
}

/// What a channel asked to run.
enum Start {
    Exec(String),
    Shell,
    Sftp,
}

impl Conn {
    /// An audit event of this connection on `owner`'s sandbox.
    fn event(&self, action: AuditAction, owner: &SshKeyOwner) -> NewAuditEvent {
        NewAuditEvent {
            source_ip: self.peer.map(|p| p.ip().to_string()),
            ..NewAuditEvent::new(action)
                .by_user(&owner.user_id, None)
                .target("job", &owner.job_id)
        }
    }

    /// The live job a key opens, if it opens one.
    async fn owner_of(&self, key: &russh::keys::PublicKey) -> Option<SshKeyOwner> {
        let fp = keys::fingerprint(key);
        let owner = match self.store.ssh_key_owner(&fp).await {
            Ok(o) => o?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up an SSH key");
                return None;
            }
        };
        match self.store.job(&owner.job_id).await {
            Ok(Some(job)) if !job.status.is_final() => Some(owner),
            _ => None,
        }
    }

    /// The sandbox, connected (and woken) on first use.
    async fn sandbox(&mut self) -> Result<Arc<Connected>, SandboxError> {
        if let Some(s) = &self.sandbox {
            return Ok(s.clone());
        }
        let owner = self
            .owner
            .clone()
            .ok_or_else(|| SandboxError::Unavailable("not authenticated".into()))?;
        let connected = Arc::new(
            self.sandboxes
                .connect(&owner.user_id, &owner.job_id)
                .await?,
        );
        tracing::info!(job = %owner.job_id, peer = ?self.peer, "SSH session attached");
        self.sandbox = Some(connected.clone());
        Ok(connected)
    }

    async fn start(
        &mut self,
        channel: ChannelId,
        what: Start,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if self.input(channel).is_some() {
            // One process per channel, as in sshd.
            return session.channel_failure(channel);
        }
        let handle = session.handle();
        let sandbox = match self.sandbox().await {
            Ok(s) => s,
            Err(e) => {
                session.channel_success(channel)?;
                fail(handle, channel, format!("mags: {e}\r\n"));
                return Ok(());
            }
        };
        let chan = self.channels.entry(channel).or_default();
        let mut env = sandbox.environment.clone();
        env.extend(chan.env.clone());
        let (argv, pty) = match what {
            Start::Exec(cmd) => (vec!["/bin/bash".into(), "-c".into(), cmd], chan.pty.clone()),
            Start::Shell => (vec!["/bin/bash".into(), "-l".into()], chan.pty.clone()),
            Start::Sftp => (vec![SFTP_SERVER.into()], None),
        };
        let spec = RunSpec {
            argv,
            env,
            cwd: Some("/root".into()),
            stdin: true,
            pty,
            ..Default::default()
        };
        match sandbox.vm.run(spec).await {
            Ok(process) => {
                chan.input = Some(process.input());
                session.channel_success(channel)?;
                tokio::spawn(forward(process, handle, channel, sandbox));
            }
            Err(e) => {
                session.channel_success(channel)?;
                fail(handle, channel, format!("mags: cannot start: {e}\r\n"));
            }
        }
        Ok(())
    }

    fn input(&self, channel: ChannelId) -> Option<Arc<dyn ProcessInput>> {
        self.channels.get(&channel).and_then(|c| c.input.clone())
    }
}

/// Tells the client why nothing runs, and ends the channel.
fn fail(handle: Handle, channel: ChannelId, message: String) {
    tokio::spawn(async move {
        let _ = handle.extended_data(channel, 1, message.into_bytes()).await;
        let _ = handle.exit_status_request(channel, FAILED).await;
        let _ = handle.eof(channel).await;
        let _ = handle.close(channel).await;
    });
}

/// Sends a process's output to its channel, then its exit status, EOF and
/// close. Holds the sandbox (awake) until the process ends.
async fn forward(
    mut process: Box<dyn VmProcess>,
    handle: Handle,
    channel: ChannelId,
    _sb: Arc<Connected>,
) {
    let status = loop {
        match process.next_event().await {
            Ok(Some(ProcessEvent::Stdout(b))) => {
                if handle.data(channel, b).await.is_err() {
                    return;
                }
            }
            Ok(Some(ProcessEvent::Stderr(b))) => {
                if handle.extended_data(channel, 1, b).await.is_err() {
                    return;
                }
            }
            Ok(Some(ProcessEvent::Exited { code, .. })) => break code as u32,
            Ok(None) => break FAILED,
            Err(e) => {
                let msg = format!("\r\nmags: the sandbox went away: {e}\r\n");
                let _ = handle.extended_data(channel, 1, msg.into_bytes()).await;
                break FAILED;
            }
        }
    };
    let _ = handle.exit_status_request(channel, status).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

/// The guest's number for an SSH signal name.
fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(_) => return None,
    })
}

/// Environment a client may pass (`SendEnv`): locale only.
fn env_allowed(name: &str) -> bool {
    name == "LANG" || name.starts_with("LC_")
}

impl Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Spare the client a signature with a key that opens nothing.
        Ok(match self.owner_of(offer.public_key).await {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.owner_of(key.public_key).await {
            Some(owner) => {
                tracing::debug!(job = %owner.job_id, peer = ?self.peer, "SSH key accepted");
                let fp = keys::fingerprint(key.public_key);
                let event = self
                    .event(AuditAction::SshOpen, &owner)
                    .detail(format!("key {fp}"));
                self.audit.record(event).await;
                self.owner = Some(owner);
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(peer = ?self.peer, "SSH key refused");
                let fp = keys::fingerprint(key.public_key);
                let mut event =
                    NewAuditEvent::new(AuditAction::SshRefuse).detail(format!("key {fp}"));
                event.source_ip = self.peer.map(|p| p.ip().to_string());
                self.audit.record_refusal(event).await;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Requests and data come through the handler calls; the channel
        // object itself is not read, so it is dropped.
        self.channels.insert(channel.id(), Chan::default());
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        self.channels.entry(channel).or_default().pty = Some(PtySpec {
            rows: clamp(row_height),
            cols: clamp(col_width),
            term: term
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect(),
        });
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if env_allowed(name) && !value.contains('\0') {
            self.channels
                .entry(channel)
                .or_default()
                .env
                .insert(name.to_string(), value.to_string());
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Start::Exec(cmd), session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, Start::Shell, session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.start(channel, Start::Sftp, session).await
        } else {
            session.channel_failure(channel)
        }
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(input) = self.input(channel) {
            let _ = input.write(data).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(input) = self.input(channel) {
            let _ = input.close().await;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        if let Some(input) = self.input(channel) {
            let _ = input.resize(clamp(row_height), clamp(col_width)).await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let (Some(input), Some(n)) = (self.input(channel), signal_number(&signal)) {
            let _ = input.signal(n).await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A process still running loses its terminal or pipes: hang up.
        if let Some(input) = self.channels.remove(&channel).and_then(|c| c.input) {
            let _ = input.signal(SIGHUP).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_locale_variables_pass() {
        assert!(env_allowed("LANG"));
        assert!(env_allowed("LC_ALL"));
        assert!(!env_allowed("LD_PRELOAD"));
        assert!(!env_allowed("PATH"));
    }

    #[test]
    fn signals_map_to_guest_numbers() {
        assert_eq!(signal_number(&Sig::INT), Some(2));
        assert_eq!(signal_number(&Sig::KILL), Some(9));
        assert_eq!(signal_number(&Sig::Custom("WINCH".into())), None);
    }
}
