//! `GET /health`, `GET /api/v1/mags-jobs/usage`,
//! `GET /api/v1/mags-jobs/pool-status`, `GET /api/v1/whoami`.

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use mags_api::{Health, PoolStatus, UsageResponse, WhoAmI};
use mags_store::clock;
use serde::Deserialize;

/// `GET /health` (no authentication).
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Query of the usage endpoint.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    window_days: Option<u32>,
}

/// `GET /mags-jobs/usage?window_days=30`.
pub async fn usage(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageResponse>, ApiError> {
    let days = q.window_days.unwrap_or(30).clamp(1, 3650);
    let since = clock::now_ms() - i64::from(days) * 86_400_000;
    let (total_jobs, vm_ms) = state.store.usage(&user.id, since).await?;
    Ok(Json(UsageResponse {
        window_days: days,
        total_jobs,
        vm_seconds: vm_ms as f64 / 1000.0,
    }))
}

/// `GET /mags-jobs/pool-status`: idle warm VMs, VMs running one-shot jobs
/// and persistent sandboxes (sleeping ones are not VMs).
pub async fn pool_status(State(state): State<AppState>, _user: AuthUser) -> Json<PoolStatus> {
    let load = state.scheduler.load();
    let (idle, target) = state.scheduler.idle();
    let (idle, target) = (idle as u32, target as u32);
    let (sandboxes, _sleeping, _) = state.sandboxes.counts();
    let busy = load.busy + sandboxes;
    Json(PoolStatus {
        idle_vms: idle,
        busy_vms: busy,
        total_vms: busy + idle,
        min_pool_size: target,
        max_pool_size: load.max,
        queued_jobs: load.queued,
        accel: state.scheduler.accel(),
    })
}

/// `GET /whoami`: who the token belongs to.
pub async fn whoami(AuthUser(user): AuthUser) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: user.name,
        is_admin: user.is_admin,
    })
}
