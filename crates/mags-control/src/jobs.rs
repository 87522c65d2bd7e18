//! Job admission, the control side of `POST /mags-jobs` (also used by
//! cron and browser sessions): a create request is checked and turned
//! into a [`NewJob`], the user's limits are checked ([`admit`]), the job
//! is stored and handed to the scheduler (or queued to take its workspace
//! over, [`schedule`]). No HTTP
//! here: every refusal is a typed [`ControlError`], which the API maps to a
//! status (`error.rs`) and cron to skip-or-fail.

use crate::quota::{human_bytes, DiskChange};
use crate::{Control, ControlError};
use mags_api::limits::{MAX_DISK_GB, MAX_EGRESS_RULES, MAX_SCRIPT_BYTES, MAX_TIMEOUT_SECS};
use mags_api::CreateJobRequest;
use mags_store::{clock, Job, NewJob, StoreError};
use std::collections::BTreeMap;

pub use crate::invalid::Invalid;

/// Checks, stores and schedules a job for `user_id` (the API and browser
/// sessions; cron stores its runs' jobs itself, see [`admit`]). Per-user
/// limits are checked before anything is stored (too many jobs waiting, a
/// new sandbox with every VM of the user busy, a disk past the quota or
/// one the host cannot hold: each its own [`QuotaError`]).
///
/// [`QuotaError`]: crate::quota::QuotaError
pub async fn submit(
    state: &Control,
    user_id: &str,
    req: CreateJobRequest,
) -> Result<Job, ControlError> {
    let new = admit(state, user_id, req).await?;
    let job = state.store.insert_job(&new).await?;
    schedule(state, job.clone()).await?;
    Ok(job)
}

/// The checks of [`submit`], storing nothing: the job to store, or why it
/// may not be. Cron uses it to store a run's job in the same transaction
/// as the run's claim ([`mags_store::Store::start_cron_run`]), then hands
/// it on with [`schedule`].
pub async fn admit(
    state: &Control,
    user_id: &str,
    req: CreateJobRequest,
) -> Result<NewJob, ControlError> {
    let new = validate(req, user_id, state.limits.job_timeout_secs)?;
    state.workspaces.check_files(user_id, &new.file_ids).await?;
    if let Some(base) = &new.base_workspace_id {
        state.workspaces.check_base(user_id, base).await?;
    }
    let quotas = &state.quotas;
    quotas.check_pending(&state.store, user_id).await?;
    if new.persistent && !replaces_a_sandbox(state, user_id, new.workspace_id.as_deref()).await? {
        let room = state.sandboxes.can_make_room_for(user_id);
        let elsewhere = state.store.vms_elsewhere(user_id).await?;
        quotas.check_new_sandbox(user_id, elsewhere, room)?;
    }
    let bytes = u64::from(new.disk_gb) << 30;
    let change = match &new.workspace_id {
        Some(name) => DiskChange::Workspace { name, bytes },
        None => DiskChange::Scratch { bytes },
    };
    quotas.check_disk(&state.store, user_id, change).await?;
    if let Some(dir) = &state.data_dir {
        // A workspace's existing disk only grows by the difference.
        let have = match &new.workspace_id {
            Some(name) => state
                .store
                .workspace(user_id, name)
                .await?
                .map_or(0, |w| w.disk_bytes),
            None => 0,
        };
        let what = format!("a {} disk", human_bytes(bytes));
        let needed = bytes.saturating_sub(have);
        crate::quota::check_host_disk(&state.store, dir, needed, &what).await?;
    }
    Ok(new)
}

/// Hands a stored, `accepted` job to the scheduler.
pub async fn schedule(state: &Control, job: Job) -> Result<(), ControlError> {
    // One live job per workspace, decided atomically in the database; a
    // job whose workspace is held waits its turn and takes it over.
    state.takeovers.submit(job).await?;
    Ok(())
}

/// Whether a job on `workspace` will take over a live sandbox of the user
/// (whose VM slot it then reuses, so no new slot is needed).
async fn replaces_a_sandbox(
    state: &Control,
    user_id: &str,
    workspace: Option<&str>,
) -> Result<bool, StoreError> {
    let Some(ws) = workspace else {
        return Ok(false);
    };
    let Some(holder) = state
        .store
        .workspace(user_id, ws)
        .await?
        .and_then(|w| w.live_job_id)
    else {
        return Ok(false);
    };
    Ok(state
        .store
        .job(&holder)
        .await?
        .is_some_and(|h| h.persistent && h.status.is_live()))
}

