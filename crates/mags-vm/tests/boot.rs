//! Real VMs: boot the guest image under QEMU and ask the guest what it sees.
//!
//! Needs the static agent (`scripts/build-agent`) and QEMU; builds the guest
//! image into `$MAGS_IMAGES_DIR` (default `~/.cache/mags/images`) if it is
//! not there yet.

mod common;

use common::{ready_runtime, run, runtime, sh, stdout_of};
use mags_vm::SandboxOptions;

#[tokio::test]
async fn guest_is_its_own_machine() {
    let (_tmp, rt) = ready_runtime().await;
    let sb = rt
        .start(SandboxOptions::new(uuid::Uuid::new_v4().to_string()))
        .await
        .expect("sandbox starts");
    let agent = sb.agent();

    let info = agent.info().await.expect("info");
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("host release");
    assert_ne!(
        info.kernel_release,
        host_release.trim(),
        "guest runs its own kernel"
    );
    assert!(
        info.kernel_release.contains("cloud-amd64"),
        "{}",
        info.kernel_release
    );
    assert_eq!(info.hostname, "mags-vm");

    let (code, out, err) = run(&sb, sh("echo Hello World; uname -r; hostname; head -1 /etc/os-release; pwd; echo oops >&2; exit 3")).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 3);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Hello World");
    assert_eq!(lines[1], info.kernel_release);
    assert_eq!(lines[2], "mags-vm");
    assert!(lines[3].contains("Debian GNU/Linux"), "{out}");
    assert_eq!(lines[4], "/root");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");

    // The root is writable (overlay on the sandbox's own disk) and tools are there.
    let (code, out, err) = run(&sb, sh("echo persisted > /root/f && cat /root/f && python3 -c 'print(6*7)' && node -e 'console.log(1+1)' && git --version >/dev/null && curl --version >/dev/null && echo tools-ok")).await;
    assert_eq!(code, 0, "stderr: {}", String::from_utf8_lossy(&err));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "persisted\n42\n2\ntools-ok\n"
    );

    // A megabyte of output arrives whole.
    let (code, out, _) = run(
        &sb,
        sh("head -c 1048576 /dev/urandom | base64 -w 0 | head -c 1000000; echo"),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.len(), 1_000_001);

    sb.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_restarted_server_reaps_orphaned_vms() {
    let (tmp, rt) = ready_runtime().await;
    let id = uuid::Uuid::new_v4().to_string();
    let sb = rt
        .start(SandboxOptions::new(id.clone()))
        .await
        .expect("start");
    let dir = mags_vm::Layout::new(tmp.path()).sandbox(&id);
    let pid: i32 = std::fs::read_to_string(dir.pid_file())
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // Simulate a crashed server: the sandbox is never dropped.
    std::mem::forget(sb);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let rt2 = runtime(tmp.path());
    assert_eq!(rt2.reap_orphans(), 1);
    for _ in 0..100 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z"),
        "QEMU {pid} still running: {state}"
    );
    assert!(!dir.path().exists());
}

#[tokio::test]
async fn template_clones_get_their_own_randomness_identity_clock_and_disk() {
    let (_tmp, rt) = ready_runtime().await;
    // Each clone also checks that no earlier clone's file is on its disk
    // (they all overlay the one template disk), then leaves one there.
    let probe = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /etc/machine-id; \
                 python3 -c 'import random; print(random.getrandbits(64))'; date +%s; \
                 df -k --output=size /root | tail -1; \
                 test ! -e /root/clone-was-here && echo mine > /root/clone-was-here && sync";
    let mut seen = Vec::new();
    for disk_gb in [2u32, 3] {
        let mut opts = SandboxOptions::new(uuid::Uuid::new_v4().to_string());
        opts.disk_gb = disk_gb;
        let sb = rt.start(opts).await.expect("clone starts");
        let (code, out, err) = run(&sb, sh(probe)).await;
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        let out = String::from_utf8_lossy(&out).to_string();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        let guest_now: i64 = lines[3].trim().parse().expect("date");
        let host_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!(
            (guest_now - host_now).abs() < 10,
            "guest clock {guest_now} vs host {host_now}"
        );
        if disk_gb == 2 {
            // Its clock runs at the host's rate: told a fixed TSC rate
            // under TCG, a guest's clock ran 22 % fast on this host.
            let uptime = || async {
                let (_, out) = stdout_of(&sb, "cut -d' ' -f1 /proc/uptime").await;
                let s = out.trim().to_string();
                s.parse::<f64>().unwrap_or_else(|_| panic!("uptime {s:?}"))
            };
            let t0 = std::time::Instant::now();
            let g0 = uptime().await;
            tokio::time::sleep(std::time::Duration::from_secs(6)).await;
            let g1 = uptime().await;
            let rate = (g1 - g0) / t0.elapsed().as_secs_f64();
            assert!(
                (0.85..1.05).contains(&rate),
                "the guest's clock runs at {rate:.3}x the host's"
            );
        }
        let size_kb: u64 = lines[4].trim().parse().expect("df size");
        let want_kb = u64::from(disk_gb) << 20;
        assert!(
            size_kb > want_kb * 9 / 10 && size_kb <= want_kb,
            "disk {size_kb} KiB for {disk_gb} GiB"
        );
        seen.push((
            lines[0].to_string(),
            lines[1].to_string(),
            lines[2].to_string(),
        ));
        sb.shutdown().await.expect("shutdown");
    }
    assert_ne!(
        seen[0].0, seen[1].0,
        "kernel RNG output must differ between clones"
    );
    assert_ne!(
        seen[0].1, seen[1].1,
        "machine-id must differ between clones"
    );
    assert_ne!(
        seen[0].2, seen[1].2,
        "userspace RNG seeds must differ between clones"
    );
}

