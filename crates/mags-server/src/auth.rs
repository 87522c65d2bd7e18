//! Bearer-token authentication for every `/api/v1` route.
//!
//! The token is looked up by its SHA-256; the request then carries the
//! [`AuthUser`]. A missing, unknown or revoked token is a 401 before any
//! handler runs, so it has no side effect. Tokens are never logged.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use mags_store::User;

/// The user whose token authenticated the request.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

/// Middleware: authenticates, or answers 401.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
    let auth = state
        .store
        .authenticate(token)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    req.extensions_mut().insert(AuthUser(auth.user));
    Ok(next.run(req).await)
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

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthUser>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
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