/// Checks a create request and makes the job to store. A one-shot job
/// without `timeout` gets `default_timeout_secs`.
pub fn validate(
    req: CreateJobRequest,
    user_id: &str,
    default_timeout_secs: Option<u64>,
) -> Result<NewJob, Invalid> {
    let bad = |m: String| Err(Invalid(m));
    if req.script.trim().is_empty() {
        return bad("script is required".into());
    }
    if req.script.len() > MAX_SCRIPT_BYTES {
        return bad(format!("script is larger than {MAX_SCRIPT_BYTES} bytes"));
    }
    if let Some(t) = req.job_type.as_deref() {
        if t != "inline" {
            return bad(format!("unsupported job type {t:?} (only \"inline\")"));
        }
    }
    if req.no_sleep && !req.persistent {
        return bad("no_sleep requires persistent".into());
    }
    if let Some(secs) = req.idle_timeout_secs {
        if !req.persistent {
            return bad("idle_timeout_secs requires persistent".into());
        }
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            return bad(format!(
                "idle_timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
            ));
        }
    }
    if let Some(secs) = req.timeout {
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            return bad(format!(
                "timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds"
            ));
        }
    }
    let timeout_secs = match req.timeout {
        Some(secs) => Some(secs),
        None if req.persistent => None,
        None => default_timeout_secs.filter(|s| *s > 0),
    };
    if req.disk_gb == 0 || req.disk_gb > MAX_DISK_GB {
        return bad(format!("disk_gb must be between 1 and {MAX_DISK_GB}"));
    }
    check_environment(&req.environment)?;
    if req.file_ids.len() > 100 {
        return bad("at most 100 file_ids".into());
    }
    check_egress_list("egress_allow", &req.egress_allow)?;
    check_egress_list("egress_deny", &req.egress_deny)?;
    let rootfs_type = non_empty(req.rootfs_type);
    if let Some(t) = &rootfs_type {
        if t.parse::<mags_vm::ImageVariant>().is_err() {
            let valid: Vec<&str> = mags_vm::ImageVariant::ALL
                .iter()
                .map(|v| v.as_str())
                .collect();
            return bad(format!(
                "unknown rootfs_type {t:?}: use one of {}",
                valid.join(", ")
            ));
        }
    }
    let workspace_id = non_empty(req.workspace_id);
    for ws in [&workspace_id, &req.base_workspace_id]
        .into_iter()
        .flatten()
    {
        check_workspace_id(ws)?;
    }
    let name = non_empty(req.name).or_else(|| workspace_id.clone());
    if let Some(n) = &name {
        if n.len() > 256 {
            return bad("name is longer than 256 characters".into());
        }
        crate::text::check_name("name", n)?;
    }
    Ok(NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        name,
        workspace_id,
        base_workspace_id: non_empty(req.base_workspace_id),
        persistent: req.persistent,
        no_sleep: req.no_sleep,
        no_sync: req.no_sync,
        startup_command: non_empty(req.startup_command),
        script: req.script,
        environment: req.environment,
        file_ids: req.file_ids,
        disk_gb: req.disk_gb,
        rootfs_type,
        idle_timeout_secs: req.idle_timeout_secs,
        no_internet: req.no_internet,
        egress_allow: req.egress_allow,
        egress_deny: req.egress_deny,
        timeout_secs,
        created_at: clock::monotonic_ms(),
    })
}

/// Environment variable names are shell words; values carry no NUL byte.
pub fn check_environment(env: &BTreeMap<String, String>) -> Result<(), Invalid> {
    for (k, v) in env {
        let valid_key = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(Invalid(format!("invalid environment variable name {k:?}")));
        }
        if v.contains('\0') {
            return Err(Invalid(format!(
                "environment variable {k} contains a NUL byte"
            )));
        }
    }
    Ok(())
}

