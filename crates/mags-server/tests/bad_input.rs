//! Bad input gets a clear JSON error and changes nothing: malformed
//! uploads, extractor rejections (JSON, path, query), names with control
//! characters, aliases to missing workspaces and listing pages out of
//! range. The router in-process over a real SQLite store.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{harness, harness_with_workspaces, Harness};
use mags_control::Limits;
use serde_json::{json, Value};

/// Status and `application/json` with an `error` string.
fn assert_json_error(
    what: &str,
    (status, headers, body): &(StatusCode, axum::http::HeaderMap, Value),
    want: StatusCode,
) -> String {
    assert_eq!(*status, want, "{what}: {body}");
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content type {ct:?}"
    );
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error string in {body}"))
        .to_string()
}

fn request(
    h: &Harness,
    method: Method,
    path: &str,
    ct: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token));
    if let Some(ct) = ct {
        r = r.header(header::CONTENT_TYPE, ct);
    }
    r.body(Body::from(body)).expect("request")
}

async fn count(h: &Harness, table: &str) -> i64 {
    let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(h.store.pool())
        .await
        .expect("count");
    sqlx::Row::try_get(&row, "n").expect("n")
}

const BOUNDARY: &str = "mags-test-boundary";

fn part(name: &str, filename: Option<&str>, data: &str) -> String {
    let file = filename.map_or(String::new(), |f| format!("; filename=\"{f}\""));
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\
         Content-Type: text/plain\r\n\r\n{data}\r\n"
    )
}

#[tokio::test]
async fn malformed_uploads_are_json_400s_and_store_nothing() {
    let h = harness_with_workspaces(Limits::new(4)).await;
    let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
    let end = format!("--{BOUNDARY}--\r\n");
    let whole = format!("{}{end}", part("file", Some("a.txt"), &"x".repeat(5000)));
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        // The body stops in the middle of the file's data.
        (
            "truncated",
            Some(&multipart),
            whole[..3000].to_string(),
            "multipart",
        ),
        (
            "no boundary",
            Some("multipart/form-data"),
            whole.clone(),
            "boundary",
        ),
        (
            "wrong part name",
            Some(&multipart),
            format!("{}{end}", part("upload", Some("a.txt"), "data")),
            "no multipart part named \"file\"",
        ),
        (
            "no part at all",
            Some(&multipart),
            end.clone(),
            "no multipart part named \"file\"",
        ),
        (
            "not multipart",
            Some("application/json"),
            r#"{"file": "a"}"#.to_string(),
            "multipart/form-data",
        ),
        (
            "no content type",
            None,
            whole.clone(),
            "multipart/form-data",
        ),
        (
            "closing boundary missing",
            Some(&multipart),
            part("file", Some("a.txt"), "data"),
            "multipart",
        ),
    ];
    for (what, ct, body, needle) in cases {
        let req = request(
            &h,
            Method::POST,
            "/api/v1/mags-files",
            ct,
            body.into_bytes(),
        );
        let resp = h.send(req).await;
        let error = assert_json_error(what, &resp, StatusCode::BAD_REQUEST);
        assert!(
            error.contains(needle),
            "{what}: {error:?} should mention {needle:?}"
        );
        assert_eq!(count(&h, "uploads").await, 0, "{what}: nothing stored");
    }
    // And a good one still works.
    let req = request(
        &h,
        Method::POST,
        "/api/v1/mags-files",
        Some(&multipart),
        whole.into_bytes(),
    );
    let (status, _, v) = h.send(req).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(count(&h, "uploads").await, 1);
}

