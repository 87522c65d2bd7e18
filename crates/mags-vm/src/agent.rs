//! The host end of the channel to the guest agent.

use crate::VmError;
use mags_proto::RunSpec;

/// A connection to one guest's agent; cheap to clone.
#[derive(Clone)]
pub struct AgentConn {}

/// Something a running process did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Always the last event. `code` is the exit status, or 128 + signal.
    Exited {
        code: i32,
        signal: Option<i32>,
        timed_out: bool,
    },
}

/// A process started in the guest.
pub struct Process {}

impl Process {
    /// The next event; `None` after `Exited` or if the VM went away
    /// (then the last event returned is an error).
    pub async fn next_event(&mut self) -> Result<Option<ProcessEvent>, VmError> {
        todo!()
    }
}

impl AgentConn {
    /// Starts a process.
    pub async fn run(&self, _spec: RunSpec) -> Result<Process, VmError> {
        todo!()
    }

    /// Creates or replaces a file in the guest.
    pub async fn write_file(&self, _path: &str, _mode: u32, _data: &[u8]) -> Result<(), VmError> {
        todo!()
    }
}
