//! `magsd`'s edges, as a library (the binary is thin): how what
//! [`mags_control`] does is reached.
//!
//! - [`routes`]: the axum router (`/health`, `/api/v1/...`), with
//!   [`auth`] (bearer tokens, the [`audit::Caller`] extractor) and
//!   [`error`] (the one error -> HTTP mapping).
//! - [`ssh`]: the SSH gateway (`ssh`/`scp`/`sftp` into a sandbox with the
//!   key `/access` gives).
//! - [`proxy`]: the URL proxy (Host `<sub>.<apps domain>` -> a port in a
//!   sandbox, through the agent's tunnel).
//! - [`relay`]: requests for a sandbox another host runs, relayed to it
//!   (signed with the cluster secret, to its internal listener).
//! - [`logs`], [`view`]: how stored output and records look on the wire
//!   (`/logs` is streamed in bounded memory).
//! - [`config`], [`serve`], [`tls`]: settings, the start-up sequence and
//!   HTTPS; [`doctor`]: host checks; [`openapi`]: the API's document.

pub mod audit;
pub mod auth;
pub mod config;
pub mod doctor;
pub mod error;
pub mod logs;
pub mod openapi;
pub mod proxy;
pub mod relay;
pub mod routes;
pub mod serve;
pub mod ssh;
pub mod tls;
pub mod view;

use mags_control::Control;
use std::ops::Deref;

/// What every handler can reach: the control layer and, when it runs, the
/// SSH gateway's endpoint. Built once, complete, before the router gets
/// it; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub control: Control,
    /// The SSH gateway, when it runs: what `/access` with port 22 returns.
    pub ssh: Option<ssh::SshEndpoint>,
    /// With a cluster secret: requests for sandboxes of other hosts are
    /// relayed to them ([`relay`]).
    pub relay: Option<relay::Relay>,
}

impl AppState {
    /// The state of a server without an SSH gateway or relaying.
    pub fn new(control: Control) -> AppState {
        AppState {
            control,
            ssh: None,
            relay: None,
        }
    }
}

/// Handlers reach the control layer's parts (`state.store`,
/// `state.sandboxes`, ...) through the state directly.
impl Deref for AppState {
    type Target = Control;

    fn deref(&self) -> &Control {
        &self.control
    }
}

pub use routes::{apps_router, internal_router, router};
