//! Address ranges no sandbox reaches by default: the IANA special-purpose
//! address registries (RFC 6890 and its updates) for IPv4 and IPv6, every
//! entry that is not globally reachable, plus multicast, the deprecated
//! ranges and all IPv6 space outside global unicast (`2000::/3`).
//!
//! Some IPv6 forms carry an IPv4 address inside (NAT64 `64:ff9b::/96`,
//! 6to4 `2002::/16`, Teredo `2001::/32`, IPv4-compatible `::/96`,
//! IPv4-mapped `::ffff:0:0/96`); [`embedded_v4`] extracts it so the
//! policy judges it as the IPv4 address it leads to: `64:ff9b::10.0.0.1`
//! through a NAT64 gateway is `10.0.0.1`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address range: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// `addr/prefix`; a prefix past the family's width is clamped.
    pub fn new(addr: IpAddr, prefix: u8) -> Net {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Net {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// Whether `ip` (of the same family) is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (ip, self.addr) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4 ranges denied, with the reason a sandbox's user is told. From the
/// IANA IPv4 Special-Purpose Address Registry (entries whose "Globally
/// Reachable" is False or N/A; the whole of `192.0.0.0/24`, though two
/// anycast addresses in it are reachable), plus multicast.
pub const DENIED_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "the unspecified network"),
    ([10, 0, 0, 0], 8, "a private network"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT space"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "a private network"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation space (TEST-NET-1)"),
    ([192, 88, 99, 0], 24, "the deprecated 6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "a private network"),
    ([198, 18, 0, 0], 15, "benchmarking space"),
    ([198, 51, 100, 0], 24, "documentation space (TEST-NET-2)"),
    ([203, 0, 113, 0], 24, "documentation space (TEST-NET-3)"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved space"),
];

/// IPv6 ranges reachable although a wider denied range holds them (IANA:
/// "Globally Reachable" True inside `2001::/23`).
const REACHABLE_V6: &[(u128, u8)] = &[
    (0x2001_0001_0000_0000_0000_0000_0000_0001, 128), // PCP anycast
    (0x2001_0001_0000_0000_0000_0000_0000_0002, 128), // TURN anycast
    (0x2001_0001_0000_0000_0000_0000_0000_0003, 128), // DNS-SD SRP anycast
    (0x2001_0003_0000_0000_0000_0000_0000_0000, 32),  // AMT
    (0x2001_0004_0112_0000_0000_0000_0000_0000, 48),  // AS112-v6
    (0x2001_0020_0000_0000_0000_0000_0000_0000, 28),  // ORCHIDv2
    (0x2001_0030_0000_0000_0000_0000_0000_0000, 28),  // Drone remote ID
];

/// IPv6 ranges denied (IANA IPv6 Special-Purpose Address Registry, not
/// globally reachable; plus deprecated site-local and multicast). The
/// forms that embed an IPv4 address are judged by [`embedded_v4`] first.
const DENIED_V6: &[(u128, u8, &str)] = &[
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        "local-use IPv4/IPv6 translation",
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "the discard-only prefix",
    ),
    (
        0x0100_0000_0000_0001_0000_0000_0000_0000,
        64,
        "the dummy IPv6 prefix",
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        "IETF protocol assignments",
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "documentation space",
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        "documentation space",
    ),
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        "segment-routing SIDs",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "a private network",
    ),
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, "link-local"),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        "site-local (deprecated)",
    ),
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "multicast"),
];

fn v6_net(bits: u128, prefix: u8) -> Net {
    Net::new(IpAddr::V6(Ipv6Addr::from(bits)), prefix)
}

/// How an IPv6 address carries an IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: the IPv4 address itself on a dual-stack socket.
    Mapped,
    /// `::a.b.c.d` (deprecated IPv4-compatible).
    Compatible,
    /// `64:ff9b::a.b.c.d`: NAT64's well-known prefix (RFC 6052).
    Nat64,
    /// `2002:aabb:ccdd::/48`: 6to4 (RFC 3056).
    SixToFour,
    /// `2001:0:<server v4>:..:<client v4 inverted>`: Teredo (RFC 4380).
    Teredo,
}

impl Embedding {
    fn name(self) -> &'static str {
        match self {
            Embedding::Mapped => "IPv4-mapped",
            Embedding::Compatible => "IPv4-compatible",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
            Embedding::Teredo => "Teredo",
        }
    }
}

/// The IPv4 addresses an IPv6 address leads to, and how; empty for an
/// ordinary IPv6 address. Teredo gives two (its server and its client).
pub fn embedded_v4(v6: Ipv6Addr) -> (Option<Embedding>, Vec<Ipv4Addr>) {
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    if v6_net(0xffff_0000_0000, 96).contains(IpAddr::V6(v6)) {
        return (Some(Embedding::Mapped), vec![low32]);
    }
    if bits >> 32 == 0 {
        return (Some(Embedding::Compatible), vec![low32]);
    }
    if v6_net(0x0064_ff9b << 96, 96).contains(IpAddr::V6(v6)) {
        return (Some(Embedding::Nat64), vec![low32]);
    }
    let seg = v6.segments();
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return (Some(Embedding::SixToFour), vec![v4]);
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        let server = Ipv4Addr::from((u32::from(seg[2]) << 16) | u32::from(seg[3]));
        let client = Ipv4Addr::from(!(bits as u32));
        return (Some(Embedding::Teredo), vec![server, client]);
    }
    (None, Vec::new())
}

