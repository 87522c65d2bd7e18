//! Finding the static guest agent binary that goes into the initramfs.

use std::path::{Path, PathBuf};

/// Where the agent is looked for, in order: `$MAGS_AGENT_BIN`; beside the
/// running executable; `../lib/mags/` from it (an installed layout); and the
/// static build of a source checkout (`scripts/build-agent`).
pub fn agent_bin_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("MAGS_AGENT_BIN") {
        c.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            c.push(dir.join("mags-agent-static"));
            c.push(dir.join("../lib/mags/mags-agent"));
            // target/{debug,release}[/deps] -> target/x86_64-unknown-linux-gnu/release
            for up in [dir, dir.parent().unwrap_or(dir)] {
                if let Some(target) = up.parent() {
                    c.push(target.join("x86_64-unknown-linux-gnu/release/mags-agent"));
                }
            }
        }
    }
    c
}

/// The first candidate that exists and is statically linked.
pub fn find_agent_bin() -> Result<PathBuf, String> {
    let candidates = agent_bin_candidates();
    for p in &candidates {
        if p.is_file() {
            check_static(p)?;
            return Ok(p.canonicalize().unwrap_or_else(|_| p.clone()));
        }
    }
    Err(format!(
        "the static guest agent was not found (looked at {}); build it with scripts/build-agent \
         or set MAGS_AGENT_BIN",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Refuses a dynamically linked ELF (one with a PT_INTERP program header):
/// as /init it would die before printing anything useful.
pub fn check_static(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{} is not a 64-bit ELF executable", path.display());
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            return Err(bad());
        }
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) == PT_INTERP {
            return Err(format!(
                "{} is dynamically linked; the guest agent must be static (scripts/build-agent)",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_refused() {
        // Every Debian system binary is dynamically linked.
        let err = check_static(Path::new("/bin/ls")).expect_err("ls is dynamic");
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(check_static(Path::new("/etc/hostname")).is_err());
    }
}