#[tokio::test]
async fn extractor_rejections_are_json() {
    let h = harness().await;
    let jobs = "/api/v1/mags-jobs";
    let cases: Vec<(&str, Method, String, Option<&str>, &str)> = vec![
        (
            "JSON syntax",
            Method::POST,
            jobs.into(),
            Some("application/json"),
            "{\"script\": ",
        ),
        (
            "JSON not an object",
            Method::POST,
            jobs.into(),
            Some("application/json"),
            "[1]",
        ),
        (
            "empty body",
            Method::POST,
            jobs.into(),
            Some("application/json"),
            "",
        ),
        (
            "wrong field type",
            Method::POST,
            jobs.into(),
            None,
            r#"{"script": 5}"#,
        ),
        ("query", Method::GET, format!("{jobs}?page=abc"), None, ""),
        (
            "logs query",
            Method::GET,
            format!("{jobs}/x/logs?limit=-1"),
            None,
            "",
        ),
        (
            "path",
            Method::GET,
            format!("{jobs}/%FF%FE/status"),
            None,
            "",
        ),
        (
            "listing query",
            Method::GET,
            "/api/v1/mags-cron?offset=many".into(),
            None,
            "",
        ),
    ];
    for (what, method, path, ct, body) in cases {
        let req = request(&h, method, &path, ct, body.as_bytes().to_vec());
        assert_json_error(what, &h.send(req).await, StatusCode::BAD_REQUEST);
    }
    assert_eq!(h.job_count().await, 0);
    // A JSON body without a content type is still read (the published
    // client does not always send one).
    let req = request(
        &h,
        Method::POST,
        jobs,
        None,
        br#"{"script": "echo hi"}"#.to_vec(),
    );
    let (status, _, v) = h.send(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn names_with_control_characters_are_refused() {
    let h = harness().await;
    let t = h.token.clone();
    let bad_names = [
        "line\nforged: admin logged in",
        "\u{1b}[2Jcleared",
        "del\u{7f}",
        "c1\u{9b}31m",
    ];
    for name in bad_names {
        let (status, v) = h.create(json!({"script": "echo", "name": name})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("name must not contain control"),
            "{v}"
        );
        let cron = json!({"name": name, "cron_expression": "0 3 * * *", "script": "echo"});
        let (status, v) = h
            .call(
                Method::POST,
                "/api/v1/mags-cron",
                Some(&t),
                Some(&cron.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains("name"), "{v}");
        let browser = json!({"name": name});
        let (status, v) = h
            .call(
                Method::POST,
                "/api/v1/mags-browser",
                Some(&t),
                Some(&browser.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        let ws = json!({"script": "echo", "workspace_id": name});
        let (status, v) = h.create(ws).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("workspace id"),
            "{v}"
        );
        let alias = json!({"subdomain": "site", "workspace_id": name});
        let (status, v) = h
            .call(
                Method::POST,
                "/api/v1/mags-url-aliases",
                Some(&t),
                Some(&alias.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
    }
    assert_eq!(h.job_count().await, 0);
    assert_eq!(count(&h, "cron_jobs").await, 0);
    assert_eq!(count(&h, "url_aliases").await, 0);
    // User names are plainer still (admin's POST /mags-users).
    let root = h.add_user("root", true).await;
    let users_before = count(&h, "users").await;
    for name in bad_names {
        let body = json!({"name": name}).to_string();
        let (status, v) = h
            .call(Method::POST, "/api/v1/mags-users", Some(&root), Some(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or("")
                .contains("invalid user name"),
            "{v}"
        );
    }
    assert_eq!(count(&h, "users").await, users_before);

    // Renaming a cron job is checked the same way and changes nothing.
    let cron = json!({"name": "nightly", "cron_expression": "0 3 * * *", "script": "echo"});
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/mags-cron",
            Some(&t),
            Some(&cron.to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/mags-cron/{id}");
    let rename = json!({"name": "x\r\ny"}).to_string();
    let (status, v) = h.call(Method::PATCH, &path, Some(&t), Some(&rename)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = h.get(&path).await;
    assert_eq!(v["name"], "nightly");
}

#[tokio::test]
async fn an_alias_to_a_missing_workspace_is_a_404_and_changes_nothing() {
    let h = harness().await;
    let t = h.token.clone();
    let alias = json!({"subdomain": "docs", "workspace_id": "nope"}).to_string();
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(&t),
            Some(&alias),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "workspace nope not found");
    assert_eq!(count(&h, "url_aliases").await, 0);
    // Another user's workspace of that name is just as missing.
    let bob = h.user_token("bob").await;
    let bob_id = h
        .store
        .user_by_name("bob")
        .await
        .expect("q")
        .expect("bob")
        .id;
    let job = common::new_job(&bob_id, "echo");
    h.store.insert_job(&job).await.expect("job");
    h.store
        .claim_workspace(&bob_id, "nope", &job.id)
        .await
        .expect("claim");
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(&t),
            Some(&alias),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(&bob),
            Some(&alias),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "bob's own workspace: {v}");
}

#[tokio::test]
async fn listings_are_pages_with_the_whole_count() {
    let h = harness().await;
    let t = h.token.clone();
    for i in 0..3 {
        let cron =
            json!({"name": format!("c{i}"), "cron_expression": "0 3 * * *", "script": "echo"});
        let (status, v) = h
            .call(
                Method::POST,
                "/api/v1/mags-cron",
                Some(&t),
                Some(&cron.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        h.store
            .create_token(
                &h.store
                    .user_by_name("alice")
                    .await
                    .expect("q")
                    .expect("a")
                    .id,
            )
            .await
            .expect("token");
    }
    let (status, v) = h.get("/api/v1/mags-cron?limit=2&offset=1").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["cron_jobs"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["c1", "c2"]);
    assert_eq!(v["total"], 3);
    let (_, v) = h.get("/api/v1/mags-cron").await;
    assert_eq!(
        v["cron_jobs"].as_array().map(Vec::len),
        Some(3),
        "a plain call: all"
    );
    let (_, v) = h.get("/api/v1/mags-tokens?limit=1").await;
    assert_eq!(v["tokens"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["total"], 4);
    for path in [
        "/api/v1/mags-cron?limit=0",
        "/api/v1/mags-cron?limit=1001",
        "/api/v1/mags-url-aliases?limit=0",
        "/api/v1/mags-tokens?limit=5000",
        "/api/v1/mags-workspaces?limit=0",
    ] {
        let (status, v) = h.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"], "limit must be between 1 and 1000", "{path}");
    }
}

#[tokio::test]
async fn logs_are_streamed_whole_or_by_offset_and_limit() {
    let h = harness().await;
    let id = h
        .create_ok("echo one\necho two >&2\necho three\nprintf four")
        .await;
    h.wait_final(&id).await;
    let messages = |v: &Value| -> Vec<String> {
        v["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .filter(|e| e["source"] != "system")
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    };
    let (status, v) = h.get(&format!("/api/v1/mags-jobs/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(messages(&v), ["one", "two", "three", "four"]);
    let (_, v) = h
        .get(&format!("/api/v1/mags-jobs/{id}/logs?offset=1&limit=2"))
        .await;
    assert_eq!(messages(&v), ["two", "three"]);
    let (_, v) = h
        .get(&format!("/api/v1/mags-jobs/{id}/logs?offset=100"))
        .await;
    assert_eq!(v, json!({"logs": []}));
    let (status, v) = h.get(&format!("/api/v1/mags-jobs/{id}/logs?limit=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = h.get("/api/v1/mags-jobs/missing/logs").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}
