//! A deterministic writer for the kernel's initramfs format: a `newc` cpio
//! archive ("070701" headers, 4-byte alignment, `TRAILER!!!`), gzip'ed.
//!
//! Entries are sorted by path (parents before children), owned by root,
//! with mtime 0 and inode numbers assigned in order, so the same inputs give
//! the same bytes.

use super::cmd::GZIP;
use super::ImageError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Permission bits only.
    perm: u32,
    kind: Kind,
}

/// An in-memory cpio archive, keyed by path without a leading `/`.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and any missing parents, 0755).
    pub(crate) fn dir(&mut self, path: &str, perm: u32) -> &mut Self {
        self.insert(path, perm, Kind::Dir)
    }

    /// Adds a regular file (and any missing parent directories, 0755).
    pub(crate) fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> &mut Self {
        self.insert(path, perm, Kind::File(data))
    }

    /// Adds a character device node.
    pub(crate) fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.insert(path, perm, Kind::CharDev { major, minor })
    }

    fn insert(&mut self, path: &str, perm: u32, kind: Kind) -> &mut Self {
        let path = path.trim_matches('/');
        let mut parent = path;
        while let Some((p, _)) = parent.rsplit_once('/') {
            self.entries.entry(p.to_string()).or_insert(Entry {
                perm: 0o755,
                kind: Kind::Dir,
            });
            parent = p;
        }
        self.entries.insert(path.to_string(), Entry { perm, kind });
        self
    }

    /// The archive in `newc` format.
    pub(crate) fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (type_bits, nlink, data, rdev) = match &entry.kind {
                Kind::Dir => (S_IFDIR, 2, &[][..], (0, 0)),
                Kind::File(data) => (S_IFREG, 1, data.as_slice(), (0, 0)),
                Kind::CharDev { major, minor } => (S_IFCHR, 1, &[][..], (*major, *minor)),
            };
            write_entry(
                &mut out,
                path,
                ino,
                type_bits | entry.perm,
                nlink,
                data,
                rdev,
            );
        }
        write_entry(&mut out, "TRAILER!!!", 0, 0, 1, &[], (0, 0));
        out
    }

    /// Writes the archive gzip'ed (`gzip -n`, so no name or time in the
    /// header) to `dest`.
    pub(crate) fn write_gz(&self, dest: &Path) -> Result<(), ImageError> {
        let file = std::fs::File::create(dest).map_err(|e| ImageError::io(dest, e))?;
        let mut cmd = GZIP.command()?;
        // Level 6: -9 takes 8x as long (0.7 s) for 1% less, and this step
        // reruns on every agent change.
        cmd.args(["-n", "-6", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| ImageError::Spawn {
            tool: GZIP.name,
            source,
        })?;
        let data = self.to_newc();
        // stdout goes to a file, so writing all of stdin cannot deadlock.
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(&data),
            None => Ok(()),
        };
        let out = child
            .wait_with_output()
            .map_err(|source| ImageError::Spawn {
                tool: GZIP.name,
                source,
            })?;
        if !out.status.success() || written.is_err() {
            return Err(ImageError::CommandFailed {
                tool: GZIP.name,
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        rdev_major,
        rdev_minor,
        namesize as u32,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// One entry read back from a `newc` archive (for tests).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadEntry {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parses a `newc` archive up to its trailer.
#[cfg(test)]
pub(crate) fn parse_newc(mut buf: &[u8]) -> Result<Vec<ReadEntry>, String> {
    let start_len = buf.len();
    let mut entries = Vec::new();
    loop {
        let header = buf.get(..110).ok_or("truncated header")?;
        if &header[..6] != b"070701" {
            return Err(format!("bad magic at {}", start_len - buf.len()));
        }
        let field = |i: usize| -> Result<u32, String> {
            let hex =
                std::str::from_utf8(&header[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            u32::from_str_radix(hex, 16).map_err(|e| e.to_string())
        };
        let (mode, uid, mtime, size) = (field(1)?, field(2)?, field(5)?, field(6)? as usize);
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        let name = buf.get(110..name_end - 1).ok_or("truncated name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_start = name_end.next_multiple_of(4);
        let data = buf
            .get(data_start..data_start + size)
            .ok_or("truncated data")?
            .to_vec();
        buf = buf
            .get((data_start + size).next_multiple_of(4)..)
            .unwrap_or_default();
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push(ReadEntry {
            name,
            mode,
            uid,
            mtime,
            rdev,
            data,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!agent".to_vec())
            .file("/lib/modules/virtio.ko", 0o644, vec![7; 13])
            .file("lib/modules/load-order", 0o644, b"virtio.ko\n".to_vec())
            .dir("proc", 0o555)
            .dir("tmp", 0o1777)
            .char_dev("dev/console", 0o600, 5, 1);
        a
    }

    #[test]
    fn newc_round_trips_sorted_and_deterministic() {
        let bytes = sample().to_newc();
        assert_eq!(bytes, sample().to_newc());
        assert!(bytes.len().is_multiple_of(4));
        let entries = parse_newc(&bytes).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/load-order",
                "lib/modules/virtio.ko",
                "proc",
                "tmp"
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("init").mode, 0o100_755);
        assert_eq!(get("init").data, b"#!agent");
        assert_eq!(get("lib/modules/virtio.ko").data, vec![7; 13]);
        assert_eq!(get("lib").mode, 0o040_755);
        assert_eq!(get("tmp").mode, 0o041_777);
        assert_eq!(get("dev/console").mode, 0o020_600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert!(entries.iter().all(|e| e.uid == 0 && e.mtime == 0));
    }

    #[test]
    fn gzip_output_is_readable_by_cpio() {
        let have = |t: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !have("cpio") || !have("gzip") {
            eprintln!("skipping: cpio or gzip not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("initrd.img");
        sample().write_gz(&gz).unwrap();
        let first = std::fs::read(&gz).unwrap();
        sample().write_gz(&gz).unwrap();
        assert_eq!(
            first,
            std::fs::read(&gz).unwrap(),
            "gzip output must be stable"
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | cpio -t -v --quiet", gz.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("lib/modules/load-order"), "{listing}");
        assert!(listing.contains("-rwxr-xr-x"), "{listing}");
        assert!(listing.contains("crw-------"), "{listing}");
        assert_eq!(listing.lines().count(), 9, "{listing}");
    }
}
