//! Tokens, users and the audit log over the API: a user manages its own
//! tokens, a revoked token stops at the next request, the admin manages
//! users, and the audit log records what matters without a secret in it.

mod common;

use axum::http::{Method, StatusCode};
use common::{harness, Harness};
use serde_json::{json, Value};

/// Every stored audit row as one string (to look for secrets in).
async fn audit_table_text(h: &Harness) -> String {
    let rows = sqlx::query(
        "SELECT COALESCE(user_id, '') || ' ' || COALESCE(token_id, '') || ' ' || \
         COALESCE(token_prefix, '') || ' ' || action || ' ' || COALESCE(target_id, '') || ' ' || \
         COALESCE(detail, '') AS line FROM audit_events",
    )
    .fetch_all(h.store.pool())
    .await
    .expect("audit rows");
    rows.iter()
        .map(|r| sqlx::Row::try_get::<String, _>(r, "line").expect("line"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn actions(list: &Value) -> Vec<String> {
    list["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_user_creates_lists_and_revokes_its_own_tokens() {
    let h = harness().await;
    let t = h.token.clone();
    let (code, made) = h
        .call_as(&t, Method::POST, "/api/v1/mags-tokens", Some(json!({})))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{made}");
    let new = made["token"].as_str().expect("token").to_string();
    assert!(new.starts_with(made["prefix"].as_str().expect("prefix")));
    assert_eq!(made["user"], "alice");
    let (code, who) = h.call_as(&new, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(
        (code, who["user"].as_str()),
        (StatusCode::OK, Some("alice"))
    );

    // Listed without the secret, with when it was last used.
    let (code, list) = h
        .call_as(&t, Method::GET, "/api/v1/mags-tokens", None)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["total"], 2, "{list}");
    assert!(!list.to_string().contains(&new), "a secret in the listing");
    let listed = list["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|x| x["id"] == made["id"])
        .expect("the new token is listed")
        .clone();
    assert_eq!(listed["revoked"], false);
    assert!(listed["last_used_at"].is_string(), "{listed}");

    // Revoked by its prefix: the very next request with it is refused.
    let prefix = made["prefix"].as_str().expect("prefix");
    let (code, v) = h
        .call_as(
            &t,
            Method::DELETE,
            &format!("/api/v1/mags-tokens/{prefix}"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["id"], made["id"]);
    let (code, v) = h.call_as(&new, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].is_string());
    // Revoking again is harmless; an unknown id is a JSON 404; a prefix
    // that fits both tokens is a 400 naming the problem.
    let path = format!("/api/v1/mags-tokens/{}", made["id"].as_str().expect("id"));
    let (code, v) = h.call_as(&t, Method::DELETE, &path, None).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("already"));
    let (code, v) = h
        .call_as(&t, Method::DELETE, "/api/v1/mags-tokens/nope", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
    let (code, v) = h
        .call_as(&t, Method::DELETE, "/api/v1/mags-tokens/mags_", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "too short to be a prefix: {v}");
    // The old token still works; the listing says which one is revoked.
    let (_, list) = h
        .call_as(&t, Method::GET, "/api/v1/mags-tokens", None)
        .await;
    let revoked: Vec<bool> = list["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|x| x["revoked"].as_bool().expect("revoked"))
        .collect();
    assert_eq!(revoked.iter().filter(|r| **r).count(), 1, "{list}");
}

#[tokio::test]
async fn the_admin_manages_users_and_any_token_but_not_their_jobs() {
    let h = harness().await;
    let root = h.add_user("root", true).await;
    let (code, u) = h
        .call_as(
            &root,
            Method::POST,
            "/api/v1/mags-users",
            Some(json!({"name": "carol"})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{u}");
    assert_eq!(
        (u["name"].as_str(), u["is_admin"].as_bool()),
        (Some("carol"), Some(false))
    );
    for (body, want) in [
        (json!({"name": "carol"}), StatusCode::CONFLICT),
        (json!({"name": "bad name"}), StatusCode::BAD_REQUEST),
        (json!({"name": ""}), StatusCode::BAD_REQUEST),
        (json!({"is_admin": true}), StatusCode::BAD_REQUEST),
    ] {
        let (code, v) = h
            .call_as(
                &root,
                Method::POST,
                "/api/v1/mags-users",
                Some(body.clone()),
            )
            .await;
        assert_eq!(code, want, "{body} -> {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (_, users) = h
        .call_as(&root, Method::GET, "/api/v1/mags-users", None)
        .await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["alice", "carol", "root"]);

    // A token for carol, made by the admin; the admin sees and revokes it.
    let (code, made) = h
        .call_as(
            &root,
            Method::POST,
            "/api/v1/mags-tokens",
            Some(json!({"user": "carol"})),
        )
        .await;
    assert_eq!(
        (code, made["user"].as_str()),
        (StatusCode::CREATED, Some("carol"))
    );
    let carol = made["token"].as_str().expect("token").to_string();
    let (code, list) = h
        .call_as(&root, Method::GET, "/api/v1/mags-tokens?user=carol", None)
        .await;
    assert_eq!((code, list["total"].as_u64()), (StatusCode::OK, Some(1)));
    let (code, _) = h
        .call_as(&root, Method::GET, "/api/v1/mags-tokens?user=ghost", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, list) = h
        .call_as(&root, Method::GET, "/api/v1/mags-tokens?user=alice", None)
        .await;
    assert_eq!(code, StatusCode::OK);
    let alice_token_id = list["tokens"][0]["id"].as_str().expect("id").to_string();

    // Carol's job is hers alone: the admin gets a 404 like anyone else.
    let (code, job) = h
        .call_as(
            &carol,
            Method::POST,
            "/api/v1/mags-jobs",
            Some(json!({"script": "echo hi"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let job_path = format!(
        "/api/v1/mags-jobs/{}/status",
        job["request_id"].as_str().expect("id")
    );
    let (code, _) = h.call_as(&root, Method::GET, &job_path, None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let (code, v) = h
        .call_as(
            &root,
            Method::DELETE,
            &format!("/api/v1/mags-tokens/{alice_token_id}"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, _) = h
        .call_as(&h.token.clone(), Method::GET, "/api/v1/mags-jobs", None)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "alice's revoked token");
}

#[tokio::test]
async fn the_audit_log_records_security_events_without_secrets() {
    let h = harness().await;
    let t = h.token.clone();
    let bob = h.add_user("bob", false).await;
    let root = h.add_user("root", true).await;

    // Failed authentication: a token of our shape (prefix kept), a
    // pasted password (nothing of it kept), a revoked token (its user).
    let fake = format!("mags_{}", "Z".repeat(40));
    let password = "hunter2-correct-horse";
    for bad in [fake.as_str(), password] {
        let (code, _) = h.call_as(bad, Method::GET, "/api/v1/mags-jobs", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
    let (_, made) = h
        .call_as(&t, Method::POST, "/api/v1/mags-tokens", Some(json!({})))
        .await;
    let spare = made["token"].as_str().expect("token").to_string();
    let path = format!("/api/v1/mags-tokens/{}", made["id"].as_str().expect("id"));
    h.call_as(&t, Method::DELETE, &path, None).await;
    let (code, _) = h.call_as(&spare, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // Deletes, stop, URL access, by alice.
    let (_, job) = h
        .call_as(
            &t,
            Method::POST,
            "/api/v1/mags-jobs",
            Some(json!({"script": "echo", "persistent": true})),
        )
        .await;
    let id = job["request_id"].as_str().expect("id").to_string();
    for _ in 0..250 {
        if h.get(&format!("/api/v1/mags-jobs/{id}/status")).await.1["status"] == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (code, v) = h
        .call_as(
            &t,
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/access"),
            Some(json!({"port": 8080})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, _) = h
        .call_as(
            &t,
            Method::POST,
            &format!("/api/v1/mags-jobs/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    // An alias needs one of alice's workspaces.
    let alice = h
        .store
        .user_by_name("alice")
        .await
        .expect("q")
        .expect("alice");
    let holder = common::new_job(&alice.id, "echo");
    h.store.insert_job(&holder).await.expect("job");
    h.store
        .claim_workspace(&alice.id, "w", &holder.id)
        .await
        .expect("workspace");
    let (code, v) = h
        .call_as(
            &t,
            Method::POST,
            "/api/v1/mags-url-aliases",
            Some(json!({"subdomain": "al", "workspace_id": "w"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, _) = h
        .call_as(&t, Method::DELETE, "/api/v1/mags-url-aliases/al", None)
        .await;
    assert_eq!(code, StatusCode::OK);
    h.call_as(
        &t,
        Method::POST,
        "/api/v1/mags-cron",
        Some(json!({"name": "c", "cron_expression": "@daily", "script": "echo"})),
    )
    .await;
    let (code, _) = h
        .call_as(&t, Method::DELETE, "/api/v1/mags-cron/c", None)
        .await;
    assert_eq!(code, StatusCode::OK);

    let (code, mine) = h.call_as(&t, Method::GET, "/api/v1/mags-audit", None).await;
    assert_eq!(code, StatusCode::OK, "{mine}");
    let got = actions(&mine);
    for want in [
        "token.create",
        "token.revoke",
        "auth.fail",
        "access.url",
        "job.stop",
        "alias.delete",
        "cron.delete",
    ] {
        assert!(got.iter().any(|a| a == want), "no {want} in {got:?}");
    }
    let revoked_use = mine["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "auth.fail")
        .expect("auth.fail")
        .clone();
    assert_eq!(revoked_use["user"], "alice", "{revoked_use}");
    assert_eq!(revoked_use["token_prefix"], made["prefix"]);

    // Bob sees none of it; the admin sees everything, filterable.
    let (_, bobs) = h
        .call_as(&bob, Method::GET, "/api/v1/mags-audit", None)
        .await;
    assert_eq!(bobs["total"], 0, "{bobs}");
    let (_, all) = h
        .call_as(
            &root,
            Method::GET,
            "/api/v1/mags-audit?action=auth.fail",
            None,
        )
        .await;
    assert_eq!(all["total"], 3, "{all}");
    let prefixes: Vec<Value> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["token_prefix"].clone())
        .collect();
    assert_eq!(prefixes[0], json!(&fake[..12]));
    assert_eq!(prefixes[1], Value::Null, "nothing of a password is kept");
    let (_, alices) = h
        .call_as(
            &root,
            Method::GET,
            "/api/v1/mags-audit?user=alice&limit=2",
            None,
        )
        .await;
    assert_eq!(alices["total"], 2);
    assert_eq!(
        actions(&alices),
        ["alias.delete", "cron.delete"],
        "the newest two, oldest first"
    );
    let (_, future) = h
        .call_as(
            &root,
            Method::GET,
            "/api/v1/mags-audit?since=2999-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(future["total"], 0);
    for bad in ["since=yesterday", "limit=0", "limit=100000"] {
        let (code, v) = h
            .call_as(
                &root,
                Method::GET,
                &format!("/api/v1/mags-audit?{bad}"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }

    let table = audit_table_text(&h).await;
    for secret in [
        t.as_str(),
        spare.as_str(),
        fake.as_str(),
        password,
        bob.as_str(),
    ] {
        assert!(!table.contains(secret), "a secret in the audit log");
    }
    assert!(
        !table.contains("hunter2"),
        "part of a password in the audit log"
    );
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_recorded_only_up_to_the_per_minute_bound() {
    let h = harness().await;
    let n = mags_control::audit::REFUSALS_PER_MINUTE + 15;
    for i in 0..n {
        let (code, _) = h
            .call_as(
                &format!("mags_nope{i}"),
                Method::GET,
                "/api/v1/whoami",
                None,
            )
            .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
    let rows = h
        .store
        .audit_events(&mags_store::AuditFilter {
            action: Some("auth.fail".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("events");
    assert_eq!(rows.len() as u32, mags_control::audit::REFUSALS_PER_MINUTE);
    // Real requests still work and are still recorded.
    let t = h.token.clone();
    let (code, _) = h
        .call_as(&t, Method::POST, "/api/v1/mags-tokens", Some(json!({})))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (_, mine) = h
        .call_as(
            &t,
            Method::GET,
            "/api/v1/mags-audit?action=token.create",
            None,
        )
        .await;
    assert_eq!(mine["total"], 1);
}
