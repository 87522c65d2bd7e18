//! Which destinations a sandbox may reach ([`EgressPolicy`]).
//!
//! Decided per connection on the host, after the host resolved the name,
//! and the connection is made to exactly the address that was checked (no
//! second lookup a DNS rebinding could exploit). Order: an explicit deny
//! (hostname or CIDR, also matching the IPv4 address an IPv6 one embeds)
//! wins; then a job's own allow list must match (it only narrows); then an
//! operator's explicit allow (`--egress-allow`) opens what it names; then
//! the built-in denials: every network this host is attached to (whole
//! prefixes, see [`HostNets`]) and the special-purpose ranges of
//! [`special`], with NAT64/6to4/Teredo/IPv4-compatible/IPv4-mapped
//! addresses judged by the IPv4 address inside; the rest is allowed.

use super::hostnets::HostNets;
use super::special::{self, Net};
use std::net::IpAddr;

/// One allow/deny entry: a CIDR (`10.1.0.0/16`, `2001:db8::/32`, a bare
/// address) or a hostname (`example.com` matches it and its subdomains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Net(IpAddr, u8),
    Host(String),
}

impl std::str::FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
            };
            return Ok(Rule::Net(ip, prefix));
        }
        let host = s
            .trim_start_matches("*.")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let valid = !host.is_empty()
            && prefix.is_none()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!("{s:?} is neither a CIDR nor a hostname"));
        }
        Ok(Rule::Host(host))
    }
}

impl Rule {
    fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Rule::Net(net, prefix) => Net::new(canonical(*net), *prefix).contains(canonical(ip)),
            Rule::Host(_) => false,
        }
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(h) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host == *h || host.ends_with(&format!(".{h}"))
            }
            Rule::Net(..) => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `ip` and the IPv4 addresses it embeds (NAT64, 6to4, Teredo, ...).
fn with_embedded(ip: IpAddr) -> Vec<IpAddr> {
    let mut all = vec![canonical(ip)];
    if let IpAddr::V6(v6) = ip {
        all.extend(special::embedded_v4(v6).1.into_iter().map(IpAddr::V4));
    }
    all
}

/// The rules in force; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Reachable even if a built-in rule says otherwise.
    pub allow: Vec<Rule>,
    /// Never reachable.
    pub deny: Vec<Rule>,
    /// The networks this host is attached to (denied, whole prefixes);
    /// see [`HostNets`].
    pub host_nets: HostNets,
    /// Only `allow` is reachable (everything else denied).
    pub allow_only: bool,
    /// A job's own allow list: if not empty, a destination must match one
    /// of these as well as pass every other rule (it never reopens what
    /// the server denies).
    pub limit_to: Vec<Rule>,
}

/// Why a destination was refused, for the sandbox's user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dest} is not reachable from a sandbox: {why}")]
pub struct Denied {
    pub dest: String,
    pub why: String,
}

impl EgressPolicy {
    /// The default policy for this host: built-in denials plus the
    /// networks of its interfaces (read now and kept current).
    pub fn for_this_host() -> Self {
        EgressPolicy {
            host_nets: HostNets::live(),
            ..Default::default()
        }
    }

    /// Checks a hostname before resolving it (hostname rules).
    pub fn check_host(&self, host: &str) -> Result<(), Denied> {
        let denied = |why: &str| Denied {
            dest: host.to_string(),
            why: why.to_string(),
        };
        if self.deny.iter().any(|r| r.matches_host(host)) {
            return Err(denied("denied by the egress policy"));
        }
        let limited = !self.limit_to.is_empty()
            && !self.limit_to.iter().any(|r| r.matches_host(host))
            && !self.limit_to.iter().any(|r| matches!(r, Rule::Net(..)));
        if limited {
            return Err(denied("not in this sandbox's egress allow list"));
        }
        if self.allow_only && !self.allow.iter().any(|r| r.matches_host(host)) {
            // Could still be allowed by a CIDR once resolved.
            if !self.allow.iter().any(|r| matches!(r, Rule::Net(..))) {
                return Err(denied("not in the egress allow list"));
            }
        }
        Ok(())
    }

