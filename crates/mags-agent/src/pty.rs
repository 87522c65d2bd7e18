//! Processes on a pseudo-terminal (`RunSpec::pty`), for interactive shells
//! (`mags exec -it`, `ssh` with a tty).
//!
//! The agent opens a PTY pair with every fd close-on-exec, gives the slave
//! to the child as stdin, stdout and stderr, and keeps the master: what the
//! process writes comes out of the master (sent as `Stdout` frames), what
//! the host types goes into it, and `Resize` sets its window size. The
//! child leads a new session (`setsid`) with the slave as its controlling
//! terminal (`TIOCSCTTY`), so job control, Ctrl-C as a byte and SIGWINCH
//! work as on any terminal. Its session id is its pid, so signalling the
//! "process group" of the pid reaches it as for any other process.
//!
//! Getting a controlling terminal needs code in the child between fork and
//! exec, so this path forks (std's `pre_exec`) instead of `posix_spawn`; an
//! interactive session pays that once, commands without a PTY do not.

use crate::process;
use crate::serve::Spawned;
use mags_proto::{FrameKind, PtySpec};
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// `TERM` when the host gives none.
const DEFAULT_TERM: &str = "xterm";

/// A fresh PTY: the master (kept by the agent) and the slave (for the child).
pub struct Pty {
    pub master: File,
    slave: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Pty {
    /// Opens a pair sized `rows` x `cols` (0 leaves the kernel's default).
    pub fn open(rows: u16, cols: u16) -> io::Result<Pty> {
        // SAFETY: plain syscall; the fd is owned right below.
        let fd =
            cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor we own.
        let master = unsafe { File::from_raw_fd(fd) };
        // SAFETY: master is an open ptmx descriptor.
        cvt(unsafe { libc::grantpt(master.as_raw_fd()) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: name is a writable buffer of the length given.
        let r = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: ptsname_r wrote a NUL-terminated path into name.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        // SAFETY: path is a valid C string; the fd is owned right below.
        let sfd = cvt(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: sfd is a fresh descriptor we own.
        let slave = unsafe { OwnedFd::from_raw_fd(sfd) };
        let pty = Pty { master, slave };
        if rows > 0 && cols > 0 {
            resize(&pty.master, rows, cols)?;
        }
        Ok(pty)
    }

    /// Makes `cmd` run on this PTY as the leader of a new session, with
    /// `TERM` set. The caller spawns `cmd` and then drops it (closing the
    /// agent's copies of the slave), so the master reads EIO once every
    /// process on the terminal has gone.
    pub fn attach(&self, cmd: &mut Command, term: &str) -> io::Result<()> {
        let term = if term.is_empty() { DEFAULT_TERM } else { term };
        cmd.env("TERM", term)
            .stdin(Stdio::from(self.slave.try_clone()?))
            .stdout(Stdio::from(self.slave.try_clone()?))
            .stderr(Stdio::from(self.slave.try_clone()?));
        // SAFETY: setsid, ioctl and signal are async-signal-safe; std has
        // already made the slave fds 0, 1 and 2 when this runs.
        unsafe {
            cmd.pre_exec(|| {
                // A terminal session starts with the default handling of
                // every signal its keys send, whatever the agent inherited
                // (a shell's background job ignores SIGINT, and an ignored
                // signal stays ignored across exec: Ctrl-C did nothing).
                for sig in TERMINAL_SIGNALS {
                    libc::signal(sig, libc::SIG_DFL);
                }
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }
}

/// Signals a terminal's keys and hangup send.
const TERMINAL_SIGNALS: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGHUP,
];

/// Spawns `cmd` on a new PTY (see the module docs): its output is the
/// master, read as `Stdout`; its stdin is the master too.
pub(crate) fn spawn(mut cmd: Command, spec: &PtySpec) -> io::Result<Spawned> {
    let pty = Pty::open(spec.rows, spec.cols)?;
    pty.attach(&mut cmd, &spec.term)?;
    let child = process::spawn_as_is(&mut cmd)?;
    // Our copies of the slave go now, so the master ends with the session.
    drop(cmd);
    let master = pty.master;
    drop(pty.slave);
    Ok(Spawned {
        pid: child.id(),
        stdin: Some(Box::new(master.try_clone()?)),
        outputs: vec![(FrameKind::Stdout, Box::new(master.try_clone()?))],
        pty: Some(master),
    })
}

/// Sets the window size of the terminal behind `master`; the kernel sends
/// SIGWINCH to its foreground process group.
pub fn resize(master: &File, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: master is an open PTY master and ws a valid winsize.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_a_pair_with_the_size_asked() {
        let pty = Pty::open(33, 101).expect("open pty");
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid fd and out-pointer.
        let r = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
        resize(&pty.master, 40, 120).expect("resize");
        // SAFETY: as above.
        unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_row, ws.ws_col), (40, 120));
    }
}
