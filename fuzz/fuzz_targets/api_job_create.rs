//! `POST /mags-jobs` without a server: the body as the handler reads it
//! (`parse_json_object`), then the same validation. Nothing panics; what is
//! accepted respects every documented bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mags_api::CreateJobRequest;
use mags_server::error::parse_json_object;
use mags_api::limits::{MAX_DISK_GB, MAX_TIMEOUT_SECS};
use mags_control::jobs::validate;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_json_object::<CreateJobRequest>(data) else {
        return;
    };
    let persistent = req.persistent;
    let Ok(job) = validate(req, "user", Some(3600)) else {
        return;
    };
    assert!(!job.script.trim().is_empty());
    assert!((1..=MAX_DISK_GB).contains(&job.disk_gb));
    assert!(!job.no_sleep || persistent);
    match job.timeout_secs {
        Some(t) => assert!((1..=MAX_TIMEOUT_SECS).contains(&t)),
        None => assert!(persistent, "a one-shot job always gets a timeout here"),
    }
    for ws in [&job.workspace_id, &job.base_workspace_id].into_iter().flatten() {
        assert!(!ws.contains('/') && !ws.starts_with('.'), "{ws:?}");
    }
    for key in job.environment.keys() {
        assert!(!key.is_empty() && !key.contains('='), "{key:?}");
    }
});
