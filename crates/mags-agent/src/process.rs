//! Spawning processes and reaping children.
//!
//! As PID 1 the agent inherits every orphan, so one reaper thread owns
//! `waitpid(-1)`. It only reaps while holding [`STATE`]'s lock, and spawning
//! holds the same lock until the child's pid is registered, so an exit is
//! never lost and std's own `waitpid` on a failed `exec` never races it.
//! Statuses of unregistered pids (orphans) are discarded.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Default)]
struct State {
    watched: HashSet<u32>,
    exited: HashMap<u32, i32>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static EXITED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Blocks SIGCHLD in the calling thread (and the threads it creates later).
pub fn block_sigchld() {
    let set = sigchld_set();
    // SAFETY: valid sigset; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Starts the reaper thread.
pub fn start_reaper() {
    *state() = Some(State::default());
    std::thread::spawn(|| {
        let set = sigchld_set();
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: valid sigset and timespec; a null siginfo is allowed.
            unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
            let mut guard = state();
            let Some(st) = guard.as_mut() else { continue };
            let mut any = false;
            loop {
                let mut status = 0;
                // SAFETY: status is a valid out-pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if st.watched.remove(&(pid as u32)) {
                    st.exited.insert(pid as u32, status);
                    any = true;
                }
            }
            drop(guard);
            if any {
                EXITED.notify_all();
            }
        }
    });
}

/// Spawns `cmd` in its own process group, registered with the reaper.
///
/// No `pre_exec` hook here: without one std uses `posix_spawn` (a vfork,
/// not a copy of the agent's page tables), which under TCG is the
/// difference between a few and tens of milliseconds per command. std
/// resets the child's signal mask itself, so the SIGCHLD block the agent's
/// threads carry does not leak into user processes (tested).
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    cmd.process_group(0);
    spawn_as_is(cmd)
}

/// Spawns `cmd` registered with the reaper, without a process group of its
/// own: for a child that makes its own session (a PTY's, see `pty`).
pub fn spawn_as_is(cmd: &mut Command) -> io::Result<Child> {
    let mut guard = state();
    let child = cmd.spawn()?;
    if let Some(st) = guard.as_mut() {
        st.watched.insert(child.id());
    }
    Ok(child)
}

/// Waits for a spawned child; returns its raw wait status.
pub fn wait(pid: u32) -> i32 {
    let mut guard = state();
    loop {
        if let Some(status) = guard.as_mut().and_then(|st| st.exited.remove(&pid)) {
            return status;
        }
        guard = match EXITED.wait_timeout(guard, Duration::from_secs(1)) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
}

/// Exit code and signal from a raw wait status (code = 128 + signal when killed).
pub fn decode_status(status: i32) -> (i32, Option<i32>) {
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (255, None)
    }
}

/// Sends `signal` to the process group led by `pid`.
pub fn kill_group(pid: u32, signal: i32) {
    // SAFETY: plain syscall; a stale pid at worst fails with ESRCH.
    unsafe { libc::kill(-(pid as i32), signal) };
}
