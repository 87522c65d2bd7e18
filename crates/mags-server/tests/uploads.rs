//! `POST /mags-files` through the router (real SQLite store, real local
//! object store): one part keeps the single-file answer, several parts are
//! each stored and all their ids returned, a refused part leaves nothing
//! of the whole request behind.

mod common;

use axum::http::StatusCode;
use common::{files_under, harness_with_limits, upload_count, upload_parts as upload, Harness};
use mags_control::Limits;
use serde_json::{json, Value};

async fn harness() -> Harness {
    harness_with_limits(
        Limits {
            upload_max_bytes: 1000,
            ..Limits::new(4)
        },
        true,
    )
    .await
}

#[tokio::test]
async fn one_part_keeps_the_single_file_answer() {
    let h = harness().await;
    let (status, v) = upload(&h, &[("file", "a.txt", b"alpha")]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["file_id", "name", "sha256", "size"], "{v}");
    assert_eq!(
        (v["name"].clone(), v["size"].clone()),
        (json!("a.txt"), json!(5))
    );
}

#[tokio::test]
async fn several_parts_are_each_stored_and_all_ids_returned() {
    let h = harness().await;
    let (status, v) = upload(
        &h,
        &[
            ("file", "config.json", b"{}"),
            ("other", "ignored.txt", b"not a file part"),
            ("file", "app.js", b"console.log(1)"),
            ("file", "dir/data.csv", b"a,b\n1,2\n"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["file_ids"]
        .as_array()
        .expect("file_ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ids.len(), 3, "{v}");
    assert_eq!(v["file_id"].as_str(), Some(ids[0]), "the first file on top");
    let names: Vec<&str> = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["config.json", "app.js", "data.csv"]);
    assert_eq!(upload_count(&h).await, 3);
    // Each id is usable by a job of its owner.
    let (status, v) = h.create(json!({"script": "echo", "file_ids": ids})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn a_refused_part_leaves_nothing_of_the_request() {
    let h = harness().await;
    let big = vec![b'x'; 1001];
    let (status, v) = upload(
        &h,
        &[("file", "ok.txt", b"fine"), ("file", "big.bin", &big)],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("big.bin"),
        "{v}"
    );
    assert_eq!(upload_count(&h).await, 0, "the first part is gone too");
    assert_eq!(files_under(&h.data_dir().join("objects")), 0);

    let (status, v) = upload(&h, &[("nofile", "x", b"x")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("file"));
}
