//! The other request parsing reachable without a server: bearer tokens,
//! uploaded file names, URL alias subdomains, and the JSON bodies of exec,
//! access, job updates and workspace resizes. Nothing panics, and what is
//! accepted is plain.
#![no_main]

use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mags_api::{AccessRequest, ExecRequest, ResizeRequest, UpdateJobRequest};
use mags_server::error::parse_json_object;
use mags_control::workspaces::clean_name;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v);
        if let Some(t) = mags_server::auth::bearer(&h) {
            assert!(!t.is_empty() && t.trim() == t);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(name) = clean_name(text) {
            assert!(!name.contains('/') && !name.contains('\\') && name != "..");
            assert!(!name.is_empty() && name.chars().count() <= 200);
        }
        if mags_api::valid_subdomain(text) {
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
    }
    let _ = parse_json_object::<ExecRequest>(data);
    let _ = parse_json_object::<AccessRequest>(data);
    let _ = parse_json_object::<UpdateJobRequest>(data);
    let _ = parse_json_object::<ResizeRequest>(data);
});
