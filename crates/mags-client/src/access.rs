//! Public URLs: job access, URL aliases and browser sessions.

use crate::{seg, Client, ClientError};
use mags_api::{
    AccessRequest, AccessResponse, AliasInfo, AliasList, BrowserRequest, BrowserSession,
    CreateAliasRequest,
};
use reqwest::Method;

impl Client {
    /// `POST /mags-jobs/{id}/access`: a URL for `port` in the job's
    /// sandbox (use its `url` field: that is where the server serves it).
    pub async fn access(&self, id: &str, port: u16) -> Result<AccessResponse, ClientError> {
        let req = self
            .request(Method::POST, &format!("/mags-jobs/{}/access", seg(id)))
            .json(&AccessRequest { port });
        self.json(req).await
    }

    /// `POST /mags-url-aliases`.
    pub async fn create_alias(
        &self,
        subdomain: &str,
        workspace_id: &str,
    ) -> Result<AliasInfo, ClientError> {
        let body = CreateAliasRequest {
            subdomain: subdomain.into(),
            workspace_id: workspace_id.into(),
            domain: None,
        };
        self.json(self.request(Method::POST, "/mags-url-aliases").json(&body))
            .await
    }

    /// `GET /mags-url-aliases`.
    pub async fn list_aliases(&self) -> Result<AliasList, ClientError> {
        self.json(self.request(Method::GET, "/mags-url-aliases"))
            .await
    }

    /// `DELETE /mags-url-aliases/{subdomain}`.
    pub async fn delete_alias(&self, subdomain: &str) -> Result<(), ClientError> {
        let req = self.request(
            Method::DELETE,
            &format!("/mags-url-aliases/{}", seg(subdomain)),
        );
        self.send(req).await.map(|_| ())
    }

    /// `POST /mags-browser`: starts a browser session (or finds the live
    /// one called `name`) and returns its CDP endpoints once Chromium
    /// answers (tens of seconds on a cold start under TCG).
    pub async fn browser(&self, name: Option<&str>) -> Result<BrowserSession, ClientError> {
        let body = BrowserRequest {
            name: name.map(str::to_string),
        };
        self.json(self.request(Method::POST, "/mags-browser").json(&body))
            .await
    }
}
