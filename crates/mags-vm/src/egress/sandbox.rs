//! Per-sandbox egress rules: `egress.json` in the sandbox's dir.

use super::{EgressPolicy, Rule};
use std::path::Path;

/// File name in the sandbox dir.
const FILE: &str = "egress.json";

/// A job's own egress rules; they only ever narrow the server's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxEgress {
    /// Nothing is reachable (`--no-internet`).
    #[serde(default)]
    pub no_internet: bool,
    /// Extra denied destinations (CIDRs or hostnames, as `--egress-deny`).
    #[serde(default)]
    pub deny: Vec<String>,
}

impl SandboxEgress {
    /// Whether these rules change anything.
    pub fn is_empty(&self) -> bool {
        !self.no_internet && self.deny.is_empty()
    }

    /// The rules of sandbox `id` under `sandboxes`, if it has any. Ids
    /// that are not plain names are never looked up.
    pub fn load(sandboxes: &Path, id: &str) -> Option<SandboxEgress> {
        let plain = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return None;
        }
        let bytes = std::fs::read(sandboxes.join(id).join(FILE)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(e) => Some(e),
            Err(e) => {
                // Unreadable rules must not mean "no rules".
                tracing::warn!(sandbox = id, error = %e, "bad egress.json; denying all egress");
                Some(SandboxEgress {
                    no_internet: true,
                    deny: Vec::new(),
                })
            }
        }
    }

    /// Writes the rules into a sandbox dir (atomically).
    pub fn write(&self, sandbox_dir: &Path) -> std::io::Result<()> {
        let tmp = sandbox_dir.join(format!("{FILE}.tmp"));
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, sandbox_dir.join(FILE))
    }

    /// `server` narrowed by these rules.
    pub fn narrow(&self, server: &EgressPolicy) -> EgressPolicy {
        let mut p = server.clone();
        if self.no_internet {
            p.allow.clear();
            p.allow_only = true;
        }
        p.deny
            .extend(self.deny.iter().filter_map(|d| d.parse::<Rule>().ok()));
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_internet_denies_everything_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("pool-1");
        std::fs::create_dir_all(&sb).unwrap();
        assert_eq!(SandboxEgress::load(dir.path(), "pool-1"), None);
        let rules = SandboxEgress {
            no_internet: true,
            deny: vec![],
        };
        rules.write(&sb).unwrap();
        assert_eq!(
            SandboxEgress::load(dir.path(), "pool-1"),
            Some(rules.clone())
        );
        assert_eq!(SandboxEgress::load(dir.path(), "../pool-1"), None);

        let server = EgressPolicy {
            allow: vec!["10.1.2.3/32".parse().unwrap()],
            ..EgressPolicy::default()
        };
        let ip: std::net::IpAddr = "93.184.216.34".parse().unwrap();
        assert!(server.check("example.org", ip).is_ok());
        let narrowed = rules.narrow(&server);
        assert!(narrowed.check_host("example.org").is_err());
        assert!(narrowed.check("example.org", ip).is_err());
        assert!(
            narrowed.check("x", "10.1.2.3".parse().unwrap()).is_err(),
            "the server's allow list does not reopen it"
        );

        std::fs::write(sb.join(FILE), b"{not json").unwrap();
        assert!(
            SandboxEgress::load(dir.path(), "pool-1")
                .unwrap()
                .no_internet
        );
    }

    #[test]
    fn extra_denials_add_to_the_server_policy() {
        let rules = SandboxEgress {
            no_internet: false,
            deny: vec!["example.org".into()],
        };
        let p = rules.narrow(&EgressPolicy::default());
        assert!(p.check_host("example.org").is_err());
        assert!(p.check_host("example.com").is_ok());
    }
}
