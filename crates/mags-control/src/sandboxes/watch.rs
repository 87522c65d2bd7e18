//! The background loop over live sandboxes: sleeps the idle ones, notices
//! dead VMs (a `no_sleep` sandbox is restarted, others end in `error`),
//! wakes `no_sleep` sandboxes found asleep (after a restart, or when the
//! setting was turned on) and saves running sandboxes' synced workspaces
//! every [`super::SandboxConfig::autosync`] (what a lost host loses is at
//! most that much; it is not activity, so the sandbox still sleeps). Each action runs in its own task with the
//! sandbox's slot lock; a slot that is busy is looked at next time.

use super::{Entry, Shared, Slot};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sandboxes are looked at.
const TICK: Duration = Duration::from_millis(250);
/// How long after a failed wake a `no_sleep` sandbox is tried again.
const WAKE_RETRY: Duration = Duration::from_secs(30);

/// Runs the loop until the registry is dropped or closes.
pub(super) fn spawn(shared: Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.closing.load(Ordering::SeqCst) {
                return;
            }
            for entry in shared.entries() {
                check(&shared, entry);
            }
        }
    });
}

fn check(shared: &Arc<Shared>, entry: Arc<Entry>) {
    let Ok(slot) = entry.slot.clone().try_lock_owned() else {
        return;
    };
    let settings = entry.settings();
    match &*slot {
        Slot::Running { vm, .. } if !vm.is_alive() => {
            let why = vm
                .death()
                .unwrap_or_else(|| "its VM stopped unexpectedly".into());
            tokio::spawn(shared.clone().lost(entry, slot, why));
        }
        Slot::Running { .. }
            if !settings.no_sleep
                && !shared.in_use(&entry)
                && entry.idle_for() >= settings.idle_timeout =>
        {
            let why = format!("idle for {}", human(settings.idle_timeout));
            let shared = shared.clone();
            tokio::spawn(async move { shared.sleep_now(&entry, slot, &why).await });
        }
        Slot::Running { vm, .. }
            if entry.synced_workspace
                && shared
                    .cfg
                    .autosync
                    .is_some_and(|every| super::lock(&entry.autosynced).elapsed() >= every) =>
        {
            *super::lock(&entry.autosynced) = Instant::now();
            let vm = vm.clone();
            tokio::spawn(async move {
                // Held while it saves: no sleep or stop meanwhile.
                let _slot = slot;
                let started = Instant::now();
                match vm.sync().await {
                    Ok(()) => {
                        tracing::debug!(job = %entry.job_id, ms = started.elapsed().as_millis() as u64, "workspace saved on its own")
                    }
                    Err(e) => {
                        tracing::warn!(job = %entry.job_id, error = %e, "cannot save the workspace on its own")
                    }
                }
            });
        }
        Slot::Sleeping { .. } if settings.no_sleep => {
            {
                let mut retry = entry.wake_retry.lock().unwrap_or_else(|p| p.into_inner());
                if retry.is_some_and(|t| Instant::now() < t) {
                    return;
                }
                *retry = Some(Instant::now() + WAKE_RETRY);
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut slot = slot;
                if let Err(e) = shared.wake_into(&entry, &mut slot).await {
                    tracing::warn!(job = %entry.job_id, error = %e, "cannot wake a no_sleep sandbox");
                }
            });
        }
        _ => {}
    }
}

/// `90 s`, `10 min`, `2 h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(2)), "2 s");
        assert_eq!(human(Duration::from_secs(600)), "10 min");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_secs(7200)), "2 h");
    }
}
