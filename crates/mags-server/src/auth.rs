//! Bearer-token authentication for every `/api/v1` route.
//!
//! The token is looked up by its SHA-256 on every request, so a revoked
//! token (or a removed user's) stops working at the next request; the
//! request then carries the [`AuthUser`] and the [`Caller`]. A missing,
//! unknown or revoked token is a 401 before any handler runs, so it has
//! no side effect but an `auth.fail` audit event (with the token's display
//! prefix when it looks like one of ours, never the token). Tokens are
//! never logged.

use crate::audit::{source_ip, Caller};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use mags_api::AuditAction;
use mags_store::{display_prefix, NewAuditEvent, User};

/// The user whose token authenticated the request.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

/// Middleware: authenticates, or answers 401.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = source_ip(req.extensions());
    let Some(token) = bearer(req.headers()) else {
        refused(&state, None, ip, "no bearer token", req.uri().path()).await;
        return Err(ApiError::Unauthorized);
    };
    let Some(auth) = state.store.authenticate(token).await? else {
        refused(&state, Some(token), ip, "", req.uri().path()).await;
        return Err(ApiError::Unauthorized);
    };
    req.extensions_mut().insert(Caller {
        user: auth.user,
        token_id: auth.token_id,
        token_prefix: auth.token_prefix,
        source_ip: ip,
    });
    Ok(next.run(req).await)
}

/// Records a refused request: a revoked token names its user; an unknown
/// one only its display prefix (if it has the shape of ours).
async fn refused(state: &AppState, token: Option<&str>, ip: Option<String>, why: &str, path: &str) {
    let mut event = NewAuditEvent::new(AuditAction::AuthFail);
    let mut why = why.to_string();
    if let Some(token) = token {
        match state.store.revoked_token(token).await {
            Ok(Some(t)) => {
                event = event.by_user(&t.user_id, Some(&t.user_name));
                event.token_id = Some(t.id);
                event.token_prefix = Some(t.prefix);
                why = "revoked token".into();
            }
            Ok(None) => {
                event.token_prefix = display_prefix(token);
                why = "unknown token".into();
            }
            Err(e) => tracing::warn!(error = %e, "cannot look up a refused token"),
        }
    }
    event.source_ip = ip;
    state
        .audit
        .record_refusal(event.detail(format!("{why} for {path}")))
        .await;
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(AuthUser(
            Caller::from_request_parts(parts, state).await?.user,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn parses_bearer_tokens() {
        assert_eq!(bearer(&headers("Bearer mags_x")), Some("mags_x"));
        assert_eq!(bearer(&headers("bearer  mags_x ")), Some("mags_x"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
