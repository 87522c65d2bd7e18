//! `magsd`, the Mags control plane, as a library (the binary is thin).
//!
//! - [`routes`]: the axum router (`/health`, `/api/v1/...`), with
//!   [`auth`] (bearer tokens) and [`error`] (the one error -> HTTP mapping).
//! - [`scheduler`]: runs accepted jobs with a concurrency limit through an
//!   [`executor::Executor`] ([`executor::vm`] for real, [`executor::fake`]
//!   for tests), writing output through [`sink`].
//! - [`logs`], [`view`]: how stored output and jobs look on the wire.
//! - [`config`], [`serve`]: settings and the start-up sequence;
//!   [`files`]: the local token and server files; [`doctor`]: host checks.

pub mod auth;
pub mod config;
pub mod doctor;
pub mod error;
pub mod executor;
pub mod files;
pub mod logs;
pub mod routes;
pub mod scheduler;
pub mod serve;
pub mod sink;
pub mod view;

use mags_store::Store;
use scheduler::Scheduler;
use sink::Followers;
use tokio::sync::watch;

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub scheduler: Scheduler,
    pub followers: Followers,
    /// Becomes `true` when the server shuts down (ends output streams).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State around `store` and an executor, running at most `max_vms` jobs
    /// at once. Returns the sender that signals shutdown.
    pub fn new(
        store: Store,
        executor: std::sync::Arc<dyn executor::Executor>,
        max_vms: u32,
    ) -> (AppState, watch::Sender<bool>) {
        let followers = Followers::default();
        let scheduler = Scheduler::new(store.clone(), executor, followers.clone(), max_vms);
        let (tx, rx) = watch::channel(false);
        (
            AppState {
                store,
                scheduler,
                followers,
                shutdown: rx,
            },
            tx,
        )
    }
}

pub use routes::router;
