//! The caller's API tokens (`/mags-tokens`) and audit events (`/mags-audit`).

use crate::{seg, Client, ClientError};
use mags_api::{AuditList, CreateTokenRequest, CreatedToken, RevokedToken, TokenList};
use reqwest::Method;

impl Client {
    /// `GET /mags-tokens`: the caller's tokens (never their secrets).
    pub async fn list_tokens(&self) -> Result<TokenList, ClientError> {
        self.json(self.request(Method::GET, "/mags-tokens")).await
    }

    /// `POST /mags-tokens`: a new token for the caller, shown once.
    pub async fn create_token(&self) -> Result<CreatedToken, ClientError> {
        let req = CreateTokenRequest::default();
        self.json(self.request(Method::POST, "/mags-tokens").json(&req))
            .await
    }

    /// `DELETE /mags-tokens/{id}` (id or a prefix naming one token).
    pub async fn revoke_token(&self, id: &str) -> Result<RevokedToken, ClientError> {
        let path = format!("/mags-tokens/{}", seg(id));
        self.json(self.request(Method::DELETE, &path)).await
    }

    /// `GET /mags-audit?since=&limit=`: the caller's audit events.
    pub async fn audit(&self, since: Option<&str>, limit: u32) -> Result<AuditList, ClientError> {
        let mut req = self
            .request(Method::GET, "/mags-audit")
            .query(&[("limit", limit.to_string())]);
        if let Some(s) = since {
            req = req.query(&[("since", s)]);
        }
        self.json(req).await
    }
}
