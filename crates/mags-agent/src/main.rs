//! `mags-agent`: PID 1 inside every sandbox.
//!
//! As PID 1 it sets the machine up ([`init`]) in two stages: at boot it
//! loads the virtio modules and opens its port; on the host's `Setup` it
//! mounts the read-only root and the writable disk under an overlay, pivots
//! into it, and takes the identity the host gives (hostname, machine id,
//! RNG seed, clock). Template snapshots are taken between the two. Then it serves the protocol of
//! `mags-proto` on the virtio-serial port ([`serve`]), running processes
//! ([`process`], on a terminal with [`pty`]) and reaping every child, its own or orphaned.
//!
//! On the host, `mags-agent --egress-pipe SOCKET ID` joins a guest's
//! connection to the egress proxy ([`pipe`]).
//!
//! Run as any other PID (`mags-agent --stdio`) it skips the setup and serves
//! the protocol on stdin/stdout, which lets the host test the protocol
//! without a VM.

mod init;
mod net;
mod pipe;
mod process;
mod pty;
mod serve;
mod tunnel;

use std::fs::File;
use std::os::fd::FromRawFd;

fn main() {
    // Every thread inherits this mask: SIGCHLD is only ever taken by the
    // reaper thread through sigtimedwait.
    process::block_sigchld();
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, socket, id] = args.as_slice() {
        if flag == "--egress-pipe" {
            std::process::exit(pipe::run(socket, id));
        }
    }
    if args.iter().any(|a| a == "--stdio") {
        // SAFETY: fds 0 and 1 are open for the lifetime of the process and
        // owned by nothing else in this program.
        let (input, output) = unsafe { (File::from_raw_fd(0), File::from_raw_fd(1)) };
        process::start_reaper();
        serve::serve(input, output);
        return;
    }
    if std::process::id() != 1 {
        eprintln!("mags-agent: run me as PID 1 inside a Mags VM, or with --stdio");
        std::process::exit(2);
    }
    let boot_start = init::monotonic_ms();
    process::start_reaper();
    let port = match init::early() {
        Ok(port) => port,
        Err(e) => init::fatal(&format!("setup failed: {e}")),
    };
    serve::set_boot_ms(init::monotonic_ms().saturating_sub(boot_start));
    let output = match port.try_clone() {
        Ok(f) => f,
        Err(e) => init::fatal(&format!("cannot clone agent port: {e}")),
    };
    serve::serve_port(port, output);
    init::fatal("agent port closed for good");
}