/// Every entry is a CIDR or a hostname the egress proxy understands.
fn check_egress_list(field: &str, list: &[String]) -> Result<(), Invalid> {
    if list.len() > MAX_EGRESS_RULES {
        return Err(Invalid(format!(
            "{field}: at most {MAX_EGRESS_RULES} entries"
        )));
    }
    for entry in list {
        entry
            .parse::<mags_vm::egress::Rule>()
            .map_err(|e| Invalid(format!("{field}: {e}")))?;
    }
    Ok(())
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Workspace ids become directory and object names: keep them plain.
pub fn check_workspace_id(ws: &str) -> Result<(), Invalid> {
    let ok = ws.len() <= 128
        && !ws.starts_with('.')
        && ws
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "invalid workspace id {ws:?}: use up to 128 letters, digits, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaError;
    use crate::workspaces::WsError;

    /// What skips a cron run (the request or the user's state) against
    /// what fails the tick (the server): decided by type, never by status.
    #[test]
    fn refusals_are_told_from_failures_by_type() {
        let refusals = [
            ControlError::Invalid(Invalid("x".into())),
            WsError::NotFound("w".into()).into(),
            WsError::NoBase("b".into()).into(),
            WsError::Invalid("f".into()).into(),
            QuotaError::TooManyPending { pending: 3 }.into(),
            QuotaError::TooManySandboxes { max: 2 }.into(),
            QuotaError::Disk("over".into()).into(),
            QuotaError::HostDisk("full".into()).into(),
        ];
        for e in refusals {
            assert!(e.is_refusal(), "{e:?}");
        }
        let failures: [ControlError; 4] = [
            WsError::Disabled.into(),
            WsError::Storage("s3".into()).into(),
            StoreError::UnsupportedUrl("x".into()).into(),
            QuotaError::Store(StoreError::UnsupportedUrl("x".into())).into(),
        ];
        for e in failures {
            assert!(!e.is_refusal(), "{e:?}");
        }
    }

    fn req(script: &str) -> CreateJobRequest {
        CreateJobRequest::new(script)
    }

    #[test]
    fn validation() {
        assert!(validate(req("echo"), "u", None).is_ok());
        assert!(validate(req("  \n"), "u", None).is_err());
        let mut r = req("x");
        r.no_sleep = true;
        assert!(validate(r.clone(), "u", None).is_err());
        r.persistent = true;
        assert!(validate(r, "u", None).is_ok());
        let mut r = req("x");
        r.disk_gb = 0;
        assert!(validate(r, "u", None).is_err());
        let mut r = req("x");
        r.environment.insert("A=B".into(), "v".into());
        assert!(validate(r, "u", None).is_err());
        let mut r = req("x");
        r.workspace_id = Some("../etc".into());
        assert!(validate(r, "u", None).is_err());
        let mut r = req("x");
        r.idle_timeout_secs = Some(5);
        assert!(validate(r.clone(), "u", None).is_err(), "needs persistent");
        r.persistent = true;
        assert_eq!(
            validate(r.clone(), "u", None)
                .ok()
                .and_then(|j| j.idle_timeout_secs),
            Some(5)
        );
        r.idle_timeout_secs = Some(0);
        assert!(validate(r, "u", None).is_err());
    }

    #[test]
    fn an_unknown_rootfs_type_names_the_valid_ones() {
        let mut r = req("x");
        r.rootfs_type = Some("gentoo".into());
        match validate(r.clone(), "u", None) {
            Err(Invalid(m)) => {
                assert!(
                    m.contains("\"gentoo\"") && m.contains("standard, browser, claude, pi"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        for ok in ["standard", "browser", "claude", "pi", ""] {
            r.rootfs_type = Some(ok.into());
            assert!(validate(r.clone(), "u", None).is_ok(), "{ok}");
        }
    }

    #[test]
    fn timeouts() {
        let timeout =
            |r: CreateJobRequest, default| validate(r, "u", default).map(|j| j.timeout_secs);
        assert_eq!(timeout(req("x"), Some(60)).ok(), Some(Some(60)));
        assert_eq!(timeout(req("x"), None).ok(), Some(None));
        let mut r = req("x");
        r.timeout = Some(5);
        assert_eq!(timeout(r.clone(), Some(60)).ok(), Some(Some(5)));
        r.persistent = true;
        assert_eq!(timeout(r, Some(60)).ok(), Some(Some(5)), "given: kept");
        let mut r = req("x");
        r.persistent = true;
        assert_eq!(
            timeout(r, Some(60)).ok(),
            Some(None),
            "the default is for one-shot jobs"
        );
        for bad in [0, MAX_TIMEOUT_SECS + 1] {
            let mut r = req("x");
            r.timeout = Some(bad);
            assert!(timeout(r, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn workspace_names_the_job_when_no_name_is_given() {
        let mut r = req("x");
        r.workspace_id = Some("ws1".into());
        let j = validate(r.clone(), "u", None).ok();
        assert_eq!(j.and_then(|j| j.name), Some("ws1".into()));
        r.name = Some("n".into());
        let j = validate(r, "u", None).ok();
        assert_eq!(j.and_then(|j| j.name), Some("n".into()));
    }
}
