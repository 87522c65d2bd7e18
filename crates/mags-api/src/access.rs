//! Public URLs: `POST /mags-jobs/{id}/access` and `/mags-url-aliases`.

use serde::{Deserialize, Serialize};

/// Body of `POST /mags-jobs/{id}/access`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccessRequest {
    /// The guest port to expose; 22 asks for SSH access.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    8080
}

/// Answer of `POST /mags-jobs/{id}/access` (URL access).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccessResponse {
    pub success: bool,
    /// `http://<subdomain>.<apps domain>[:port]`; use this, not the subdomain.
    pub url: String,
    pub port: u16,
    pub subdomain: String,
}

/// Body of `POST /mags-url-aliases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateAliasRequest {
    pub subdomain: String,
    pub workspace_id: String,
    /// Ignored: the server's apps domain is used.
    #[serde(default)]
    pub domain: Option<String>,
}

/// One URL alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AliasInfo {
    pub id: String,
    pub subdomain: String,
    pub url: String,
    pub workspace_id: String,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// Answer of `GET /mags-url-aliases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AliasList {
    pub aliases: Vec<AliasInfo>,
    pub total: usize,
}

/// Whether `s` can be a subdomain label: 1-63 of `a-z0-9-`, not starting
/// or ending with `-`.
pub fn valid_subdomain(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_rules() {
        assert!(valid_subdomain("my-app1"));
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!valid_subdomain(bad), "{bad}");
        }
        let req: AccessRequest = serde_json::from_str("{}").expect("default port");
        assert_eq!(req.port, 8080);
    }
}

/// Body of `POST /mags-browser`: start (or find) a browser session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BrowserRequest {
    /// The session's job name; a live browser job of this name is reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Answer of `POST /mags-browser`: where a CDP client connects. Every URL
/// carries the session's secret in its path (the proxy refuses CDP
/// requests without it, or without the owner's bearer token), so treat
/// them like a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BrowserSession {
    pub success: bool,
    /// The job behind the session (`mags stop` ends it).
    pub request_id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: String,
    pub subdomain: String,
    /// The browser's DevTools WebSocket (`ws(s)://.../devtools/browser/<id>`).
    #[serde(rename = "cdpUrl")]
    pub cdp_url: String,
    /// `http(s)://.../json/version` (what `connect_over_cdp` also accepts).
    #[serde(rename = "cdpHttpUrl")]
    pub cdp_http_url: String,
    /// The same WebSocket as `cdpUrl`, under the name Playwright uses.
    #[serde(rename = "wsEndpoint")]
    pub ws_endpoint: String,
}