    /// Checks one resolved address of `host`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Denied> {
        let denied = |why: &str| Denied {
            dest: if host == ip.to_string() {
                host.to_string()
            } else {
                format!("{host} ({ip})")
            },
            why: why.to_string(),
        };
        let targets = with_embedded(ip);
        let denied_by_rule = |t: &IpAddr| self.deny.iter().any(|r| r.matches_ip(*t));
        if targets.iter().any(denied_by_rule) || self.deny.iter().any(|r| r.matches_host(host)) {
            return Err(denied("denied by the egress policy"));
        }
        let limited = !self.limit_to.is_empty()
            && !self
                .limit_to
                .iter()
                .any(|r| r.matches_ip(ip) || r.matches_host(host));
        if limited {
            return Err(denied("not in this sandbox's egress allow list"));
        }
        if self
            .allow
            .iter()
            .any(|r| r.matches_ip(ip) || r.matches_host(host))
        {
            return Ok(());
        }
        if self.allow_only {
            return Err(denied("not in the egress allow list"));
        }
        let on_host = |a: IpAddr| {
            self.host_nets
                .find(a)
                .map(|n| format!("on a network of the sandbox host ({n})"))
        };
        match special::denied(canonical(ip), &on_host) {
            Some(why) => Err(denied(&why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn host_on(net: &str, prefix: u8) -> EgressPolicy {
        EgressPolicy {
            host_nets: HostNets::fixed(vec![Net::new(ip(net), prefix)]),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_deny_private_host_and_metadata() {
        let p = host_on("81.2.3.2", 24);
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "10.0.2.2",
            "172.20.1.1",
            "192.168.1.1",
            "169.254.169.254",
            "81.2.3.1",
            "81.2.3.2",
            "81.2.3.200",
            "::ffff:81.2.3.1",
            "64:ff9b::81.2.3.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
        ] {
            assert!(p.check("h", ip(bad)).is_err(), "{bad} must be denied");
        }
        let why = p.check("h", ip("81.2.3.1")).expect_err("gateway").why;
        assert!(
            why.contains("network of the sandbox host (81.2.3.2/24)"),
            "{why}"
        );
        for good in ["151.101.2.132", "2a04:4e42::644", "81.2.4.1", "1.1.1.1"] {
            assert!(p.check("h", ip(good)).is_ok(), "{good} must be allowed");
        }
    }

    /// Every range the issue lists, with the public neighbours that must
    /// stay reachable.
    #[test]
    fn special_ranges_and_embedded_forms_are_denied() {
        let p = EgressPolicy::default();
        for bad in [
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::192.168.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "::10.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:0",
            "2002:a00:1::1",
            "2002:c000:201::1",
            "fec0::1",
            "2001:db8::1",
            "100::1",
            "2001:0:a00:1::",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        ] {
            assert!(p.check("h", ip(bad)).is_err(), "{bad} must be denied");
        }
        for good in [
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
            "::ffff:1.1.1.1",
        ] {
            assert!(p.check("h", ip(good)).is_ok(), "{good} must be allowed");
        }
    }

    #[test]
    fn an_operator_allow_opens_a_range_a_deny_closes_its_embedded_forms() {
        let p = EgressPolicy {
            allow: vec!["198.51.100.0/24".parse().expect("rule")],
            deny: vec!["1.1.1.0/24".parse().expect("rule")],
            ..host_on("81.2.3.2", 24)
        };
        assert!(p.check("x", ip("198.51.100.7")).is_ok());
        assert!(p.check("x", ip("203.0.113.9")).is_err());
        for bad in [
            "1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
            "::ffff:1.1.1.1",
        ] {
            assert!(p.check("x", ip(bad)).is_err(), "{bad} must be denied");
        }
        let host = EgressPolicy {
            allow: vec!["81.2.3.1/32".parse().expect("rule")],
            ..host_on("81.2.3.2", 24)
        };
        assert!(
            host.check("x", ip("81.2.3.1")).is_ok(),
            "named by the operator"
        );
        assert!(host.check("x", ip("81.2.3.3")).is_err());
    }

    #[test]
    fn explicit_rules_win_in_order() {
        let p = EgressPolicy {
            allow: vec!["10.1.0.0/16".parse().expect("rule")],
            deny: vec![
                "example.com".parse().expect("rule"),
                "151.101.0.0/16".parse().expect("rule"),
            ],
            ..Default::default()
        };
        assert!(p.check("x", ip("10.1.2.3")).is_ok());
        assert!(p.check("x", ip("10.2.2.3")).is_err());
        assert!(p.check_host("www.example.com").is_err());
        assert!(p.check_host("notexample.com").is_ok());
        assert!(p.check("x", ip("151.101.2.132")).is_err());
        let only = EgressPolicy {
            allow: vec!["pypi.org".parse().expect("rule")],
            allow_only: true,
            ..Default::default()
        };
        assert!(only.check_host("pypi.org").is_ok());
        assert!(only.check("pypi.org", ip("151.101.0.223")).is_ok());
        assert!(only.check_host("deb.debian.org").is_err());
        assert!("a b".parse::<Rule>().is_err());
        assert!("10.0.0.0/33".parse::<Rule>().is_err());
    }
}
