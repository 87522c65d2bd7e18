//! [`ControlError`]: any refusal or failure of the control layer, each
//! module's own typed error kept whole (sources included), so an edge maps
//! them in one place (the API: to a status and a JSON body).

use crate::invalid::Invalid;
use crate::jobs::SubmitError;
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

/// A job submission's refusal is one of the others.
impl From<SubmitError> for ControlError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(e) => e.into(),
            SubmitError::Workspace(e) => e.into(),
            SubmitError::Quota(e) => e.into(),
            SubmitError::Store(e) => e.into(),
        }
    }
}
