//! The host-side egress proxy: the only way out of a sandbox
//! (see [`crate::net`]).
//!
//! Guests reach it as `http://10.0.2.100:3128` (their `http_proxy` and
//! `https_proxy`); QEMU hands each such connection to `mags-agent
//! --egress-pipe`, which connects to this proxy's unix socket and sends
//! the sandbox id as a first line. Then it is an ordinary HTTP/1.1 proxy:
//! `CONNECT host:port` (HTTPS, git, anything over TLS) is spliced to a TCP
//! connection, `GET http://host/...` is forwarded. Every destination is
//! resolved here and checked against the [`EgressPolicy`] before a
//! connection is made, to the very address checked.
//!
//! Per sandbox, the server's policy can be narrowed: a [`SandboxEgress`]
//! file in the sandbox's dir (`egress.json`, see [`crate::Layout`]; written when a
//! job takes the sandbox, see [`crate::Sandbox::set_egress`]) is read on
//! every connection, so it follows the sandbox through sleep, wake and a
//! server restart, and a warm-pool VM (named `pool-...`) gets its job's
//! rules the moment the job takes it.
//!
//! One destination bypasses the address policy: the server's own public
//! URLs (`<sub>.<apps domain>` on the apps port, see `AppsRoute`) are
//! connected to the server's URL proxy, so a sandbox (a browser session)
//! can open another sandbox's public URL exactly as anyone outside could,
//! through the proxy's routing and checks, never to a host service. A
//! `no_internet` sandbox does not get it.

mod hostnets;
mod policy;
mod sandbox;
pub mod special;

pub use hostnets::{host_addresses, host_networks, HostNets};
pub use policy::{Denied, EgressPolicy, Rule};
pub use sandbox::SandboxEgress;
pub use special::Net;

/// The proxy itself (an HTTP server, so behind the `egress-proxy` feature:
/// what only runs VMs needs the rules, not the server).
#[cfg(feature = "egress-proxy")]
mod proxy;
#[cfg(feature = "egress-proxy")]
pub use proxy::{AppsRoute, EgressProxy};
