//! The jail's unit tests.

use super::*;
use crate::Layout;

#[test]
fn a_sealed_copy_cannot_be_written_but_can_be_mapped_privately() {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mem");
    std::fs::write(&src, vec![7u8; 8192]).unwrap();
    let fd = sealed_copy(&src).unwrap();
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 8192]);
    // Even opened read-write (as QEMU does), it refuses writes.
    let mut rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert!(rw.write_all(b"x").is_err());
    assert!(rw.set_len(1).is_err());
    // A private mapping may be written; the copy stays as it was.
    // SAFETY: a fresh private mapping of 8192 bytes, unmapped below.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            rw.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        *(p as *mut u8) = 9;
        libc::munmap(p, 8192);
    }
    assert_eq!(std::fs::read(&path).unwrap()[0], 7);
}

#[test]
fn uids_are_unique_among_live_sandboxes_and_reused_after() {
    let jail = Jail {
        cfg: JailConfig {
            uid_count: 3,
            ..JailConfig::default()
        },
        root: "/nonexistent".into(),
        privileged: true,
        cgroups: None,
        used: Default::default(),
        note: None,
        host: HostFiles::find(),
    };
    let leases: Vec<UidLease> = (0..3).map(|_| jail.lease_uid().unwrap()).collect();
    let uids: BTreeSet<u32> = leases.iter().map(|l| l.uid).collect();
    assert_eq!(uids.len(), 3);
    assert!(uids
        .iter()
        .all(|u| *u >= 1_600_000_000 && *u < 1_600_000_003));
    assert!(jail.lease_uid().is_err(), "the range is exhausted");
    drop(leases);
    assert!(jail.lease_uid().is_ok());
}

#[test]
fn the_planned_root_mounts_parents_first_and_only_what_was_asked() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("data"));
    let sandbox = layout.sandbox("sb-1").path().to_path_buf();
    std::fs::create_dir_all(&sandbox).unwrap();
    let kernel = dir.path().join("images/vmlinux");
    std::fs::create_dir_all(kernel.parent().unwrap()).unwrap();
    std::fs::write(&kernel, b"k").unwrap();
    let jail = Jail {
        cfg: JailConfig::default(),
        root: layout.jail_root(),
        privileged: true,
        cgroups: None,
        used: Default::default(),
        note: None,
        host: HostFiles::find(),
    };
    let fs = jail
        .filesystem(&Confine {
            id: "sb-1".into(),
            writable: vec![sandbox.clone()],
            readable: vec![kernel.clone()],
            ..Confine::default()
        })
        .unwrap();
    let binds: Vec<String> = fs
        .binds
        .iter()
        .map(|(s, _, _)| s.to_string_lossy().into_owned())
        .collect();
    assert_eq!(binds[0], "/usr");
    assert!(binds.contains(&sandbox.display().to_string()));
    assert!(binds.contains(&kernel.display().to_string()));
    assert!(binds.contains(&"/dev/urandom".to_string()));
    assert!(!binds
        .iter()
        .any(|b| b == "/etc" || b == "/root" || b == "/tmp"));
    let inside_sandbox = jail.root.join(sandbox.strip_prefix("/").unwrap());
    assert!(fs.dirs.contains(&cstring(&inside_sandbox).unwrap()));
    let inside_kernel = jail.root.join(kernel.strip_prefix("/").unwrap());
    assert!(fs.files.contains(&cstring(&inside_kernel).unwrap()));
    // Parents come before children.
    let pos = |p: &Path| fs.dirs.iter().position(|d| d == &cstring(p).unwrap());
    assert!(pos(inside_sandbox.parent().unwrap()) < pos(&inside_sandbox));
}
