//! `mags setup-claude`: teaches Claude Code to use Mags, by installing a
//! skill (`<claude config>/skills/mags/SKILL.md`).

use anyhow::Context as _;
use std::path::PathBuf;

/// The skill Claude Code loads: when to use Mags and how.
const SKILL: &str = r#"---
name: mags
description: Run code in isolated Mags microVM sandboxes (Debian with python3/pip, node/npm, git, curl) instead of on this machine; keep files in named workspaces, run commands in long-lived sandboxes, schedule jobs. Use for untrusted code, installs, experiments, or anything that should not touch the host.
---

# Running code with Mags

`mags` talks to a Mags server (a local one starts by itself on first use;
`mags whoami` shows which). Every sandbox is a real VM: nothing in it can
touch this machine.

## One-off scripts
- `mags run 'python3 -c "print(1+1)"'` streams output and exits with the
  script's exit code. Add `--json` for a machine-readable final status.
- `mags run -f data.csv 'wc -l /root/data.csv'` uploads files first
  (they appear in `/root/` and `/uploads/`).
- `--env KEY=VALUE` sets environment variables (repeatable); `--disk GB`
  the disk size; `-e` (`--ephemeral`) says explicitly: no workspace.

## Keeping files
- `mags run -w NAME '...'` (`-n` is the same) keeps `/root` and installed
  packages in workspace NAME on this host for a while; add `-p` to keep it
  in object storage until deleted (`mags workspace list|delete`).
- `mags run --base NAME '...'` starts from NAME read-only (changes
  discarded); `--base NAME -w NEW` forks it.
- A new `mags run -w NAME` (or `mags new NAME`) while NAME's sandbox is up
  takes it over: its files are saved, it is stopped, the new job starts on
  them. Use `mags exec NAME 'cmd'` to run inside the live one instead.

## A sandbox that stays up
- `mags new NAME` starts one; `mags exec NAME 'cmd'` runs commands in it
  (exit code and output come back); `mags ssh NAME` opens a shell.
- Idle sandboxes sleep and wake on the next command, processes intact.
- `mags stop NAME` when done; `mags status NAME`, `mags logs NAME`,
  `mags list` to look around.

## Scheduled jobs
- `mags cron add -n N -s "0 * * * *" [-w WS] [-p] 'script'` (`-p`: each
  run's VM stays up), then `mags cron list|disable|enable|remove`.

## Tips
- Prefer `mags run` for anything that installs packages or runs code you
  did not write.
- Scripts run as root in `/root` under bash (in `/uploads` when files were
  uploaded with `-f`; they are in `/root` too); check exit codes.
- The guest is Debian: `apt-get install`, `pip install`, `npm install`
  work; `apk add` is mapped to apt for scripts written for Alpine.
- `mags url NAME PORT` gives a public URL to a port in a sandbox.
- `mags run --rootfs claude '...'` (or `pi`) runs in an image with Claude
  Code (or the pi coding agent) installed.
- An MCP server is available too: `mags mcp` (tools run_script,
  new_sandbox, exec, read_file, write_file, get_url, stop_sandbox).
"#;

/// Where Claude Code keeps its user configuration.
fn claude_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".claude"))
}

/// `mags setup-claude`.
pub fn setup() -> anyhow::Result<u8> {
    let dir = claude_dir()?.join("skills").join("mags");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("SKILL.md");
    let tmp = dir.join(".SKILL.md.tmp");
    std::fs::write(&tmp, SKILL).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "installed the Mags skill for Claude Code: {}",
        path.display()
    );
    println!("to also give Claude Code the Mags MCP tools: claude mcp add mags -- mags mcp");
    Ok(0)
}
