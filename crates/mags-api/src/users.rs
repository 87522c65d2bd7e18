//! Users, API tokens and the audit log: `/mags-tokens` (a user's own
//! tokens), `/mags-users` (admin only), `/mags-audit`.
//!
//! A token's secret appears once, in [`CreatedToken`]; every other shape
//! carries only its id and display prefix.

use crate::limits::MAX_AUDIT_LIMIT;
use serde::{Deserialize, Serialize};

/// A token as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenInfo {
    pub id: String,
    /// The first characters of the token (`mags_AbCdEfG`), for recognising it.
    pub prefix: String,
    /// The user it belongs to.
    pub user: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; refreshed at most once a minute.
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

/// Query of `GET /mags-tokens`: a page of a user's tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenListQuery {
    /// Another user's tokens (admin only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Skip this many tokens first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many tokens (default and largest: 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::MAX_PAGE_LIMIT))]
    pub limit: Option<u32>,
}

impl TokenListQuery {
    /// Its page.
    pub fn page(&self) -> crate::PageQuery {
        crate::PageQuery {
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// Query of `GET /mags-audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditQuery {
    /// Only this user's events (another user's: admin only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only events since: RFC 3339 or an age (`30m`, `24h`, `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only this action (`auth.fail`, `token.revoke`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// At most this many, the newest (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_AUDIT_LIMIT))]
    pub limit: Option<i64>,
}

/// Body of `GET /mags-tokens` (`total`: all of the user's tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
    pub total: usize,
}

/// Body of `POST /mags-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateTokenRequest {
    /// The user the token is for (admin only; default: the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Answer of `POST /mags-tokens`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedToken {
    /// The token itself; it is stored hashed and cannot be shown again.
    pub token: String,
    pub id: String,
    pub prefix: String,
    pub user: String,
    pub created_at: String,
}

/// Answer of `DELETE /mags-tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RevokedToken {
    pub success: bool,
    pub id: String,
    pub prefix: String,
    pub message: String,
}

/// A user, as `/mags-users` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// Body of `GET /mags-users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserList {
    pub users: Vec<UserInfo>,
    pub total: usize,
}

/// Body of `POST /mags-users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateUserRequest {
    /// 1-64 of letters, digits, `-`, `_`, `.`, `@`, not starting with `.`
    /// or `-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_@][A-Za-z0-9_@.-]{0,63}$"))]
    pub name: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: String,
    /// RFC 3339.
    pub time: String,
    /// Who did it: a user name, or none for the server operator (`magsd`)
    /// and unknown tokens.
    pub user: Option<String>,
    pub user_id: Option<String>,
    /// Display prefix of the token used (never the token).
    pub token_prefix: Option<String>,
    /// `kind.verb`: `auth.fail`, `token.create`, `token.revoke`, `user.add`,
    /// `user.remove`, `access.url`, `access.ssh`, `ssh.open`, `ssh.close`,
    /// `ssh.refuse`, `tty.open`, `browser.session`, `job.stop`, `job.delete`,
    /// `workspace.delete`, `cron.delete`, `alias.delete`, `audit.dropped`.
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub detail: Option<String>,
    pub source_ip: Option<String>,
}

/// Body of `GET /mags-audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditList {
    /// Oldest first; the newest `limit` matching events.
    pub events: Vec<AuditEntry>,
    pub total: usize,
}

/// What an audit event records (`kind.verb` on the wire and in the
/// database); the one list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A request with a missing, unknown or revoked token.
    AuthFail,
    TokenCreate,
    TokenRevoke,
    UserAdd,
    UserRemove,
    /// A public URL (or its alias) opened for a sandbox port.
    AccessUrl,
    /// An SSH key issued for a sandbox.
    AccessSsh,
    SshOpen,
    SshClose,
    /// An SSH key that opens nothing.
    SshRefuse,
    /// A terminal WebSocket opened.
    TtyOpen,
    BrowserSession,
    JobStop,
    JobDelete,
    WorkspaceDelete,
    CronDelete,
    AliasDelete,
    /// Refusals over the per-minute bound, counted in one event.
    AuditDropped,
}

impl AuditAction {
    /// Every action, in the order the API documents them.
    pub const ALL: [AuditAction; 18] = [
        AuditAction::AuthFail,
        AuditAction::TokenCreate,
        AuditAction::TokenRevoke,
        AuditAction::UserAdd,
        AuditAction::UserRemove,
        AuditAction::AccessUrl,
        AuditAction::AccessSsh,
        AuditAction::SshOpen,
        AuditAction::SshClose,
        AuditAction::SshRefuse,
        AuditAction::TtyOpen,
        AuditAction::BrowserSession,
        AuditAction::JobStop,
        AuditAction::JobDelete,
        AuditAction::WorkspaceDelete,
        AuditAction::CronDelete,
        AuditAction::AliasDelete,
        AuditAction::AuditDropped,
    ];

    /// The `kind.verb` name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::AuthFail => "auth.fail",
            AuditAction::TokenCreate => "token.create",
            AuditAction::TokenRevoke => "token.revoke",
            AuditAction::UserAdd => "user.add",
            AuditAction::UserRemove => "user.remove",
            AuditAction::AccessUrl => "access.url",
            AuditAction::AccessSsh => "access.ssh",
            AuditAction::SshOpen => "ssh.open",
            AuditAction::SshClose => "ssh.close",
            AuditAction::SshRefuse => "ssh.refuse",
            AuditAction::TtyOpen => "tty.open",
            AuditAction::BrowserSession => "browser.session",
            AuditAction::JobStop => "job.stop",
            AuditAction::JobDelete => "job.delete",
            AuditAction::WorkspaceDelete => "workspace.delete",
            AuditAction::CronDelete => "cron.delete",
            AuditAction::AliasDelete => "alias.delete",
            AuditAction::AuditDropped => "audit.dropped",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod audit_action_tests {
    use super::*;

    /// The API's description of `action` names every action, in order, so
    /// a new one cannot be left out of the documented list.
    #[test]
    fn the_documented_list_is_every_action() {
        let schema = serde_json::to_value(schemars::schema_for!(AuditEntry)).expect("schema");
        let doc = schema["properties"]["action"]["description"]
            .as_str()
            .expect("action has a description");
        let listed: Vec<&str> = doc
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| *w != "kind.verb")
            .collect();
        let all: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(listed, all, "AuditEntry.action's doc lists: {doc}");
    }
}
