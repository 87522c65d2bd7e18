#!/usr/bin/env python3
"""Runs every test binary of the workspace, each with a wall-clock limit,
in lanes that share the machine, and prints what each took.

    .ci/tests.py [--lanes vm,other] [--only SUBSTR ...] [-- TEST ARGS]

The binaries come from `cargo test --workspace --no-run` (built already by
the CI's build stage, so this only lists them). Binaries that boot real VMs
(the mags-e2e and mags-vm tests) run one after another in the `vm` lane,
each with `--test-threads=2`: the guests run under TCG and take both cores.
Everything else runs in the `other` lane at the same time: those binaries
mostly wait on SQLite, Postgres, S3 or a fake executor.

Each binary runs from its package's directory (as `cargo test` does), its
output goes to a log file under $MAGS_CI_LOGS, and a failed or timed-out
binary's log is printed in full at the end, so a failure reads on its own.
Exit status: 0 when every binary passed, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

# Seconds one binary may run before it is killed (and counted failed).
# The e2e harness bounds each `mags` command at 10 min and each test's
# magsd at 20 min, so a hang fails within a binary's limit.
BINARY_LIMIT_S = int(os.environ.get("MAGS_CI_BINARY_LIMIT_S", "1800"))

VM_PACKAGES = {"mags-e2e", "mags-vm"}


def list_binaries():
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--no-run", "--message-format=json"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    bins = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        pkg = msg["package_id"]
        target = msg["target"]
        # package_id: "path+file:///.../crates/mags-e2e#0.1.0" or "name 0.1.0 (...)"
        manifest = msg["manifest_path"]
        name = os.path.basename(os.path.dirname(manifest))
        kind = target["kind"][0]
        label = f"{name}::{target['name']}" if kind != "lib" else f"{name} (unit)"
        if kind == "bin":
            label = f"{name} (bin {target['name']})"
        bins.append(
            {
                "label": label,
                "package": name,
                "exe": msg["executable"],
                "cwd": os.path.dirname(manifest),
                "lane": "vm" if name in VM_PACKAGES else "other",
                "pkg_id": pkg,
            }
        )
    # Doc tests have no binary of their own: cargo builds and runs them.
    bins.append(
        {
            "label": "doc tests",
            "package": "workspace",
            "cmd": ["cargo", "test", "--workspace", "--doc", "--quiet"],
            "exe": "cargo-doc-tests",
            "cwd": os.getcwd(),
            "lane": "other",
        }
    )
    # One entry per executable (a test target can be reported twice).
    seen, unique = set(), []
    for b in bins:
        if b["exe"] not in seen:
            seen.add(b["exe"])
            unique.append(b)
    return unique


def counts(log_path):
    """passed, failed, ignored summed over the binary's `test result:` lines."""
    p = f = i = 0
    try:
        with open(log_path, errors="replace") as fh:
            for line in fh:
                if line.startswith("test result:"):
                    parts = line.replace(";", "").split()
                    for n, word in zip(parts, parts[1:]):
                        if word == "passed":
                            p += int(n) if n.isdigit() else 0
                        elif word == "failed":
                            f += int(n) if n.isdigit() else 0
                        elif word == "ignored":
                            i += int(n) if n.isdigit() else 0
    except OSError:
        pass
    return p, f, i


def run_binary(b, test_args, logs, print_lock):
    log_path = os.path.join(logs, b["label"].replace("::", "__").replace(" ", "_").replace("(", "").replace(")", "") + ".log")
    b["log"] = log_path
    with print_lock:
        print(f"-- [{b['lane']}] {b['label']}: started", flush=True)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            b.get("cmd") or [b["exe"], *test_args],
            cwd=b["cwd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=BINARY_LIMIT_S)
            b["timed_out"] = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = -9
            b["timed_out"] = True
    b["secs"] = time.monotonic() - t0
    b["rc"] = rc
    b["passed"], b["failed"], b["ignored"] = counts(log_path)
    ok = rc == 0
    with print_lock:
        what = "ok" if ok else ("TIMED OUT" if b["timed_out"] else f"FAILED (exit {rc})")
        print(
            f"-- [{b['lane']}] {b['label']}: {what} in {b['secs']:.0f} s "
            f"({b['passed']} passed, {b['failed']} failed, {b['ignored']} ignored)",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lanes", default="vm,other", help="lanes to run (vm, other)")
    ap.add_argument("--only", action="append", default=[], help="run binaries whose label contains this")
    ap.add_argument("rest", nargs="*", help="arguments for every test binary (after --)")
    args = ap.parse_args()
    test_args = args.rest or ["--test-threads=2"]
    logs = os.environ.get("MAGS_CI_LOGS") or os.path.join(os.getcwd(), "target", "ci-logs")
    os.makedirs(logs, exist_ok=True)

    bins = list_binaries()
    lanes = set(args.lanes.split(","))
    bins = [b for b in bins if b["lane"] in lanes]
    if args.only:
        bins = [b for b in bins if any(o in b["label"] for o in args.only)]
    if not bins:
        print("no test binaries matched", file=sys.stderr)
        return 1
    print(f"{len(bins)} test binaries; logs in {logs}; each limited to {BINARY_LIMIT_S} s", flush=True)

    print_lock = threading.Lock()
    t0 = time.monotonic()

    def lane_worker(name):
        for b in bins:
            if b["lane"] == name:
                run_binary(b, test_args, logs, print_lock)

    threads = [threading.Thread(target=lane_worker, args=(n,)) for n in sorted(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0

    failed = [b for b in bins if b["rc"] != 0]
    for b in failed:
        print(f"\n======== output of {b['label']} ({b['log']}) ========")
        with open(b["log"], errors="replace") as fh:
            sys.stdout.write(fh.read())
    print("\n== test binaries (wall seconds)")
    print(f"{'lane':<6} {'secs':>6}  {'passed':>6} {'failed':>6}  binary")
    for b in sorted(bins, key=lambda b: (b["lane"], -b["secs"])):
        mark = "" if b["rc"] == 0 else ("  <- TIMED OUT" if b["timed_out"] else "  <- FAILED")
        print(f"{b['lane']:<6} {b['secs']:6.0f}  {b['passed']:6d} {b['failed']:6d}  {b['label']}{mark}")
    for name in sorted(lanes):
        total = sum(b["secs"] for b in bins if b["lane"] == name)
        print(f"lane {name}: {total:.0f} s")
    print(f"tests wall: {wall:.0f} s")
    # The plain closing line (`WORD: N passed, N failed, N skipped`) a
    # reader of CI output can count without knowing this script.
    passed = sum(b["passed"] for b in bins)
    failures = sum(b["failed"] for b in bins) + sum(1 for b in failed if b["failed"] == 0)
    ignored = sum(b["ignored"] for b in bins)
    print(f"tests: {passed} passed, {failures} failed, {ignored} skipped")
    if failed:
        print("failed: " + ", ".join(b["label"] for b in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