/// Why `v4` is denied by the built-in IPv4 rules, if it is.
pub fn denied_v4(v4: Ipv4Addr) -> Option<&'static str> {
    DENIED_V4
        .iter()
        .find(|(net, p, _)| Net::new(IpAddr::V4(Ipv4Addr::from(*net)), *p).contains(IpAddr::V4(v4)))
        .map(|(_, _, why)| *why)
}

/// Why `v6` is denied by the built-in IPv6 rules, if it is. An embedded
/// IPv4 address is not looked at here (see [`embedded_v4`]); the forms
/// that carry one are allowed by this function so that the IPv4 policy
/// decides.
pub fn denied_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let ip = IpAddr::V6(v6);
    match embedded_v4(v6).0 {
        Some(Embedding::Teredo | Embedding::Nat64 | Embedding::SixToFour) => return None,
        Some(Embedding::Mapped | Embedding::Compatible) => return None,
        None => {}
    }
    if REACHABLE_V6
        .iter()
        .any(|(bits, p)| v6_net(*bits, *p).contains(ip))
    {
        return None;
    }
    if let Some((_, _, why)) = DENIED_V6
        .iter()
        .find(|(bits, p, _)| v6_net(*bits, *p).contains(ip))
    {
        return Some(why);
    }
    if !v6_net(0x2000 << 112, 3).contains(ip) {
        return Some("reserved IPv6 space (outside global unicast 2000::/3)");
    }
    None
}

/// Why `ip` is denied by the built-in rules, judging embedded IPv4
/// addresses by the IPv4 rules; `extra` is asked about every IPv4 address
/// too (the host's own networks, an operator's deny list).
pub fn denied(ip: IpAddr, extra: &dyn Fn(IpAddr) -> Option<String>) -> Option<String> {
    if let Some(why) = extra(ip) {
        return Some(why);
    }
    match ip {
        IpAddr::V4(v4) => denied_v4(v4).map(str::to_string),
        IpAddr::V6(v6) => {
            if let Some(why) = denied_v6(v6) {
                return Some(why.to_string());
            }
            let (how, inner) = embedded_v4(v6);
            let how = how.map_or("", Embedding::name);
            inner.into_iter().find_map(|v4| {
                let why = extra(IpAddr::V4(v4)).or_else(|| denied_v4(v4).map(str::to_string))?;
                Some(format!("{how} address of {v4}, {why}"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn none(_: IpAddr) -> Option<String> {
        None
    }

    #[test]
    fn every_listed_range_is_denied_at_both_ends() {
        let v4: Vec<(&str, &str)> = vec![
            ("0.0.0.0", "0.255.255.255"),
            ("10.0.0.0", "10.255.255.255"),
            ("100.64.0.0", "100.127.255.255"),
            ("127.0.0.0", "127.255.255.255"),
            ("169.254.0.0", "169.254.255.255"),
            ("172.16.0.0", "172.31.255.255"),
            ("192.0.0.0", "192.0.0.255"),
            ("192.0.2.0", "192.0.2.255"),
            ("192.88.99.0", "192.88.99.255"),
            ("192.168.0.0", "192.168.255.255"),
            ("198.18.0.0", "198.19.255.255"),
            ("198.51.100.0", "198.51.100.255"),
            ("203.0.113.0", "203.0.113.255"),
            ("224.0.0.0", "239.255.255.255"),
            ("240.0.0.0", "255.255.255.255"),
        ];
        let v6: Vec<(&str, &str)> = vec![
            ("::", "::"),
            ("::1", "::1"),
            ("64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),
            ("100::", "100::ffff:ffff:ffff:ffff"),
            ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff"),
            ("2001:2::", "2001:2:0:ffff:ffff:ffff:ffff:ffff"),
            ("2001:10::", "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("4000::", "dfff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ];
        for (lo, hi) in v4.into_iter().chain(v6) {
            for a in [lo, hi] {
                assert!(denied(ip(a), &none).is_some(), "{a} must be denied");
            }
        }
    }

    #[test]
    fn embedded_v4_is_judged_as_v4() {
        for (bad, inner) in [
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::10.0.0.1", "10.0.0.1"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::10.0.0.1", "10.0.0.1"),
            ("64:ff9b::192.168.1.1", "192.168.1.1"),
            ("64:ff9b::169.254.169.254", "169.254.169.254"),
            ("2002:a00:1::1", "10.0.0.1"),
            ("2002:c0a8:101::", "192.168.1.1"),
            ("2002:7f00:1::", "127.0.0.1"),
            ("2001:0:a00:1::1", "10.0.0.1"),
            // Teredo's client address is stored inverted: !10.0.0.1.
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),
        ] {
            let why = denied(ip(bad), &none).unwrap_or_else(|| panic!("{bad} must be denied"));
            assert!(why.contains(inner), "{bad}: {why}");
        }
        let host = |a: IpAddr| (a == ip("81.0.0.1")).then(|| "the host".to_string());
        assert!(denied(ip("64:ff9b::81.0.0.1"), &host).is_some());
        assert!(denied(ip("2002:5100:1::"), &host).is_some());
        assert!(denied(ip("64:ff9b::81.0.0.2"), &host).is_none());
    }

    #[test]
    fn public_addresses_stay_allowed() {
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "151.101.2.132",
            "192.0.3.1",
            "198.51.101.1",
            "203.0.114.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "2a04:4e42::644",
            "2001:4860:4860::8888",
            "2001:1::1",
            "2001:4:112::1",
            "64:ff9b::1.1.1.1",
            "::ffff:1.1.1.1",
            "2002:101:101::1",
            "2001:0:4136:e378:8000:63bf:fefe:fefe",
        ] {
            assert_eq!(denied(ip(good), &none), None, "{good} must be allowed");
        }
    }
}
