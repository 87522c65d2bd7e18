//! The operator's commands, run as the real `magsd` binary on a real
//! SQLite database: users, tokens (never a secret after creation), and the
//! audit log they leave.

mod common;

use mags_api::AuditAction;
use mags_store::Store;
use serde_json::Value;
use std::process::Output;

fn magsd(dir: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_magsd"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MAGS_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run magsd")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "magsd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output, needle: &str) {
    assert!(!out.status.success(), "magsd should have failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON")
}

#[tokio::test]
async fn users_and_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(&magsd(d, &["user", "add", "alice"]));
    ok(&magsd(d, &["user", "add", "root", "--admin"]));
    failed(&magsd(d, &["user", "add", "alice"]), "already exists");
    failed(&magsd(d, &["user", "add", "bad name"]), "invalid user name");
    let users = json(&magsd(d, &["user", "list", "--json"]));
    let names: Vec<(&str, bool)> = users
        .as_array()
        .expect("users")
        .iter()
        .map(|u| (u["name"].as_str().unwrap_or(""), u["is_admin"] == true))
        .collect();
    assert_eq!(names, [("alice", false), ("root", true)]);

    let token = ok(&magsd(d, &["token", "create", "--user", "alice"]))
        .trim()
        .to_string();
    assert!(token.starts_with("mags_") && token.len() == 45, "{token}");
    let second = ok(&magsd(d, &["token", "create", "--user", "alice"]));
    let listing = magsd(d, &["token", "list", "--user", "alice", "--json"]);
    let tokens = json(&listing);
    assert_eq!(tokens.as_array().map(Vec::len), Some(2));
    let text = ok(&magsd(d, &["token", "list"]));
    for secret in [token.as_str(), second.trim()] {
        assert!(!ok(&listing).contains(secret) && !text.contains(secret));
    }
    assert!(text.contains("alice") && text.contains("never"), "{text}");

    // Revoke by display prefix; the database refuses the token at once.
    let prefix = &token[..12];
    ok(&magsd(d, &["token", "revoke", prefix]));
    failed(&magsd(d, &["token", "revoke", "zzzzzzzz"]), "no token");
    failed(&magsd(d, &["token", "revoke", "mags_"]), "no token");
    let store = Store::connect(&format!("sqlite://{}/mags.db", d.display()))
        .await
        .expect("store");
    assert!(store.authenticate(&token).await.expect("auth").is_none());
    assert!(store
        .authenticate(second.trim())
        .await
        .expect("auth")
        .is_some());

    // A live job blocks removal until --force; removal says what went.
    let alice = store
        .user_by_name("alice")
        .await
        .expect("q")
        .expect("alice");
    let mut job = common::new_job(&alice.id, "echo");
    store.insert_job(&job).await.expect("job");
    job.id = uuid::Uuid::new_v4().to_string();
    store.insert_job(&job).await.expect("job");
    failed(&magsd(d, &["user", "remove", "alice"]), "2 live job(s)");
    assert!(store.user_by_name("alice").await.expect("q").is_some());
    let out = ok(&magsd(d, &["user", "remove", "alice", "--force"]));
    assert!(out.contains("2 token(s), 2 job(s)"), "{out}");
    assert!(out.contains("Not deleted"), "{out}");
    assert!(store.user_by_name("alice").await.expect("q").is_none());
    assert!(store
        .authenticate(second.trim())
        .await
        .expect("auth")
        .is_none());
    failed(&magsd(d, &["user", "remove", "alice"]), "no user");

    // Every change is in the audit log, none with a secret.
    let events = json(&magsd(d, &["audit", "--json"]));
    let actions: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "user.add",
            "user.add",
            "token.create",
            "token.create",
            "token.revoke",
            "user.remove"
        ]
    );
    let all = events.to_string();
    assert!(!all.contains(&token) && !all.contains(second.trim()));
    let root_only = json(&magsd(d, &["audit", "--json", "--user", "root"]));
    assert_eq!(root_only.as_array().map(Vec::len), Some(1));
    let recent = json(&magsd(
        d,
        &[
            "audit",
            "--json",
            "--since",
            "1h",
            "--action",
            "user.remove",
        ],
    ));
    assert_eq!(recent.as_array().map(Vec::len), Some(1));
    failed(&magsd(d, &["audit", "--since", "soon"]), "invalid time");
    store.close().await;
}

/// No control character a user could have put in the database (a name
/// from before names were checked, an audit detail) reaches the
/// operator's terminal: the listings print them escaped.
#[tokio::test]
async fn operator_listings_escape_user_given_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let store = Store::connect(&format!("sqlite://{}/mags.db", d.display()))
        .await
        .expect("store");
    let evil = "mallory\u{1b}[2J\u{9b}31m\nforged";
    let u = store.create_user(evil, false).await.expect("user");
    store.create_token(&u.id).await.expect("token");
    store
        .record_audit(
            &mags_store::NewAuditEvent::new(AuditAction::JobStop)
                .by_user(&u.id, Some(evil))
                .target("job", "j\u{7}1")
                .detail("detail\r\nfake line \u{1b}]0;title\u{7}"),
        )
        .await
        .expect("audit");
    store.close().await;
    for args in [
        &["user", "list"][..],
        &["token", "list"],
        &["audit"],
        &["audit", "--limit", "1"],
    ] {
        let out = ok(&magsd(d, args));
        let raw: Vec<char> = out
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{args:?} printed {raw:?}: {out:?}");
        assert!(
            out.contains("mallory\\u{1b}[2J\\u{9b}31m\\nforged"),
            "{args:?}: {out}"
        );
        // One line per row (plus a header for the tables).
        assert!(
            !out.lines().any(|l| l.starts_with("forged")),
            "{args:?}: {out}"
        );
    }
    let events = json(&magsd(d, &["audit", "--json"]));
    assert_eq!(
        events[0]["detail"],
        "detail\r\nfake line \u{1b}]0;title\u{7}"
    );
    let users = json(&magsd(d, &["user", "list", "--json"]));
    assert_eq!(users[0]["name"], evil);
}
