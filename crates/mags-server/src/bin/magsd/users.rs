//! `magsd user ...`, `magsd token ...`, `magsd audit`: the operator's
//! commands on the server's database (the same `--data-dir` /
//! `--database-url` as `serve`; they work while the server runs).
//!
//! What they change is in the audit log as done by the operator: the
//! event's user is the user concerned, its detail says "by the operator".
//!
//! Listings read the database a page at a time and print as they go, so
//! they run in bounded memory however many rows there are; user-given text
//! is printed escaped (no control character reaches the terminal).

use anyhow::{bail, Context as _};
use clap::Subcommand;
use mags_api::AuditAction;
use mags_control::audit::parse_since;
use mags_control::text::escape;
use mags_server::config::DataArgs;
use mags_server::view::{audit_entry, token_info, user_info};
use mags_store::{clock, valid_user_name, AuditFilter, NewAuditEvent, Page, Store, User};
use std::os::unix::fs::DirBuilderExt as _;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        #[command(flatten)]
        data: DataArgs,
        name: String,
        /// Make it an admin (manages users, tokens and the audit log over
        /// the API; no access to other users' sandboxes).
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove a user with its tokens, jobs, workspaces, uploads, cron jobs
    /// and URLs (refused while it has live jobs, unless --force).
    Remove {
        #[command(flatten)]
        data: DataArgs,
        name: String,
        /// Remove it even with live jobs (their VMs are not stopped by
        /// this command).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token (printed once) for a user, creating the user if missing.
    Create {
        #[command(flatten)]
        data: DataArgs,
        /// The user the token belongs to.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        data: DataArgs,
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or display prefix (it stops working at once).
    Revoke {
        #[command(flatten)]
        data: DataArgs,
        id_or_prefix: String,
    },
}

/// Arguments of `magsd audit`.
#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only this user's events.
    #[arg(long)]
    user: Option<String>,
    /// Only events since: RFC 3339 or an age (30m, 24h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only this action (e.g. auth.fail, token.revoke).
    #[arg(long)]
    action: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 100)]
    limit: i64,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn open(data: &DataArgs) -> anyhow::Result<Store> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data.data_dir)
        .with_context(|| format!("cannot create {}", data.data_dir.display()))?;
    Ok(Store::connect(&data.database_url()).await?)
}

async fn user_named(store: &Store, name: &str) -> anyhow::Result<User> {
    store
        .user_by_name(name)
        .await?
        .with_context(|| format!("there is no user {name:?} (`magsd user list` shows them)"))
}

/// An event done by the operator about `user`.
fn by_operator(action: AuditAction, user: &User) -> NewAuditEvent {
    NewAuditEvent::new(action).by_user(&user.id, Some(&user.name))
}

/// Rows read per query by the listings.
const PAGE: i64 = 500;

/// Prints a JSON array one element at a time.
#[derive(Default)]
struct JsonArray {
    started: bool,
}

