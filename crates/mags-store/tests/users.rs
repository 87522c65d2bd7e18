//! Users, token listings and the audit log: removing a user removes all it
//! owns and nothing of anyone else's; tokens are found by id or prefix
//! within a scope; the audit log filters and prunes by age and count. On
//! SQLite and on Postgres (`MAGS_TEST_POSTGRES_URL`, required like the
//! other store tests).

mod common;

use common::job;
use mags_store::{clock, AuditFilter, NewAuditEvent, Page, Store, Upload};

/// Gives `user_id` one of everything a user can own.
async fn own_everything(store: &Store, user_id: &str, tag: &str) -> String {
    let j = store.insert_job(&job(user_id, tag)).await.expect("job");
    store
        .claim_workspace(user_id, tag, &j.id)
        .await
        .expect("claim");
    store
        .insert_upload(&Upload {
            id: format!("up-{tag}"),
            user_id: user_id.into(),
            name: "f.txt".into(),
            size: 1,
            sha256: "00".into(),
            created_at: clock::now_ms(),
        })
        .await
        .expect("upload");
    store
        .create_alias(
            &format!("al-{tag}"),
            &format!("sub-{tag}"),
            user_id,
            tag,
            None,
        )
        .await
        .expect("alias");
    store
        .ensure_access(&j.id, user_id, 8080, &format!("acc-{tag}"))
        .await
        .expect("access");
    store
        .add_ssh_key(&format!("fp-{tag}"), &j.id, user_id)
        .await
        .expect("ssh key");
    store.create_token(user_id).await.expect("token");
    j.spec.id
}

