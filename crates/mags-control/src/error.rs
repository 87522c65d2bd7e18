//! [`ControlError`]: any refusal or failure of the control layer, each
//! module's own typed error kept whole (sources included), so an edge maps
//! them in one place (the API: to a status and a JSON body).

use crate::invalid::Invalid;
use crate::quota::QuotaError;
use crate::sandboxes::SandboxError;
use crate::workspaces::WsError;
use mags_store::StoreError;

/// Why the control layer refused or failed a command.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A sandbox that is not there, not live, busy or unreachable.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A workspace or upload that is not there, in use, or storage failing.
    #[error(transparent)]
    Workspace(#[from] WsError),
    /// Over one of the user's limits, or a disk the host cannot hold.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControlError {
    /// Whether this refuses this command only, for something of the
    /// request or the user's state (a cron run is then skipped), rather
    /// than a failure of the server.
    pub fn is_refusal(&self) -> bool {
        match self {
            ControlError::Invalid(_) => true,
            ControlError::Workspace(e) => matches!(
                e,
                WsError::NotFound(_)
                    | WsError::NoBase(_)
                    | WsError::InUse { .. }
                    | WsError::Invalid(_)
            ),
            ControlError::Quota(e) => !matches!(e, QuotaError::Store(_)),
            ControlError::Sandbox(e) => !matches!(
                e,
                SandboxError::Store(_) | SandboxError::Unavailable(_) | SandboxError::Busy(_)
            ),
            ControlError::Store(_) => false,
        }
    }
}
