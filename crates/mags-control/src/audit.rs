//! The audit log's writer and its bounds.
//!
//! Callers record what was done, and by whom (user, token prefix, source
//! address), with [`Audit::record`]; a failed write is logged and
//! never fails the request. Refusals anyone can cause without a token
//! (bad tokens, SSH keys that open nothing) go through
//! [`Audit::record_refusal`], which keeps at most [`REFUSALS_PER_MINUTE`]
//! a minute and then one summary event, so a flood cannot push real
//! events out of the bounded log. [`Audit::prune_forever`] keeps the log
//! within `--audit-retention-days` and `--audit-max-events`.

use mags_api::AuditAction;
use mags_store::{clock, NewAuditEvent, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Refusal events recorded per minute at most; the rest are counted.
pub const REFUSALS_PER_MINUTE: u32 = 60;
/// Default age limit of events.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Default count limit of events.
pub const DEFAULT_MAX_EVENTS: i64 = 1_000_000;
/// How often the pruner runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The refusals of the current minute.
#[derive(Debug, Default)]
struct Window {
    started_ms: i64,
    recorded: u32,
    dropped: u64,
}

/// Records audit events; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    store: Store,
    window: Arc<Mutex<Window>>,
}

impl Audit {
    pub fn new(store: Store) -> Audit {
        Audit {
            store,
            window: Arc::default(),
        }
    }

    /// Appends `event`; a failure is logged, not returned.
    pub async fn record(&self, event: NewAuditEvent) {
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(action = %event.action, error = %e, "cannot write an audit event");
        }
    }

    /// Appends a refusal, unless this minute already has
    /// [`REFUSALS_PER_MINUTE`] of them (then it is only counted, and the
    /// count is recorded as `audit.dropped` when the next minute starts).
    pub async fn record_refusal(&self, event: NewAuditEvent) {
        let (record, dropped) = {
            let now = clock::now_ms();
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let mut dropped = 0;
            if now - w.started_ms >= 60_000 {
                dropped = std::mem::take(&mut w.dropped);
                *w = Window {
                    started_ms: now,
                    ..Window::default()
                };
            }
            let record = w.recorded < REFUSALS_PER_MINUTE;
            if record {
                w.recorded += 1;
            } else {
                w.dropped += 1;
            }
            (record, dropped)
        };
        if dropped > 0 {
            self.record(
                NewAuditEvent::new(AuditAction::AuditDropped).detail(format!(
                    "{dropped} refusals in the previous minute were not recorded \
                 (more than {REFUSALS_PER_MINUTE} a minute)"
                )),
            )
            .await;
        }
        if record {
            self.record(event).await;
        }
    }

    /// Prunes now and then every hour until `shutdown`: events older than
    /// `retention_days` (0: no age limit) and beyond the newest `max_events`.
    pub async fn prune_forever(
        self,
        retention_days: u32,
        max_events: i64,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let before = if retention_days == 0 {
                i64::MIN
            } else {
                clock::now_ms() - i64::from(retention_days) * 86_400_000
            };
            match self.store.prune_audit(before, max_events).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned the audit log"),
                Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// A `since` bound: RFC 3339 (`2025-01-02T03:04:05Z`) or an age (`90s`,
/// `30m`, `24h`, `7d`) before `now_ms`; unix milliseconds out.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "invalid time {s:?}: use RFC 3339 (2025-01-02T03:04:05Z) or an age like 30m, 24h, 7d"
        )
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad());
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .map(|age| now_ms.saturating_sub(age))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_ages() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_since("30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        for bad in ["", "h", "10y", "-5m", "yesterday", "99999999999999999999d"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