async fn exercise(store: &Store) {
    let gone = store.create_user("gone", false).await.expect("user");
    let kept = store.create_user("kept", true).await.expect("user");
    let gone_job = own_everything(store, &gone.id, "g").await;
    let kept_job = own_everything(store, &kept.id, "k").await;
    let (info, token) = store.create_token(&gone.id).await.expect("token");

    // Listings and lookups, scoped.
    let (all, total) = store.tokens(None, Page::first(10)).await.expect("tokens");
    assert_eq!((all.len(), total), (3, 3));
    let (mine, total) = store
        .tokens(Some(&gone.id), Page::first(10))
        .await
        .expect("tokens");
    assert_eq!((mine.len(), total), (2, 2));
    // Pages: the newest one, then the rest; the count is of all of them.
    let (first, total) = store.tokens(None, Page::first(1)).await.expect("page");
    let (rest, _) = store
        .tokens(None, Page::first(1).next())
        .await
        .expect("page");
    assert_eq!((first.len(), rest.len(), total), (1, 1, 3));
    assert_eq!(first[0].id, all[0].id);
    assert_eq!(rest[0].id, all[1].id);
    // A prefix lookup finds by SQL, exactly (no LIKE wildcards).
    let found = store.find_tokens(&info.prefix, None).await.expect("find");
    assert_eq!(found.iter().map(|t| &t.id).collect::<Vec<_>>(), [&info.id]);
    let wild = store.find_tokens("mags_%%%%", None).await.expect("find");
    assert!(wild.is_empty(), "{wild:?}");
    assert_eq!(mine[0].id, info.id, "newest first");
    assert_eq!(mine[0].user_name, "gone");
    let by_prefix = store
        .find_tokens(&info.prefix, Some(&gone.id))
        .await
        .expect("find");
    assert_eq!(by_prefix.len(), 1);
    assert!(store
        .find_tokens(&info.prefix, Some(&kept.id))
        .await
        .expect("find")
        .is_empty());
    assert_eq!(
        store.find_tokens(&info.id, None).await.expect("find").len(),
        1
    );
    assert!(store
        .find_tokens("mags_", None)
        .await
        .expect("find")
        .is_empty());
    assert!(store.revoked_token(&token).await.expect("q").is_none());
    store.revoke_token(&info.id).await.expect("revoke");
    let revoked = store.revoked_token(&token).await.expect("q").expect("row");
    assert_eq!(
        (revoked.user_id.as_str(), revoked.revoked),
        (gone.id.as_str(), true)
    );

    // Removal: counts, then every row of the user is gone, none of kept's.
    let has = store.user_records(&gone.id).await.expect("records");
    assert_eq!(
        (
            has.tokens,
            has.jobs,
            has.live_jobs,
            has.workspaces,
            has.uploads,
            has.url_aliases
        ),
        (2, 1, 1, 1, 1, 1)
    );
    let removed = store
        .remove_user(&gone.id)
        .await
        .expect("remove")
        .expect("existed");
    assert_eq!(removed, has);
    assert!(store.remove_user(&gone.id).await.expect("again").is_none());
    assert!(store.user_by_name("gone").await.expect("q").is_none());
    assert!(store.authenticate(&token).await.expect("auth").is_none());
    assert!(store.job(&gone_job).await.expect("job").is_none());
    assert!(store.ssh_key_owner("fp-g").await.expect("ssh").is_none());
    assert!(store.route("sub-g").await.expect("route").is_none());
    assert!(store.route("acc-g").await.expect("route").is_none());
    assert!(store.workspace(&gone.id, "g").await.expect("ws").is_none());
    assert!(store.upload(&gone.id, "up-g").await.expect("up").is_none());
    let left = store.user_records(&kept.id).await.expect("records");
    assert_eq!(
        (left.tokens, left.jobs, left.workspaces, left.uploads),
        (1, 1, 1, 1)
    );
    assert!(store.job(&kept_job).await.expect("job").is_some());
    assert!(store.ssh_key_owner("fp-k").await.expect("ssh").is_some());
    let (users, total) = store.users(Page::first(10)).await.expect("users");
    assert_eq!((users.len(), total), (1, 1));

    // The audit log: filters, newest N oldest first, pruning.
    for i in 0..5 {
        let who = if i % 2 == 0 { &kept.id } else { "someone" };
        store
            .record_audit(
                &NewAuditEvent::new(if i == 4 {
                    mags_api::AuditAction::AuthFail
                } else {
                    mags_api::AuditAction::JobStop
                })
                .by_user(who, Some("k"))
                .target("job", &format!("j{i}")),
            )
            .await
            .expect("record");
    }
    let f = |user: Option<&str>, action: Option<&str>, limit: i64| AuditFilter {
        user_id: user.map(str::to_string),
        since: None,
        action: action.map(str::to_string),
        limit,
    };
    let ids = |v: Vec<mags_store::AuditEvent>| -> Vec<String> {
        v.into_iter().filter_map(|e| e.event.target_id).collect()
    };
    let kept_events = store
        .audit_events(&f(Some(&kept.id), None, 10))
        .await
        .expect("q");
    assert_eq!(ids(kept_events), ["j0", "j2", "j4"]);
    let newest = store.audit_events(&f(None, None, 2)).await.expect("q");
    assert_eq!(ids(newest), ["j3", "j4"]);
    let fails = store
        .audit_events(&f(Some(&kept.id), Some("auth.fail"), 10))
        .await
        .expect("q");
    assert_eq!(ids(fails), ["j4"]);
    let all = store.audit_events(&f(None, None, 100)).await.expect("q");
    let third = all[2].at;
    let since = store
        .audit_events(&AuditFilter {
            since: Some(third),
            ..f(None, None, 100)
        })
        .await
        .expect("q");
    assert_eq!(ids(since), ["j2", "j3", "j4"]);
    // The newest 4, read two at a time from where they start.
    let newest4 = f(None, None, 4);
    let start = store.audit_start(&newest4).await.expect("start");
    let pos = start.as_ref().map(|(at, id)| (*at, id.as_str()));
    let first = store.audit_page(&newest4, pos, 2).await.expect("page");
    let (at, id) = first.last().map(|e| (e.at, e.id.clone())).expect("last");
    let second = store
        .audit_page(&newest4, Some((at, &id)), 2)
        .await
        .expect("page");
    assert_eq!([ids(first), ids(second)].concat(), ["j1", "j2", "j3", "j4"]);
    let kept10 = f(Some(&kept.id), None, 10);
    assert!(
        store.audit_start(&kept10).await.expect("start").is_none(),
        "no more than the limit: from the first"
    );
    let kept_all = store.audit_page(&kept10, None, 10).await.expect("page");
    assert_eq!(ids(kept_all), ["j0", "j2", "j4"]);
    // By count: keep the newest 3; by age: everything before the 4th.
    assert_eq!(store.prune_audit(i64::MIN, 3).await.expect("prune"), 2);
    assert_eq!(
        ids(store.audit_events(&f(None, None, 100)).await.expect("q")),
        ["j2", "j3", "j4"]
    );
    let fourth = all[3].at;
    assert_eq!(store.prune_audit(fourth, 100).await.expect("prune"), 1);
    assert_eq!(
        ids(store.audit_events(&f(None, None, 100)).await.expect("q")),
        ["j3", "j4"]
    );
    assert_eq!(store.prune_audit(i64::MIN, 100).await.expect("prune"), 0);
}

#[tokio::test]
async fn sqlite_users_tokens_audit() {
    let (store, _url, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_users_tokens_audit() {
    let (store, schema) = common::postgres("mags_users").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}
