//! Public URLs: access records and aliases, and how a subdomain resolves
//! (an alias follows the live job of its workspace). On SQLite and on
//! Postgres (`MAGS_TEST_POSTGRES_URL`, required like the other store
//! tests: a test never skips itself).

mod common;

use common::job;
use mags_api::JobState;
use mags_store::{Finish, Page, Route, Store, StoreError};

async fn exercise(store: &Store) {
    let u = store.create_user("url-user", false).await.expect("user");
    let a = store.insert_job(&job(&u.id, "site")).await.expect("job a");
    store.mark_running(&a.id, "vm-a").await.expect("running");
    let acc = store
        .ensure_access(&a.id, &u.id, 8080, "sub-a")
        .await
        .expect("access");
    assert_eq!((acc.subdomain.as_str(), acc.port), ("sub-a", 8080));
    // Asking again keeps the first subdomain.
    let again = store
        .ensure_access(&a.id, &u.id, 8080, "sub-other")
        .await
        .expect("access");
    assert_eq!(again.subdomain, "sub-a");
    assert!(store.subdomain_taken("sub-a").await.expect("taken"));
    assert_eq!(
        store.route("sub-a").await.expect("route"),
        Some(Route::Job {
            job_id: a.id.clone(),
            user_id: u.id.clone(),
            port: 8080,
            secret: None,
        })
    );
    assert_eq!(store.route("nope").await.expect("route"), None);

    store
        .create_alias("al-1", "mysite", &u.id, "site", Some("localhost"))
        .await
        .expect("alias");
    assert!(matches!(
        store.create_alias("al-2", "mysite", &u.id, "x", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.route("mysite").await.expect("route"),
        Some(Route::Job {
            job_id: a.id.clone(),
            user_id: u.id.clone(),
            port: 8080,
            secret: None,
        })
    );
    // The job ends: no live job; a new one in the workspace takes over.
    store
        .finish_job(
            &a.id,
            &Finish {
                status: JobState::Completed,
                exit_code: Some(0),
                error: None,
                script_duration_ms: Some(1),
            },
        )
        .await
        .expect("finish");
    assert_eq!(
        store.route("mysite").await.expect("route"),
        Some(Route::NoLiveJob {
            workspace_id: "site".into()
        })
    );
    let b = store.insert_job(&job(&u.id, "site")).await.expect("job b");
    store.mark_running(&b.id, "vm-b").await.expect("running");
    assert_eq!(
        store.route("mysite").await.expect("route"),
        Some(Route::Job {
            job_id: b.id.clone(),
            user_id: u.id.clone(),
            port: 8080,
            secret: None,
        }),
        "the alias follows the workspace, with the port it last used"
    );
    // A protected port (a browser's CDP endpoint) keeps its secret, also
    // when an alias of the workspace leads to it.
    let cdp = store
        .ensure_access_with(&b.id, &u.id, 9222, "cdp-b", Some("s3cret"))
        .await
        .expect("cdp access");
    assert_eq!(cdp.secret.as_deref(), Some("s3cret"));
    assert_eq!(
        store.route("cdp-b").await.expect("route"),
        Some(Route::Job {
            job_id: b.id.clone(),
            user_id: u.id.clone(),
            port: 9222,
            secret: Some("s3cret".into()),
        })
    );
    assert!(
        matches!(
            store.route("mysite").await.expect("route"),
            Some(Route::Job {
                port: 9222,
                secret: Some(_),
                ..
            })
        ),
        "an alias leads to the last port asked for, secret included"
    );
    let (rows, total) = store.aliases(&u.id, Page::first(10)).await.expect("list");
    assert_eq!((rows.len(), total), (1, 1));
    assert!(store.delete_alias(&u.id, "mysite").await.expect("delete"));
    assert!(!store.delete_alias(&u.id, "mysite").await.expect("delete"));
    assert_eq!(
        store
            .first_access(&a.id)
            .await
            .expect("first")
            .map(|a| a.port),
        Some(8080)
    );
}

#[tokio::test]
async fn sqlite_access() {
    let (store, _, _dir) = common::sqlite().await;
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_access() {
    let (store, schema) = common::postgres("mags_url").await;
    exercise(&store).await;
    store.close().await;
    schema.drop().await;
}
