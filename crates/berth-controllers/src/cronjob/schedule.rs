//! Standard five-field cron schedules (minute hour day-of-month month day-of-week) and the
//! `@hourly`-style descriptors, with the semantics of robfig/cron's `ParseStandard` that upstream
//! uses: `*`, `?`, ranges, steps, lists and month/day names; when both day fields are restricted a
//! day matches either of them, otherwise both must match. Times are computed in a time zone, so
//! `0 9 * * *` in "Europe/Paris" fires at 09:00 local time across DST changes.

use k8s_openapi::jiff::civil::{Date, DateTime};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};

/// Why a schedule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The schedule is empty.
    #[error("empty spec string")]
    Empty,
    /// Not five fields.
    #[error("expected exactly 5 fields, found {0}: [{1}]")]
    FieldCount(usize, String),
    /// An unknown `@` descriptor (including `@every`, which is not supported here).
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    /// A field expression that is malformed or out of range.
    #[error("invalid cron expression {0:?}: {1}")]
    Field(String, &'static str),
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
// Month names start at 1 (index 0 is a placeholder that never matches a real name).
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &["", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const DOW: Bounds = Bounds { min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    /// Whether the day-of-month / day-of-week field began with `*` or `?` (unrestricted).
    dom_star: bool,
    dow_star: bool,
}

impl Schedule {
    /// Parses a five-field schedule or descriptor.
    pub fn parse(spec: &str) -> Result<Schedule, Error> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::Empty);
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(Error::Descriptor(s.to_string())),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(Error::FieldCount(fields.len(), fields.join(" ")));
        }
        let starred = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(Schedule {
            minutes: field(fields[0], &MINUTES)?,
            hours: field(fields[1], &HOURS)?,
            dom: field(fields[2], &DOM)?,
            months: field(fields[3], &MONTHS)?,
            dow: field(fields[4], &DOW)?,
            dom_star: starred(fields[2]),
            dow_star: starred(fields[4]),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = bit(self.dom, date.day() as u32);
        let dow = bit(self.dow, date.weekday().to_sunday_zero_offset() as u32);
        if self.dom_star || self.dow_star { dom && dow } else { dom || dow }
    }

    /// The first scheduled time strictly after `after`, in `tz`; `None` if there is none within
    /// five years (a schedule such as `0 0 30 2 *` never fires).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        // Start at the next whole minute.
        let mut t = local.with().second(0).subsec_nanosecond(0).build().ok()?.checked_add(1.minute()).ok()?;
        let limit = t.year().saturating_add(5);
        while t.year() <= limit {
            if !bit(self.months, t.month() as u32) {
                t = DateTime::from(t.date().first_of_month().checked_add(1.month()).ok()?);
                continue;
            }
            if !self.day_matches(t.date()) {
                t = DateTime::from(t.date().checked_add(1.day()).ok()?);
                continue;
            }
            if !bit(self.hours, t.hour() as u32) {
                t = t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !bit(self.minutes, t.minute() as u32) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            // A local time skipped by a DST gap maps forward; one repeated by a fold may map to
            // an instant not after `after`: keep looking then.
            let instant = tz.to_ambiguous_timestamp(t).compatible().ok()?;
            if instant > after {
                return Some(instant);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

fn bit(bits: u64, value: u32) -> bool {
    value < 64 && bits & (1u64 << value) != 0
}

fn field(expr: &str, bounds: &Bounds) -> Result<u64, Error> {
    let mut bits = 0u64;
    for part in expr.split(',') {
        bits |= range(part, bounds)?;
    }
    Ok(bits)
}

fn range(expr: &str, b: &Bounds) -> Result<u64, Error> {
    let bad = |why: &'static str| Error::Field(expr.to_string(), why);
    let (range_part, step) = match expr.split_once('/') {
        Some((r, s)) => (r, Some(s.parse::<u32>().map_err(|_| bad("bad step"))?)),
        None => (expr, None),
    };
    let (start, end) = if range_part == "*" || range_part == "?" {
        (b.min, b.max)
    } else {
        match range_part.split_once('-') {
            Some((lo, hi)) => {
                (value(lo, b).ok_or_else(|| bad("bad value"))?, value(hi, b).ok_or_else(|| bad("bad value"))?)
            }
            None => {
                let v = value(range_part, b).ok_or_else(|| bad("bad value"))?;
                // `N/step` means from N to the field's maximum, as robfig does.
                (v, if step.is_some() { b.max } else { v })
            }
        }
    };
    if start < b.min || end > b.max {
        return Err(bad("out of range"));
    }
    if start > end {
        return Err(bad("beginning of range after end"));
    }
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(bad("step of range should be a positive number"));
    }
    Ok((start..=end).step_by(step as usize).fold(0u64, |acc, v| acc | (1u64 << v)))
}

fn value(s: &str, b: &Bounds) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| !n.is_empty() && *n == lower) {
        return u32::try_from(i).ok();
    }
    s.parse::<u32>().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute_and_steps() {
        let utc = TimeZone::UTC;
        let s = Schedule::parse("*/1 * * * *").unwrap();
        assert_eq!(s.next(ts("2024-01-01T00:00:30Z"), &utc), Some(ts("2024-01-01T00:01:00Z")));
        assert_eq!(s.next(ts("2024-01-01T00:01:00Z"), &utc), Some(ts("2024-01-01T00:02:00Z")));
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        // 2024-01-06 is a Saturday: next is Monday 09:00.
        assert_eq!(s.next(ts("2024-01-05T17:50:00Z"), &utc), Some(ts("2024-01-08T09:00:00Z")));
        let s = Schedule::parse("5/20 * * * *").unwrap();
        assert_eq!(s.next(ts("2024-01-01T00:06:00Z"), &utc), Some(ts("2024-01-01T00:25:00Z")));
    }

    #[test]
    fn descriptors_and_names() {
        let utc = TimeZone::UTC;
        let at = ts("2024-03-15T10:20:00Z");
        let next = |spec: &str| Schedule::parse(spec).unwrap().next(at, &utc).unwrap();
        assert_eq!(next("@hourly"), ts("2024-03-15T11:00:00Z"));
        assert_eq!(next("@daily"), ts("2024-03-16T00:00:00Z"));
        assert_eq!(next("@midnight"), ts("2024-03-16T00:00:00Z"));
        assert_eq!(next("@weekly"), ts("2024-03-17T00:00:00Z"));
        assert_eq!(next("@monthly"), ts("2024-04-01T00:00:00Z"));
        assert_eq!(next("@yearly"), ts("2025-01-01T00:00:00Z"));
        assert_eq!(next("0 0 1 JAN,jul *"), ts("2024-07-01T00:00:00Z"));
        assert!(matches!(Schedule::parse("@every 5m"), Err(Error::Descriptor(_))));
        assert!(matches!(Schedule::parse("* * * *"), Err(Error::FieldCount(4, _))));
        assert!(Schedule::parse("60 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
    }

    #[test]
    fn restricted_day_fields_match_either() {
        let utc = TimeZone::UTC;
        // The 13th or any Friday.
        let s = Schedule::parse("0 0 13 * 5").unwrap();
        assert_eq!(s.next(ts("2024-09-01T00:00:00Z"), &utc), Some(ts("2024-09-06T00:00:00Z")));
        assert_eq!(s.next(ts("2024-09-12T00:00:00Z"), &utc), Some(ts("2024-09-13T00:00:00Z")));
        // Day-of-week starred: only the day of month counts.
        let s = Schedule::parse("0 0 13 * *").unwrap();
        assert_eq!(s.next(ts("2024-09-01T00:00:00Z"), &utc), Some(ts("2024-09-13T00:00:00Z")));
        assert_eq!(Schedule::parse("0 0 30 2 *").unwrap().next(ts("2024-01-01T00:00:00Z"), &utc), None);
    }

    #[test]
    fn time_zones_follow_local_time() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(s.next(ts("2024-01-10T12:00:00Z"), &paris), Some(ts("2024-01-11T08:00:00Z")));
        assert_eq!(s.next(ts("2024-07-10T12:00:00Z"), &paris), Some(ts("2024-07-11T07:00:00Z")));
    }
}
