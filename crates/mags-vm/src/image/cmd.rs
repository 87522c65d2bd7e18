//! Running the host tools the image build needs (apt, dpkg-deb, lz4,
//! mmdebstrap, tar2sqfs, gzip): finding them on `PATH` with a fix-it message
//! when one is missing, and running them with their output streamed as
//! [`ImageProgress::Log`] lines.

use super::{ImageError, ImageProgress};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How many trailing output lines a failure message carries.
const TAIL_LINES: usize = 20;

/// A host tool and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const APT_CACHE: Tool = Tool {
    name: "apt-cache",
    package: "apt",
};
pub(crate) const APT_GET: Tool = Tool {
    name: "apt-get",
    package: "apt",
};
pub(crate) const DPKG_DEB: Tool = Tool {
    name: "dpkg-deb",
    package: "dpkg",
};
pub(crate) const LZ4: Tool = Tool {
    name: "lz4",
    package: "lz4",
};
pub(crate) const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
};
pub(crate) const TAR2SQFS: Tool = Tool {
    name: "tar2sqfs",
    package: "squashfs-tools-ng",
};
pub(crate) const GZIP: Tool = Tool {
    name: "gzip",
    package: "gzip",
};

impl Tool {
    /// The tool's path, or an error that says which package to install.
    pub(crate) fn find(self) -> Result<PathBuf, ImageError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            // Non-root shells often lack the sbin dirs on PATH.
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|dir| dir.join(self.name))
            .find(|p| is_executable(p))
            .ok_or(ImageError::ToolMissing {
                tool: self.name,
                package: self.package,
            })
    }

    /// A [`Command`] for the tool, found on `PATH`.
    pub(crate) fn command(self) -> Result<Command, ImageError> {
        let mut cmd = Command::new(self.find()?);
        cmd.env("LC_ALL", "C.UTF-8").stdin(Stdio::null());
        Ok(cmd)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `cmd` to completion, sending each line it prints (stdout and stderr,
/// interleaved as written) to `progress` as a log line.
pub(crate) fn run_logged(
    tool: Tool,
    mut cmd: Command,
    progress: &dyn Fn(ImageProgress),
) -> Result<(), ImageError> {
    let (reader, writer) = std::io::pipe().map_err(|e| spawn_error(tool, e))?;
    let writer2 = writer.try_clone().map_err(|e| spawn_error(tool, e))?;
    cmd.stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| spawn_error(tool, e))?;
    // Drop our copies of the pipe's write end so the read loop sees EOF
    // when the child (and anything it spawned) exits.
    drop(cmd);

    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut lines = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lines.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if line.is_empty() {
                    continue;
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                progress(ImageProgress::Log(line));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let status = child.wait().map_err(|e| spawn_error(tool, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::CommandFailed {
            tool: tool.name,
            status: status.to_string(),
            output: Vec::from(tail).join("\n"),
        })
    }
}

/// Runs `cmd` and returns its stdout; stderr goes into the error on failure.
pub(crate) fn run_captured(tool: Tool, mut cmd: Command) -> Result<String, ImageError> {
    let out = cmd.output().map_err(|e| spawn_error(tool, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        Err(ImageError::CommandFailed {
            tool: tool.name,
            status: out.status.to_string(),
            output: lines[start..].join("\n"),
        })
    }
}

fn spawn_error(tool: Tool, source: std::io::Error) -> ImageError {
    ImageError::Spawn {
        tool: tool.name,
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn missing_tool_names_its_package() {
        let tool = Tool {
            name: "mags-no-such-tool",
            package: "mags-no-such-package",
        };
        let err = tool.find().unwrap_err().to_string();
        assert_eq!(
            err,
            "mags-no-such-tool not found: apt-get install mags-no-such-package"
        );
    }

    #[test]
    fn run_logged_streams_lines_and_reports_failure() {
        let sh = Tool {
            name: "sh",
            package: "dash",
        };
        let lines = RefCell::new(Vec::new());
        let log = |p: ImageProgress| {
            if let ImageProgress::Log(l) = p {
                lines.borrow_mut().push(l);
            }
        };
        let mut cmd = sh.command().unwrap();
        cmd.args(["-c", "echo one; echo two >&2; echo three"]);
        run_logged(sh, cmd, &log).unwrap();
        assert_eq!(*lines.borrow(), ["one", "two", "three"]);

        let mut cmd = sh.command().unwrap();
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let err = run_logged(sh, cmd, &log).unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }
}
