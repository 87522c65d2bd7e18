//! Per-sandbox egress rules: `egress.json` in the sandbox's dir.

use super::{EgressPolicy, Rule};
use crate::layout::{with_suffix, Layout, SandboxDir};

/// A job's own egress rules; they only ever narrow the server's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxEgress {
    /// Nothing is reachable (`--no-internet`).
    #[serde(default)]
    pub no_internet: bool,
    /// If not empty, the only destinations it may reach (CIDRs or
    /// hostnames); the server's denials still apply.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Extra denied destinations (CIDRs or hostnames, as `--egress-deny`).
    #[serde(default)]
    pub deny: Vec<String>,
}

impl SandboxEgress {
    /// Whether these rules change anything.
    pub fn is_empty(&self) -> bool {
        !self.no_internet && self.allow.is_empty() && self.deny.is_empty()
    }

    /// The rules of sandbox `id` in `layout`, if it has any. Ids that are
    /// not plain names are never looked up.
    pub fn load(layout: &Layout, id: &str) -> Option<SandboxEgress> {
        let bytes = std::fs::read(layout.sandbox_checked(id)?.egress_rules()).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(e) => Some(e),
            Err(e) => {
                // Unreadable rules must not mean "no rules".
                tracing::warn!(sandbox = id, error = %e, "bad egress.json; denying all egress");
                Some(SandboxEgress {
                    no_internet: true,
                    ..SandboxEgress::default()
                })
            }
        }
    }

    /// Writes the rules into a sandbox dir (atomically).
    pub fn write(&self, dir: &SandboxDir) -> std::io::Result<()> {
        let path = dir.egress_rules();
        let tmp = with_suffix(&path, ".tmp");
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
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
        let allow: Vec<Rule> = self.allow.iter().filter_map(|a| a.parse().ok()).collect();
        if !self.allow.is_empty() && allow.is_empty() {
            // A list none of whose entries parse must not mean "no list".
            p.allow.clear();
            p.allow_only = true;
        }
        p.limit_to.extend(allow);
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
        let layout = Layout::new(dir.path());
        let sb = layout.sandbox("pool-1");
        std::fs::create_dir_all(sb.path()).unwrap();
        assert_eq!(SandboxEgress::load(&layout, "pool-1"), None);
        let rules = SandboxEgress {
            no_internet: true,
            ..SandboxEgress::default()
        };
        rules.write(&sb).unwrap();
        assert_eq!(SandboxEgress::load(&layout, "pool-1"), Some(rules.clone()));
        assert_eq!(SandboxEgress::load(&layout, "../pool-1"), None);

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

        std::fs::write(sb.egress_rules(), b"{not json").unwrap();
        assert!(SandboxEgress::load(&layout, "pool-1").unwrap().no_internet);
    }

    #[test]
    fn extra_denials_add_to_the_server_policy() {
        let rules = SandboxEgress {
            deny: vec!["example.org".into()],
            ..SandboxEgress::default()
        };
        let p = rules.narrow(&EgressPolicy::default());
        assert!(p.check_host("example.org").is_err());
        assert!(p.check_host("example.com").is_ok());
    }

    #[test]
    fn an_allow_list_limits_the_sandbox_but_never_reopens_a_denial() {
        let rules = SandboxEgress {
            allow: vec!["pypi.org".into(), "10.9.0.0/16".into()],
            ..SandboxEgress::default()
        };
        let public: std::net::IpAddr = "151.101.0.223".parse().unwrap();
        let p = rules.narrow(&EgressPolicy::default());
        assert!(p.check("pypi.org", public).is_ok());
        assert!(
            p.check("files.pypi.org", public).is_ok(),
            "subdomains match"
        );
        let other = p.check("example.com", "93.184.216.34".parse().unwrap());
        assert!(other.unwrap_err().why.contains("allow list"));
        assert!(
            p.check("x", "10.9.1.1".parse().unwrap()).is_err(),
            "a private range stays denied though the job listed it"
        );
        let server = EgressPolicy {
            deny: vec!["pypi.org".parse().unwrap()],
            ..EgressPolicy::default()
        };
        assert!(
            rules.narrow(&server).check("pypi.org", public).is_err(),
            "the server's deny list wins"
        );
        let garbage = SandboxEgress {
            allow: vec!["not a rule!".into()],
            ..SandboxEgress::default()
        };
        assert!(garbage
            .narrow(&EgressPolicy::default())
            .check("pypi.org", public)
            .is_err());
    }
}
