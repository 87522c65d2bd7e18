//! The networks this host is attached to: every interface address with
//! its netmask (`getifaddrs`), so the policy denies the host's whole
//! subnets (its gateway, its neighbours), not only its own addresses.
//!
//! Read at start and again at most every [`REFRESH`] when a decision
//! needs them (one `getifaddrs` call, no process spawned), so an address
//! added later, a DHCP change or a new bridge is covered within a second.

use super::special::Net;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old the cached list may get before a decision reads it again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The host's networks for the policy: fixed (tests, or none at all) or
/// read from the interfaces of the network namespace the caller runs in.
#[derive(Debug, Clone, Default)]
pub struct HostNets(Arc<Source>);

#[derive(Debug, Default)]
enum Source {
    #[default]
    None,
    Fixed(Arc<Vec<Net>>),
    Live(Mutex<Option<(Instant, Arc<Vec<Net>>)>>),
}

impl HostNets {
    /// Exactly these networks, never refreshed.
    pub fn fixed(nets: Vec<Net>) -> HostNets {
        HostNets(Arc::new(Source::Fixed(Arc::new(nets))))
    }

    /// This host's interfaces, read now and refreshed every [`REFRESH`].
    pub fn live() -> HostNets {
        let now = Arc::new(host_networks());
        HostNets(Arc::new(Source::Live(Mutex::new(Some((
            Instant::now(),
            now,
        ))))))
    }

    /// The networks in force now.
    pub fn current(&self) -> Arc<Vec<Net>> {
        match &*self.0 {
            Source::None => Arc::new(Vec::new()),
            Source::Fixed(v) => v.clone(),
            Source::Live(cache) => {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                match &*cache {
                    Some((at, nets)) if at.elapsed() < REFRESH => nets.clone(),
                    _ => {
                        let nets = Arc::new(host_networks());
                        *cache = Some((Instant::now(), nets.clone()));
                        nets
                    }
                }
            }
        }
    }

    /// The host network `ip` is in, if any (IPv4-mapped addresses count
    /// as the IPv4 address).
    pub fn find(&self, ip: IpAddr) -> Option<Net> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.current().iter().copied().find(|n| n.contains(ip))
    }
}

/// Every address configured on this host's interfaces (in the calling
/// thread's network namespace).
pub fn host_addresses() -> Vec<IpAddr> {
    host_networks().into_iter().map(|n| n.addr).collect()
}

/// Every interface address with its prefix length (`addr` is the
/// interface's own address; [`Net::contains`] masks it).
pub fn host_networks() -> Vec<Net> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot list the host's interfaces; only the built-in ranges are denied"
        );
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        // SAFETY: both are null or point to sockaddrs of the family they name.
        let addr = unsafe { sockaddr_ip(ifa.ifa_addr) };
        // SAFETY: as above.
        let mask = unsafe { sockaddr_ip(ifa.ifa_netmask) };
        if let Some(addr) = addr {
            let full = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match mask {
                Some(IpAddr::V4(m)) if addr.is_ipv4() => u32::from(m).leading_ones() as u8,
                Some(IpAddr::V6(m)) if addr.is_ipv6() => u128::from(m).leading_ones() as u8,
                _ => full,
            };
            out.push(Net::new(addr, prefix));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// The address in an `AF_INET`/`AF_INET6` sockaddr, if it is one.
///
/// # Safety
/// `sa` is null or points to a valid sockaddr of the family it names.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller promises a valid sockaddr.
    let family = i32::from(unsafe { (*sa).sa_family });
    if family == libc::AF_INET {
        // SAFETY: AF_INET means a sockaddr_in.
        let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
            sin.sin_addr.s_addr,
        ))))
    } else if family == libc::AF_INET6 {
        // SAFETY: AF_INET6 means a sockaddr_in6.
        let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_loopback_as_a_network() {
        let nets = host_networks();
        let lo = nets
            .iter()
            .find(|n| n.addr == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("127.0.0.1 is configured");
        assert_eq!(lo.prefix, 8, "{nets:?}");
        let live = HostNets::live();
        assert!(live.find("127.9.9.9".parse().expect("ip")).is_some());
        assert!(live.find("::ffff:127.0.0.2".parse().expect("ip")).is_some());
        assert!(host_addresses().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn fixed_networks_cover_their_whole_prefix() {
        let n = HostNets::fixed(vec![Net::new("192.0.2.2".parse().expect("ip"), 24)]);
        assert!(n.find("192.0.2.1".parse().expect("ip")).is_some());
        assert!(n.find("192.0.2.254".parse().expect("ip")).is_some());
        assert!(n.find("192.0.3.1".parse().expect("ip")).is_none());
        assert!(HostNets::default()
            .find("127.0.0.1".parse().expect("ip"))
            .is_none());
    }
}