impl JsonArray {
    fn item(&mut self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        let sep = if self.started { "," } else { "[" };
        self.started = true;
        println!("{sep}\n{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }

    fn end(self) {
        println!("{}", if self.started { "]" } else { "[]" });
    }
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { data, name, admin } => {
            if !valid_user_name(&name) {
                bail!("invalid user name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@'");
            }
            let store = open(&data).await?;
            let user = match store.create_user(&name, admin).await {
                Err(mags_store::StoreError::Conflict(_)) => bail!("user {name:?} already exists"),
                r => r?,
            };
            let role = if admin { "admin" } else { "user" };
            let event = by_operator(AuditAction::UserAdd, &user).target("user", &user.id);
            store
                .record_audit(&event.detail(format!("{name} ({role}) by the operator")))
                .await?;
            println!("{}", user.id);
            eprintln!("added {role} {name:?}; `magsd token create --user {name}` makes its token");
            store.close().await;
        }
        UserCommand::List { data, json } => {
            let store = open(&data).await?;
            let mut out = JsonArray::default();
            if !json {
                println!("{:<24} {:<6} {:<24} ID", "NAME", "ADMIN", "CREATED");
            }
            let mut page = Page::first(PAGE);
            loop {
                let (users, _) = store.users(page).await?;
                for u in users.iter().map(user_info) {
                    if json {
                        out.item(&u)?;
                    } else {
                        let admin = if u.is_admin { "yes" } else { "no" };
                        println!(
                            "{:<24} {admin:<6} {:<24} {}",
                            escape(&u.name),
                            u.created_at,
                            escape(&u.id)
                        );
                    }
                }
                if (users.len() as i64) < PAGE {
                    break;
                }
                page = page.next();
            }
            if json {
                out.end();
            }
            store.close().await;
        }
        UserCommand::Remove { data, name, force } => {
            let store = open(&data).await?;
            let user = user_named(&store, &name).await?;
            let has = store.user_records(&user.id).await?;
            if has.live_jobs > 0 && !force {
                bail!(
                    "user {name:?} has {} live job(s) (accepted, queued, running or sleeping); \
                     stop them first (`mags stop`) or pass --force",
                    has.live_jobs
                );
            }
            let removed = store
                .remove_user(&user.id)
                .await?
                .with_context(|| format!("user {name:?} was removed meanwhile"))?;
            let cache = data.data_dir.join("workspaces").join(&user.id);
            let cache_note = match std::fs::remove_dir_all(&cache) {
                Ok(()) => format!(
                    "its cached workspace disks ({}) were deleted",
                    cache.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "no cached workspace disks".into()
                }
                Err(e) => format!(
                    "its cached workspace disks ({}) could not be deleted: {e}",
                    cache.display()
                ),
            };
            let summary = format!(
                "{} token(s), {} job(s) with their output ({} live), {} workspace record(s), \
                 {} upload record(s), {} cron job(s), {} URL alias(es)",
                removed.tokens,
                removed.jobs,
                removed.live_jobs,
                removed.workspaces,
                removed.uploads,
                removed.cron_jobs,
                removed.url_aliases
            );
            let event = by_operator(AuditAction::UserRemove, &user).target("user", &user.id);
            store
                .record_audit(&event.detail(format!("{name} by the operator: {summary}")))
                .await?;
            println!("removed user {name:?}: {summary}; {cache_note}.");
            println!(
                "Not deleted: workspace snapshots and uploaded file contents in object storage \
                 (under ws/{}/ and files/)",
                user.id
            );
            if removed.live_jobs > 0 {
                println!(
                    "Its {} live job(s) lost their records; their VMs end when magsd restarts.",
                    removed.live_jobs
                );
            }
            store.close().await;
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { data, user } => {
            let store = open(&data).await?;
            let existed = store.user_by_name(&user).await?.is_some();
            if !existed && !valid_user_name(&user) {
                bail!("invalid user name {user:?}: use 1-64 letters, digits, '-', '_', '.' or '@'");
            }
            let u = store.ensure_user(&user, user == "admin").await?;
            let (info, token) = store.create_token(&u.id).await?;
            let event = by_operator(AuditAction::TokenCreate, &u).target("token", &info.id);
            store
                .record_audit(&event.detail(format!("{} by the operator", info.prefix)))
                .await?;
            println!("{token}");
            if !existed {
                eprintln!("user {user:?} did not exist and was created");
            }
            eprintln!(
                "token {} for user {user:?} created; it is shown only once",
                info.prefix
            );
            store.close().await;
        }
        TokenCommand::List { data, user, json } => {
            let store = open(&data).await?;
            let user_id = match &user {
                Some(n) => Some(user_named(&store, n).await?.id),
                None => None,
            };
            let mut out = JsonArray::default();
            if !json {
                println!(
                    "{:<36} {:<12} {:<16} {:<24} {:<24} REVOKED",
                    "ID", "PREFIX", "USER", "CREATED", "LAST USED"
                );
            }
            let mut page = Page::first(PAGE);
            loop {
                let (tokens, _) = store.tokens(user_id.as_deref(), page).await?;
                for t in tokens.iter().map(token_info) {
                    if json {
                        out.item(&t)?;
                        continue;
                    }
                    let last = t.last_used_at.as_deref().unwrap_or("never");
                    let revoked = if t.revoked { "yes" } else { "no" };
                    println!(
                        "{:<36} {:<12} {:<16} {:<24} {last:<24} {revoked}",
                        escape(&t.id),
                        escape(&t.prefix),
                        escape(&t.user),
                        t.created_at
                    );
                }
                if (tokens.len() as i64) < PAGE {
                    break;
                }
                page = page.next();
            }
            if json {
                out.end();
            }
            store.close().await;
        }
        TokenCommand::Revoke { data, id_or_prefix } => {
            let store = open(&data).await?;
            let found = store.find_tokens(&id_or_prefix, None).await?;
            let t = match found.as_slice() {
                [t] => t,
                [] => bail!(
                    "no token has the id or prefix {id_or_prefix:?} (prefixes need 6+ characters)"
                ),
                many => bail!(
                    "{id_or_prefix:?} matches {} tokens; give the id (`magsd token list`)",
                    many.len()
                ),
            };
            if t.revoked {
                println!(
                    "token {} of {:?} was already revoked",
                    t.prefix, t.user_name
                );
            } else {
                store.revoke_token(&t.id).await?;
                let mut event = NewAuditEvent::new(AuditAction::TokenRevoke)
                    .by_user(&t.user_id, Some(&t.user_name))
                    .target("token", &t.id)
                    .detail(format!("{} by the operator", t.prefix));
                event.token_prefix = Some(t.prefix.clone());
                store.record_audit(&event).await?;
                println!("revoked token {} of {:?}", t.prefix, t.user_name);
            }
            store.close().await;
        }
    }
    Ok(())
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let store = open(&args.data).await?;
    let user_id = match &args.user {
        Some(n) => Some(user_named(&store, n).await?.id),
        None => None,
    };
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, clock::now_ms()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if args.limit < 1 {
        bail!("--limit must be at least 1");
    }
    let filter = AuditFilter {
        user_id,
        since,
        action: args.action.clone(),
        limit: args.limit,
    };
    // The newest `limit` events, oldest first, read a page at a time.
    let mut after = store.audit_start(&filter).await?;
    let mut left = args.limit;
    let mut out = JsonArray::default();
    while left > 0 {
        let want = PAGE.min(left);
        let pos = after.as_ref().map(|(at, id)| (*at, id.as_str()));
        let events = store.audit_page(&filter, pos, want).await?;
        for e in &events {
            let e = audit_entry(e);
            if args.json {
                out.item(&e)?;
            } else {
                println!("{}", audit_line(&e));
            }
        }
        left -= events.len() as i64;
        match events.last() {
            Some(last) if events.len() as i64 == want => after = Some((last.at, last.id.clone())),
            _ => break,
        }
    }
    if args.json {
        out.end();
    }
    store.close().await;
    Ok(())
}

/// One event as `magsd audit` prints it; everything a user could have
/// chosen is escaped.
fn audit_line(e: &mags_api::AuditEntry) -> String {
    let or_dash = |v: &Option<String>| escape(v.as_deref().unwrap_or("-")).into_owned();
    let who = e.user.as_ref().or(e.user_id.as_ref()).cloned();
    let target = match (&e.target_kind, &e.target_id) {
        (Some(k), Some(i)) => format!("{}:{}", escape(k), escape(i)),
        _ => "-".into(),
    };
    format!(
        "{} {:<16} {:<16} {:<12} {:<15} {target} {}",
        e.time,
        escape(&e.action),
        or_dash(&who),
        or_dash(&e.token_prefix),
        or_dash(&e.source_ip),
        escape(e.detail.as_deref().unwrap_or(""))
    )
}
