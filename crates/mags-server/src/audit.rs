//! Who made a request, for the audit log: the [`Caller`] extractor, the
//! peer address, and [`Caller::done`], which records an action through the
//! audit writer ([`mags_control::audit::Audit`]).

use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use mags_api::AuditAction;
use mags_control::audit::Audit;
use mags_store::{NewAuditEvent, User};
use std::net::SocketAddr;

/// Who made an authenticated request: what the audit log records.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub token_id: String,
    pub token_prefix: String,
    pub source_ip: Option<String>,
}

impl Caller {
    /// An event of `action` done by this caller.
    pub fn event(&self, action: AuditAction) -> NewAuditEvent {
        NewAuditEvent {
            token_id: Some(self.token_id.clone()),
            token_prefix: Some(self.token_prefix.clone()),
            source_ip: self.source_ip.clone(),
            ..NewAuditEvent::new(action).by_user(&self.user.id, Some(&self.user.name))
        }
    }

    /// Records this caller's `action` on `target` (kind, id), with `detail`.
    pub async fn done(
        &self,
        audit: &Audit,
        action: AuditAction,
        target: (&str, &str),
        detail: Option<String>,
    ) {
        let mut event = self.event(action).target(target.0, target.1);
        event.detail = detail;
        audit.record(event).await;
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// The peer address of a request, when the server was started with
/// connection info (in-process tests have none).
pub fn source_ip(parts: &axum::http::Extensions) -> Option<String> {
    parts
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}
