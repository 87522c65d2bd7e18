//! `mags-agent --egress-pipe SOCKET ID`: runs on the host, not in the
//! guest. QEMU's user-mode network starts it for every guest connection
//! to the egress proxy address (`guestfwd=...-cmd:`), with that connection
//! as stdin/stdout; it joins it to the host's egress proxy on the unix
//! socket `SOCKET`, saying first which sandbox (`ID`) the guest is. The
//! agent binary is used because it is static and always next to the image.
//!
//! Nothing may be printed: stderr is the guest's connection too.

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

/// Copies both ways until both sides have finished; the exit code says
/// whether the proxy could be reached.
pub fn run(socket: &str, id: &str) -> i32 {
    let Ok(mut proxy) = UnixStream::connect(socket) else {
        return 1;
    };
    if proxy.write_all(format!("{id}\n").as_bytes()).is_err() {
        return 1;
    }
    // SAFETY: fd 0 (and 1, the same socket) is the guest connection QEMU
    // gave us; nothing else in this process uses it.
    let guest = unsafe { UnixOrTcp::from_raw_fd(0) };
    let (Ok(mut guest_rd), Ok(mut proxy_wr)) = (guest.try_clone(), proxy.try_clone()) else {
        return 1;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut guest_rd, &mut proxy_wr);
        let _ = proxy_wr.shutdown(Shutdown::Write);
    });
    let mut guest_wr = guest;
    let _ = std::io::copy(&mut proxy, &mut guest_wr);
    // SAFETY: half-closing our end of the guest socket; fd 0 stays open.
    unsafe { libc::shutdown(0, libc::SHUT_WR) };
    let _ = up.join();
    0
}

/// The guest connection is a socket of whatever family QEMU chose; only
/// read, write and dup are needed, which `File` does for any fd.
type UnixOrTcp = std::fs::File;
