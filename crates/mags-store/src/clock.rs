//! Wall-clock time as unix milliseconds, the one time format in the
//! database, and [`rfc3339`], the one on the wire.
//!
//! [`Store::db_now_ms`] is the database's clock: what several hosts agree
//! on (leases, due times), whatever their own clocks say.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Like [`now_ms`], but strictly increasing within this process, so rows
/// created in the same millisecond still sort in creation order.
pub fn monotonic_ms() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => prev = actual,
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC (`2025-01-02T03:04:05.678Z`).
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

impl crate::Store {
    /// The database's clock, in unix milliseconds: the one clock every
    /// host of a cluster shares (a host's own clock may be off).
    pub async fn db_now_ms(&self) -> Result<i64, crate::StoreError> {
        let sql = format!("SELECT {} AS n", db_now_expr(self.backend()));
        let row = sqlx::query(&sql).fetch_one(self.pool()).await?;
        crate::get(&row, "n")
    }
}

/// The database clock (unix milliseconds) as an SQL expression, for
/// queries that compare with it in place.
pub(crate) fn db_now_expr(backend: crate::Backend) -> &'static str {
    match backend {
        crate::Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        crate::Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_is_strictly_increasing() {
        let mut last = monotonic_ms();
        for _ in 0..1000 {
            let t = monotonic_ms();
            assert!(t > last);
            last = t;
        }
    }
}
