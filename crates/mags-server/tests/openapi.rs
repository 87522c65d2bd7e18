//! The committed OpenAPI document is the generated one, and it matches the
//! live router both ways: every documented operation is served, and every
//! route the router declares is documented.

mod common;

use axum::http::{Method, StatusCode};
use common::harness;

#[test]
fn committed_openapi_json_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == mags_server::openapi::document_text(),
        "openapi.json is out of date: run `cargo run -p mags-server --bin magsd -- openapi > openapi.json`"
    );
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let h = harness().await;
    let doc = mags_server::openapi::document();
    let paths = doc["paths"].as_object().expect("paths");
    let mut n = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item") {
            let concrete = path
                .replace("{id}", "no-such-id")
                .replace("{subdomain}", "no-such-sub");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let t = h.token.clone();
            let (status, body) = h.call(m, &concrete, Some(&t), Some("{}")).await;
            let unrouted = body["error"] == "no such endpoint";
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !unrouted,
                "{method} {path} is documented but not served: {status} {body}"
            );
            n += 1;
        }
    }
    assert!(n >= 25, "only {n} operations documented");
}

#[test]
fn every_route_is_documented() {
    let doc = mags_server::openapi::document();
    let paths = doc["paths"].as_object().expect("paths");
    let router_src = include_str!("../src/routes/mod.rs");
    let mut routes = 0;
    for piece in router_src.split(".route(").skip(1) {
        let path = piece
            .trim_start()
            .strip_prefix('"')
            .and_then(|p| p.split('"').next())
            .expect("a route path literal");
        let full = if path == "/health" {
            path.to_string()
        } else {
            format!("/api/v1{path}")
        };
        assert!(
            paths.contains_key(&full),
            "route {full} is not in the OpenAPI document"
        );
        routes += 1;
    }
    assert!(routes >= 20, "found only {routes} routes in routes/mod.rs");
}
