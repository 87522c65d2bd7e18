//! The one definition of the host <-> guest agent protocol.
//!
//! Both ends (`mags-agent` in the guest, `mags-vm` on the host) speak it over
//! a virtio-serial port. The wire is a sequence of frames:
//!
//! ```text
//! u32 LE  length of everything after this field (kind + stream + payload)
//! u8      kind      (see [`FrameKind`])
//! u32 LE  stream    (0 = the connection itself; otherwise one operation)
//! [u8]    payload   (JSON for control frames, raw bytes for data frames)
//! ```
//!
//! The host opens the conversation with [`HostMsg::Hello`]; the agent answers
//! [`GuestMsg::Hello`] with its own [`PROTOCOL_VERSION`]. A mismatch is an
//! error on the host, never a silent downgrade.
//!
//! Each operation (run a script, write a file) lives on its own stream id
//! chosen by the host, so many can be in flight on one connection.

mod frame;
mod msg;

pub use frame::{encode_frame, DecodeError, Decoder, Frame, FrameKind, MAX_PAYLOAD};
pub use msg::{GuestInfo, GuestMsg, HostMsg, NetworkSpec, PtySpec, RunSpec, SetupSpec};

/// Version of the protocol spoken by this build. Bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Most bytes of a tunnel (see [`HostMsg::Connect`]) either side may have
/// in flight without an acknowledgement.
pub const TUNNEL_WINDOW: u64 = 1 << 20;

/// Name of the virtio-serial port the agent listens on.
pub const AGENT_PORT_NAME: &str = "org.mags.agent";

/// Serial numbers of the virtio-blk devices, so the guest finds them by role.
pub const ROOTFS_SERIAL: &str = "mags-rootfs";
/// Serial number of the writable per-sandbox disk.
pub const DISK_SERIAL: &str = "mags-disk";
