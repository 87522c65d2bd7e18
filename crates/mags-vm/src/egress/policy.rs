//! Which destinations a sandbox may reach ([`EgressPolicy`]).
//!
//! Decided per connection on the host, after the host resolved the name,
//! and the connection is made to exactly the address that was checked (no
//! second lookup a DNS rebinding could exploit). Order: an explicit deny
//! (hostname or CIDR) wins; then an explicit allow; then the built-in
//! denials (loopback, private, link-local/metadata, CGNAT, multicast,
//! reserved ranges, and every address of this host); the rest is allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
            Rule::Net(net, prefix) => in_net(ip, *net, *prefix),
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

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (canonical(ip), canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
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

/// Ranges no sandbox reaches unless explicitly allowed.
const DENIED_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "the unspecified network"),
    ([10, 0, 0, 0], 8, "a private network"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT space"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "a private network"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 168, 0, 0], 16, "a private network"),
    ([198, 18, 0, 0], 15, "benchmarking space"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved space"),
];

fn builtin_denial(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => DENIED_V4
            .iter()
            .find(|(net, p, _)| in_net(IpAddr::V4(v4), IpAddr::V4(Ipv4Addr::from(*net)), *p))
            .map(|(_, _, why)| *why),
        IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            if v6 == Ipv6Addr::LOCALHOST || v6 == Ipv6Addr::UNSPECIFIED {
                Some("loopback")
            } else if seg & 0xfe00 == 0xfc00 {
                Some("a private network")
            } else if seg & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg & 0xff00 == 0xff00 {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// The rules in force; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Reachable even if a built-in rule says otherwise.
    pub allow: Vec<Rule>,
    /// Never reachable.
    pub deny: Vec<Rule>,
    /// This host's own addresses (denied); see [`host_addresses`].
    pub host_addrs: Vec<IpAddr>,
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
    /// The default policy for this host: built-in denials plus its own addresses.
    pub fn for_this_host() -> Self {
        EgressPolicy {
            host_addrs: host_addresses(),
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
        if self
            .deny
            .iter()
            .any(|r| r.matches_ip(ip) || r.matches_host(host))
        {
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
        let ip = canonical(ip);
        if self.host_addrs.iter().any(|a| canonical(*a) == ip) {
            return Err(denied("an address of the sandbox host"));
        }
        match builtin_denial(ip) {
            Some(why) => Err(denied(why)),
            None => Ok(()),
        }
    }
}

/// Every address configured on this host's interfaces.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn defaults_deny_private_host_and_metadata() {
        let p = EgressPolicy {
            host_addrs: vec![ip("192.0.2.2")],
            ..Default::default()
        };
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "10.0.2.2",
            "172.20.1.1",
            "192.168.1.1",
            "169.254.169.254",
            "192.0.2.2",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
        ] {
            assert!(p.check("h", ip(bad)).is_err(), "{bad} must be denied");
        }
        for good in ["151.101.2.132", "2a04:4e42::644", "192.0.2.3"] {
            assert!(p.check("h", ip(good)).is_ok(), "{good} must be allowed");
        }
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

    #[test]
    fn finds_own_addresses() {
        assert!(host_addresses().contains(&ip("127.0.0.1")));
    }
}
