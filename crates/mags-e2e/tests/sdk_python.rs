//! Our Python SDK (`sdk/python`) against the real server: its pytest suite
//! runs with `MAGS_API_URL`/`MAGS_API_TOKEN` aimed at a fresh `magsd` that
//! boots real VMs. `scripts/test-python-sdk` makes (once) a virtualenv with
//! httpx and pytest and installs the SDK from this checkout, editable.

use mags_e2e::Server;
use std::path::PathBuf;
use std::process::Command;

/// The repository root (two levels above this crate).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test virtualenv's interpreter, made or refreshed by the script.
fn sdk_python(root: &std::path::Path) -> String {
    let o = Command::new("bash")
        .arg(root.join("scripts/test-python-sdk"))
        .output()
        .expect("run scripts/test-python-sdk");
    assert!(
        o.status.success(),
        "scripts/test-python-sdk failed (it needs python3 with venv: \
         `apt-get install python3-venv`, and PyPI for httpx and pytest):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| l.strip_prefix("export MAGS_TEST_SDK_PYTHON="))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("scripts/test-python-sdk printed no interpreter: {out}"))
}

#[test]
fn python_sdk_pytest_suite() {
    let root = repo_root();
    let python = sdk_python(&root);
    let server = Server::start(&[]);
    let o = Command::new(&python)
        .args(["-m", "pytest", "-v", "-rfEs", "-p", "no:cacheprovider"])
        .arg(root.join("sdk/python/tests"))
        .current_dir(root.join("sdk/python"))
        .env("MAGS_API_URL", &server.url)
        .env("MAGS_API_TOKEN", &server.token)
        .env("MAGS_HOME", server.dir.path().join("home"))
        .env_remove("MAGS_TOKEN")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}");
    let log = server.log();
    assert!(
        o.status.success(),
        "pytest failed:\n{stdout}\n{}\nserver log (end):\n{}",
        String::from_utf8_lossy(&o.stderr),
        &log[log.len().saturating_sub(8000)..]
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "every test must run: {summary}"
    );
}
