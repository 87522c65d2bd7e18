//! The guest's network, set at `Setup` from [`NetworkSpec`]: a static
//! address on the NIC (no DHCP client in the guest), an optional default
//! route, and the egress proxy every program is pointed at.
//!
//! The template snapshot is taken before `Setup`, so every clone (and every
//! wake, which sends `Setup` again) configures its NIC here; doing it twice
//! is harmless.

use mags_proto::NetworkSpec;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// The proxy URL handed to processes, once set up.
static PROXY: Mutex<Option<String>> = Mutex::new(None);
/// Whether extra CAs were added to the system bundle.
static EXTRA_CAS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Debian's CA bundle, which the extra CAs are appended to.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Hosts that must never go through the proxy.
const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Environment for processes the agent starts: the proxy variables, in
/// both spellings tools look for.
pub(crate) fn proxy_env() -> Vec<(String, String)> {
    let Some(url) = PROXY.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        return Vec::new();
    };
    let mut env = Vec::new();
    for k in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        env.push((k.to_string(), url.clone()));
    }
    env.push(("no_proxy".into(), NO_PROXY.into()));
    env.push(("NO_PROXY".into(), NO_PROXY.into()));
    if EXTRA_CAS.load(std::sync::atomic::Ordering::Relaxed) {
        // Tools with bundles of their own (node, pip in a venv) use the system's.
        for k in [
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "PIP_CERT",
            "SSL_CERT_FILE",
        ] {
            env.push((k.to_string(), CA_BUNDLE.to_string()));
        }
    }
    env
}

/// Applies `spec`: address and link up on the first NIC, route, proxy.
pub(crate) fn configure(spec: &NetworkSpec) -> io::Result<()> {
    let (addr, prefix) = parse_cidr(&spec.address)?;
    let nic = first_nic()?;
    let sock = Socket::new()?;
    sock.set_addr(&nic, libc::SIOCSIFADDR, addr)?;
    sock.set_addr(&nic, libc::SIOCSIFNETMASK, netmask(prefix))?;
    sock.up(&nic)?;
    if let Some(gw) = &spec.gateway {
        let gw: Ipv4Addr = gw
            .parse()
            .map_err(|_| invalid(format!("bad gateway {gw:?}")))?;
        sock.default_route(gw)?;
    }
    *PROXY.lock().unwrap_or_else(|p| p.into_inner()) = spec.proxy.clone();
    if let Some(url) = &spec.proxy {
        write_proxy_files(url)?;
    }
    if !spec.ca_certs.trim().is_empty() {
        add_cas(&spec.ca_certs)?;
        EXTRA_CAS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Appends the CAs to the system bundle (once: a wake sends them again)
/// and keeps a copy where `update-ca-certificates` finds them.
fn add_cas(pem: &str) -> io::Result<()> {
    let bundle = std::fs::read_to_string(CA_BUNDLE).unwrap_or_default();
    if !bundle.contains(pem.trim()) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(CA_BUNDLE)?;
        std::io::Write::write_all(&mut f, format!("\n{}\n", pem.trim()).as_bytes())?;
    }
    std::fs::create_dir_all("/usr/local/share/ca-certificates")?;
    std::fs::write("/usr/local/share/ca-certificates/mags-host.crt", pem)
}

/// For login shells (SSH) and for apt, which read files, not our env.
fn write_proxy_files(url: &str) -> io::Result<()> {
    let mut profile = String::from(
        "# Written by the Mags agent: outbound traffic goes through the host's egress proxy.\n",
    );
    for k in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        profile.push_str(&format!("export {k}={url}\n"));
    }
    profile.push_str(&format!(
        "export no_proxy={NO_PROXY}\nexport NO_PROXY={NO_PROXY}\n"
    ));
    std::fs::create_dir_all("/etc/profile.d")?;
    std::fs::write("/etc/profile.d/mags-proxy.sh", profile)?;
    std::fs::create_dir_all("/etc/apt/apt.conf.d")?;
    std::fs::write(
        "/etc/apt/apt.conf.d/80mags-proxy",
        format!("Acquire::http::Proxy \"{url}\";\nAcquire::https::Proxy \"{url}\";\n"),
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn parse_cidr(s: &str) -> io::Result<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/').unwrap_or((s, "24"));
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| invalid(format!("bad address {s:?}")))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| invalid(format!("bad prefix in {s:?}")))?;
    Ok((addr, prefix))
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// The first interface that is not loopback (`eth0` without udev).
fn first_nic() -> io::Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        if let Some(n) = names.into_iter().next() {
            return Ok(n);
        }
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no network interface (is virtio_net loaded?)",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// An AF_INET datagram socket for interface ioctls.
struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are the same size (16 bytes) and
    // plain data; this is how the C API passes addresses.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Socket {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= ifr.ifr_name.len() {
            return Err(invalid(format!("interface name {name:?} too long")));
        }
        for (i, b) in name.bytes().enumerate() {
            ifr.ifr_name[i] = b as libc::c_char;
        }
        Ok(ifr)
    }

    fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
        // SAFETY: `arg` is the struct this request expects, valid for the call.
        if unsafe { libc::ioctl(self.0, req, arg as *mut T) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    }

    fn set_addr(&self, nic: &str, req: libc::c_ulong, a: Ipv4Addr) -> io::Result<()> {
        let mut ifr = Self::ifreq(nic)?;
        ifr.ifr_ifru.ifru_addr = sockaddr_in(a);
        self.ioctl(req, &mut ifr, &format!("setting {a} on {nic}"))
    }

    fn up(&self, nic: &str) -> io::Result<()> {
        let mut ifr = Self::ifreq(nic)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut ifr, "reading link flags")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        self.ioctl(libc::SIOCSIFFLAGS, &mut ifr, &format!("bringing {nic} up"))
    }

    fn default_route(&self, gw: Ipv4Addr) -> io::Result<()> {
        // SAFETY: rtentry is plain data; all zeroes is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        match self.ioctl(libc::SIOCADDRT, &mut rt, "adding the default route") {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_masks() {
        assert_eq!(
            parse_cidr("10.0.2.15/24").expect("valid"),
            (Ipv4Addr::new(10, 0, 2, 15), 24)
        );
        assert!(parse_cidr("10.0.2.15/33").is_err());
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }
}
