//! Our Node SDK (`sdk/node`) against the real server: `npm ci && npm run
//! build` once, then its tests under node's own runner (`node --test`) with
//! `MAGS_API_URL`/`MAGS_API_TOKEN` aimed at a fresh `magsd` booting real VMs.

use mags_e2e::Server;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk/node")
}

/// Runs `program args` in `dir`; panics with its output if it fails.
fn run(dir: &Path, program: &str, args: &[&str]) {
    let o = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}. The Node SDK tests need Node 18+ and npm \
                 (`apt-get install nodejs npm`, or `scripts/install-deps --test`)"
            )
        });
    assert!(
        o.status.success(),
        "{program} {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn node_sdk_test_suite() {
    let dir = sdk_dir();
    run(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
    run(&dir, "npm", &["run", "build"]);
    let mut tests: Vec<PathBuf> = std::fs::read_dir(dir.join("test"))
        .expect("sdk/node/test")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".test.mjs") || name.ends_with(".test.cjs")
        })
        .collect();
    tests.sort();
    assert!(tests.len() >= 4, "test files: {tests:?}");

    let server = Server::start(&[]);
    let o = Command::new("node")
        .arg("--test")
        .args(&tests)
        .current_dir(&dir)
        .env("MAGS_API_URL", &server.url)
        .env("MAGS_API_TOKEN", &server.token)
        .env("MAGS_HOME", server.dir.path().join("home"))
        .env_remove("MAGS_TOKEN")
        .env_remove("NODE_OPTIONS")
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}");
    let log = server.log();
    assert!(
        o.status.success(),
        "node --test failed:\n{stdout}\n{}\nserver log (end):\n{}",
        String::from_utf8_lossy(&o.stderr),
        &log[log.len().saturating_sub(8000)..]
    );
    // The runner's closing counts: every test ran and passed.
    let count = |key: &str| {
        stdout
            .lines()
            .rev()
            .filter_map(|l| l.trim_start_matches(['#', 'ℹ', ' ']).strip_prefix(key))
            .find_map(|n| n.trim().parse::<u32>().ok())
    };
    let (tests_run, pass) = (count("tests "), count("pass "));
    assert!(
        tests_run.is_some_and(|n| n >= 10) && tests_run == pass,
        "tests {tests_run:?}, pass {pass:?}"
    );
    assert_eq!(count("fail "), Some(0));
    for key in ["skipped ", "todo ", "cancelled "] {
        assert_eq!(count(key).unwrap_or(0), 0, "{key}");
    }
}
