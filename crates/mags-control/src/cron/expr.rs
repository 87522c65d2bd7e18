//! Standard 5-field cron expressions (minute hour day-of-month month
//! day-of-week), evaluated in UTC, with the usual forms: `*`, numbers,
//! ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`, comma lists, month and
//! weekday names, `7` for Sunday, and the `@hourly` .. `@yearly` macros.
//! As in Vixie cron, when both day fields are restricted a day matching
//! either one fires.

use std::fmt;
use time::{Date, Duration, Month, OffsetDateTime, Time};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month / day-of-week field was `*` (or `*/1`).
    days_any: bool,
    weekdays_any: bool,
}

/// Why an expression was refused; shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// First value a name stands for (months start at 1, weekdays at 0).
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_from: 1,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        names_from: 0,
    },
];

impl CronExpr {
    pub fn parse(expr: &str) -> Result<CronExpr, CronError> {
        let expanded = match expr.trim().to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            s if s.starts_with('@') => {
                return Err(CronError(format!(
                    "unknown macro {s:?}: use @hourly, @daily, @weekly, @monthly or @yearly"
                )))
            }
            s => s.to_string(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError(format!(
                "{:?} has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week (e.g. \"0 */2 * * *\")",
                expr.trim(),
                parts.len()
            )));
        }
        let mut sets = [0u64; 5];
        for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
            sets[i] = parse_field(part, field)?;
        }
        // 7 is Sunday too.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] & !(1 << 7)) | 1;
        }
        let any = |p: &str| p == "*" || p == "*/1";
        let e = CronExpr {
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4],
            days_any: any(parts[2]),
            weekdays_any: any(parts[4]),
        };
        if e.weekdays_any && !e.can_ever_match_a_day() {
            return Err(CronError(format!(
                "{:?} never fires (no such day in those months)",
                expr.trim()
            )));
        }
        Ok(e)
    }

    /// Whether some month in the set has a day in the day set (Feb 30 never does).
    fn can_ever_match_a_day(&self) -> bool {
        (1..=12u32).any(|m| {
            let longest = match m {
                2 => 29,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            self.months & (1 << m) != 0 && (1..=longest).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().number_days_from_sunday()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `after_ms` (unix ms) that this fires,
    /// in unix ms; `None` if not within the next ten years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let secs = after_ms.div_euclid(1000);
        let start = OffsetDateTime::from_unix_timestamp(secs).ok()?;
        // The next whole minute after `after_ms`.
        let mut t =
            start.replace_second(0).ok()?.replace_nanosecond(0).ok()? + Duration::minutes(1);
        let limit = t + Duration::days(366 * 10);
        while t < limit {
            if self.months & (1 << u8::from(t.month())) == 0 {
                let (y, m) = match t.month() {
                    Month::December => (t.year() + 1, Month::January),
                    m => (t.year(), m.next()),
                };
                t = Date::from_calendar_date(y, m, 1)
                    .ok()?
                    .midnight()
                    .assume_utc();
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().next_day()?.midnight().assume_utc();
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.replace_time(Time::from_hms(t.hour(), 0, 0).ok()?) + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t.unix_timestamp() * 1000);
        }
        None
    }
}

fn parse_field(part: &str, f: &Field) -> Result<u64, CronError> {
    let mut set = 0u64;
    for item in part.split(',') {
        let bad = |why: &str| {
            CronError(format!(
                "invalid {} field {part:?}: {why} (allowed {}-{})",
                f.name, f.min, f.max
            ))
        };
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if step == 0 {
                    return Err(bad("a step of 0"));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                value(a, f).ok_or_else(|| bad("not a value"))?,
                value(b, f).ok_or_else(|| bad("not a value"))?,
            )
        } else {
            let v = value(range, f).ok_or_else(|| bad("not a value"))?;
            // `a/n` means from a to the end, every n.
            (v, if item.contains('/') { f.max } else { v })
        };
        if lo < f.min || hi > f.max {
            return Err(bad("out of range"));
        }
        if lo > hi {
            return Err(bad("a range that ends before it starts"));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn value(s: &str, f: &Field) -> Option<u32> {
    if let Ok(v) = s.parse::<u32>() {
        return Some(v);
    }
    let i = f.names.iter().position(|n| *n == s)?;
    Some(i as u32 + f.names_from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ms(t: OffsetDateTime) -> i64 {
        t.unix_timestamp() * 1000
    }

    fn next(expr: &str, after: OffsetDateTime) -> OffsetDateTime {
        let n = CronExpr::parse(expr)
            .expect(expr)
            .next_after(ms(after))
            .expect("fires");
        OffsetDateTime::from_unix_timestamp(n / 1000).expect("time")
    }

    #[test]
    fn common_schedules() {
        let t = datetime!(2026-11-29 10:17:30 UTC);
        assert_eq!(next("* * * * *", t), datetime!(2026-11-29 10:18 UTC));
        assert_eq!(next("0 */2 * * *", t), datetime!(2026-11-29 12:00 UTC));
        assert_eq!(next("*/15 * * * *", t), datetime!(2026-11-29 10:30 UTC));
        assert_eq!(next("@hourly", t), datetime!(2026-11-29 11:00 UTC));
        assert_eq!(next("@daily", t), datetime!(2026-11-30 0:00 UTC));
        assert_eq!(next("@monthly", t), datetime!(2026-12-01 0:00 UTC));
        assert_eq!(next("@yearly", t), datetime!(2027-01-01 0:00 UTC));
        // 2026-11-29 is a Sunday.
        assert_eq!(next("30 9 * * mon-fri", t), datetime!(2026-11-30 9:30 UTC));
        assert_eq!(next("0 0 * * 7", t), datetime!(2026-12-06 0:00 UTC));
        assert_eq!(next("0 12 1 jan,jul *", t), datetime!(2027-01-01 12:00 UTC));
        assert_eq!(next("5/20 * * * *", t), datetime!(2026-11-29 10:25 UTC));
    }

    #[test]
    fn strictly_after_and_on_the_minute() {
        let t = datetime!(2026-11-29 10:00 UTC);
        assert_eq!(next("0 * * * *", t), datetime!(2026-11-29 11:00 UTC));
        let t = datetime!(2026-12-31 23:59:59 UTC);
        assert_eq!(next("* * * * *", t), datetime!(2027-01-01 0:00 UTC));
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st of the month or any Friday: Friday 2026-12-04 comes first.
        let t = datetime!(2026-11-29 10:00 UTC);
        assert_eq!(next("0 0 1 * fri", t), datetime!(2026-12-01 0:00 UTC));
        assert_eq!(next("0 0 15 * fri", t), datetime!(2026-12-04 0:00 UTC));
    }

    #[test]
    fn leap_days_are_found() {
        let t = datetime!(2026-03-01 0:00 UTC);
        assert_eq!(next("0 0 29 2 *", t), datetime!(2028-02-29 0:00 UTC));
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for (expr, says) in [
            ("", "has 0 fields"),
            ("* * * *", "has 4 fields"),
            ("* * * * * *", "has 6 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "ends before"),
            ("x * * * *", "not a value"),
            ("0 0 30 feb *", "never fires"),
            ("@reboot", "unknown macro"),
        ] {
            let e = CronExpr::parse(expr).expect_err(expr);
            assert!(e.0.contains(says), "{expr:?}: {e}");
        }
    }
}
