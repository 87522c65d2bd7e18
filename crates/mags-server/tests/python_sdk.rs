//! The published Python SDK (`pip install magpie-mags==1.3.8`), unmodified,
//! against this server over real HTTP (fake executor), so contract breaks
//! show without VMs. Fails with a clear message when the SDK is missing.

mod common;

use std::process::Command;

/// `$MAGS_TEST_PYTHON` (`eval "$(scripts/test-python)"` makes one), else
/// `python3` if it has the SDK; a clear failure otherwise.
fn python_with_sdk() -> Option<String> {
    let python = std::env::var("MAGS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import mags.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    panic!(
        "{python} cannot import the Python SDK: run `eval \"$(scripts/test-python)\"` \
         (pip install magpie-mags==1.3.8 in a virtualenv) first"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_works_unmodified() {
    let Some(python) = python_with_sdk() else {
        return;
    };
    let h = common::harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = h.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_sdk_check.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("MAGS_API_URL", &url)
        .env("MAGS_API_TOKEN", &h.token)
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
}