#[tokio::test]
async fn a_slept_sandbox_wakes_with_processes_and_files_intact() {
    let (tmp, rt) = ready_runtime().await;
    let sb = rt
        .start(SandboxOptions::new(uuid::Uuid::new_v4().to_string()))
        .await
        .expect("start");
    let setup = "echo kept > /root/file.txt; \
                 nohup bash -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 & \
                 echo $! > /root/bg.pid; sleep 0.5";
    let (code, _, err) = run(&sb, sh(setup)).await;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));

    let record = sb.sleep().await.expect("sleep");
    let state_bytes = std::fs::metadata(&record.state).expect("sleep state").len();
    eprintln!(
        "sleep snapshot: {} MiB for a 256 MiB guest",
        state_bytes >> 20
    );
    // Free and clean-cache pages go as zero pages (init_on_free + drop_caches):
    // without that this snapshot was 135 MiB, with it about 60.
    assert!(
        state_bytes < 128 << 20,
        "sleep snapshot of {state_bytes} bytes carries free memory"
    );
    // A server restart in between must not lose a slept sandbox.
    let rt = runtime(tmp.path());
    assert_eq!(rt.reap_orphans(), 0);
    let record = rt.sleep_record(&record.id).expect("sleep record survives");

    let sb = rt.wake(&record).await.expect("wake");
    let check = "cat /root/file.txt; kill -0 $(cat /root/bg.pid) && echo alive; \
                 a=$(cat /tmp/counter); sleep 0.5; b=$(cat /tmp/counter); [ $b -gt $a ] && echo counting";
    let (code, out, err) = run(&sb, sh(check)).await;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out), "kept\nalive\ncounting\n");
    sb.shutdown().await.expect("shutdown");
}

/// Not an assertion of speed (that is the benchmark's job): prints where a
/// clone's `Setup` spent its time, from the guest's own record.
#[tokio::test]
async fn setup_timeline_is_recorded_in_the_guest() {
    let (tmp, rt) = ready_runtime().await;
    // A fresh disk: a clone of the mounted template only takes an identity.
    let fresh = rt
        .start(SandboxOptions::new(uuid::Uuid::new_v4().to_string()))
        .await
        .expect("start");
    let log = setup_log(&fresh).await;
    assert!(log.contains("identity set"), "{log}");
    assert!(!log.contains("ext4 mounted"), "mounted again: {log}");
    fresh.shutdown().await.expect("shutdown");

    // A disk of its own (a workspace's): mounted by the clone's Setup.
    let disk = tmp.path().join("own.ext4");
    mags_vm::disk::create_disk(&disk, 2 << 30)
        .await
        .expect("disk");
    let mut opts = SandboxOptions::new(uuid::Uuid::new_v4().to_string());
    opts.disk = mags_vm::DiskSource::Existing {
        path: disk,
        format: mags_vm::DiskFormat::Raw,
        bytes: 2 << 30,
    };
    let own = rt.start(opts).await.expect("start on an existing disk");
    let log = setup_log(&own).await;
    for step in [
        "ext4 mounted",
        "overlay mounted",
        "switched root",
        "identity set",
    ] {
        assert!(log.contains(step), "{step} missing from {log}");
    }
    own.shutdown().await.expect("shutdown");
}

async fn setup_log(sb: &mags_vm::Sandbox) -> String {
    let (code, out) = stdout_of(sb, "cat /run/mags-setup.log").await;
    eprintln!("{out}");
    assert_eq!(code, 0);
    out
}
