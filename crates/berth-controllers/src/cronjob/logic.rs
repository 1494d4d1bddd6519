//! The CronJob controller's decisions as pure functions of the CronJob, its Jobs and the time
//! (upstream `syncCronJob` / `mostRecentScheduleTime`), so they can be tested with a fake clock.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use super::schedule::Schedule;
use crate::util::meta;
use crate::util::time;

/// Annotation on created Jobs: the time they were scheduled for, RFC 3339 in the CronJob's zone.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this is reported as TooManyMissedTimes.
pub const MAX_MISSED_REPORTED: u64 = 100;
// Bounds the walk over missed times (a year of every-minute runs).
const MAX_MISSED_WALK: u64 = 600_000;

/// What to do at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due yet.
    Wait,
    /// The most recent scheduled time is past `startingDeadlineSeconds`.
    TooLate(Timestamp),
    /// A Job for this time was already started.
    AlreadyStarted(Timestamp),
    /// concurrencyPolicy Forbid and a Job is still active.
    Forbidden(Timestamp),
    /// Start the Job for this time; with `replace`, delete the active Jobs first.
    Run {
        /// The scheduled time the Job is for.
        scheduled: Timestamp,
        /// concurrencyPolicy Replace with active Jobs.
        replace: bool,
    },
}

/// The CronJob's inputs to the decision.
#[derive(Debug, Clone)]
pub struct State<'a> {
    /// The CronJob's name (Job names derive from it).
    pub name: &'a str,
    /// When the CronJob was created.
    pub created: Timestamp,
    /// status.lastScheduleTime.
    pub last_schedule: Option<Timestamp>,
    /// spec.startingDeadlineSeconds.
    pub starting_deadline_seconds: Option<i64>,
    /// spec.concurrencyPolicy ("Allow", "Forbid", "Replace").
    pub concurrency_policy: &'a str,
    /// Names of the Jobs in status.active.
    pub active: &'a [String],
}

/// The most recent scheduled time not after `now` since the last run (or creation, or the
/// starting deadline window), and how many scheduled times were passed over.
pub fn most_recent_schedule(
    schedule: &Schedule,
    tz: &TimeZone,
    state: &State<'_>,
    now: Timestamp,
) -> (Option<Timestamp>, u64) {
    let mut earliest = state.last_schedule.unwrap_or(state.created);
    if let Some(sds) = state.starting_deadline_seconds {
        let window_start = time::add_seconds(now, -sds);
        if window_start > earliest {
            earliest = window_start;
        }
    }
    let mut latest = None;
    let mut count = 0u64;
    let mut cursor = earliest;
    while let Some(t) = schedule.next(cursor, tz) {
        if t > now || count >= MAX_MISSED_WALK {
            break;
        }
        latest = Some(t);
        count += 1;
        cursor = t;
    }
    (latest, count)
}

/// Decides what to do at `now` (upstream `syncCronJob` after the status bookkeeping).
pub fn decide(schedule: &Schedule, tz: &TimeZone, state: &State<'_>, now: Timestamp) -> (Decision, u64) {
    let (latest, missed) = most_recent_schedule(schedule, tz, state, now);
    let Some(scheduled) = latest else {
        return (Decision::Wait, missed);
    };
    if let Some(sds) = state.starting_deadline_seconds
        && time::add_seconds(scheduled, sds) < now
    {
        return (Decision::TooLate(scheduled), missed);
    }
    let job_name = job_name(state.name, scheduled);
    if state.active.contains(&job_name) || state.last_schedule == Some(scheduled) {
        return (Decision::AlreadyStarted(scheduled), missed);
    }
    let decision = match state.concurrency_policy {
        "Forbid" if !state.active.is_empty() => Decision::Forbidden(scheduled),
        "Replace" => Decision::Run { scheduled, replace: !state.active.is_empty() },
        _ => Decision::Run { scheduled, replace: false },
    };
    (decision, missed)
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 of `t` in `tz`, as Go's `Format(time.RFC3339)` prints it ("Z" for UTC).
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let zoned = t.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for `scheduled` (upstream `getJobFromTemplate2`).
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.to_string(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(meta::name(&cj.metadata), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![meta::controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Finished Jobs beyond the history limits, oldest first: successful beyond `successful_limit`
/// and failed beyond `failed_limit` (upstream `cleanupFinishedJobs`).
pub fn jobs_to_prune<'a>(
    finished: &[(&'a Job, bool)],
    successful_limit: Option<i32>,
    failed_limit: Option<i32>,
) -> Vec<&'a Job> {
    let mut victims = Vec::new();
    for (want_success, limit) in [(true, successful_limit), (false, failed_limit)] {
        let Some(limit) = limit else { continue };
        let mut group: Vec<&Job> = finished.iter().filter(|(_, ok)| *ok == want_success).map(|(j, _)| *j).collect();
        // Start times have one-second resolution; ties go by name, as upstream's `byJobStartTime`.
        group.sort_by(|a, b| start_of(a).cmp(&start_of(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
        let excess = group.len().saturating_sub(usize::try_from(limit).unwrap_or(0));
        victims.extend(group.into_iter().take(excess));
    }
    victims
}

fn start_of(job: &Job) -> Option<Timestamp> {
    job.status.as_ref().and_then(|s| s.start_time.as_ref()).or(job.metadata.creation_timestamp.as_ref()).map(|t| t.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn state<'a>(policy: &'a str, active: &'a [String], last: Option<&str>) -> State<'a> {
        State {
            name: "backup",
            created: ts("2024-01-01T00:00:00Z"),
            last_schedule: last.map(ts),
            starting_deadline_seconds: None,
            concurrency_policy: policy,
            active,
        }
    }

    #[test]
    fn runs_when_due_and_not_twice() {
        let every = Schedule::parse("*/1 * * * *").unwrap();
        let utc = TimeZone::UTC;
        let none: Vec<String> = vec![];
        let s = state("Allow", &none, None);
        assert_eq!(decide(&every, &utc, &s, ts("2024-01-01T00:00:30Z")).0, Decision::Wait);
        let (d, missed) = decide(&every, &utc, &s, ts("2024-01-01T00:01:05Z"));
        assert_eq!((d, missed), (Decision::Run { scheduled: ts("2024-01-01T00:01:00Z"), replace: false }, 1));
        let s = state("Allow", &none, Some("2024-01-01T00:01:00Z"));
        assert_eq!(decide(&every, &utc, &s, ts("2024-01-01T00:01:40Z")).0, Decision::Wait);
        assert_eq!(job_name("backup", ts("2024-01-01T00:01:00Z")), "backup-28401121");
    }

    #[test]
    fn forbid_blocks_while_a_job_is_active_and_replace_replaces() {
        let every = Schedule::parse("*/1 * * * *").unwrap();
        let utc = TimeZone::UTC;
        let running = vec![job_name("backup", ts("2024-01-01T00:01:00Z"))];
        let now = ts("2024-01-01T00:02:01Z");
        let last = Some("2024-01-01T00:01:00Z");
        let forbid = state("Forbid", &running, last);
        assert_eq!(decide(&every, &utc, &forbid, now).0, Decision::Forbidden(ts("2024-01-01T00:02:00Z")));
        let allow = state("Allow", &running, last);
        assert_eq!(
            decide(&every, &utc, &allow, now).0,
            Decision::Run { scheduled: ts("2024-01-01T00:02:00Z"), replace: false }
        );
        let replace = state("Replace", &running, last);
        assert_eq!(
            decide(&every, &utc, &replace, now).0,
            Decision::Run { scheduled: ts("2024-01-01T00:02:00Z"), replace: true }
        );
        // Once the running Job finished (no longer active), Forbid runs the next time.
        let none: Vec<String> = vec![];
        let forbid_idle = state("Forbid", &none, last);
        assert!(matches!(decide(&every, &utc, &forbid_idle, now).0, Decision::Run { .. }));
    }

    #[test]
    fn missed_runs_after_downtime_run_only_the_latest_within_the_deadline() {
        let hourly = Schedule::parse("@hourly").unwrap();
        let utc = TimeZone::UTC;
        let none: Vec<String> = vec![];
        // Down for 200 hours: 200 missed, run the latest.
        let s = state("Allow", &none, Some("2024-01-01T00:00:00Z"));
        let now = ts("2024-01-09T08:30:00Z");
        let (d, missed) = decide(&hourly, &utc, &s, now);
        assert_eq!(d, Decision::Run { scheduled: ts("2024-01-09T08:00:00Z"), replace: false });
        assert_eq!(missed, 200);
        assert!(missed > MAX_MISSED_REPORTED);
        // With a 10-minute starting deadline, 08:00 is 30 minutes late: too late.
        let s = State { starting_deadline_seconds: Some(600), ..s.clone() };
        assert_eq!(decide(&hourly, &utc, &s, now).0, Decision::Wait);
        let s = State { starting_deadline_seconds: Some(3600), ..s };
        assert_eq!(
            decide(&hourly, &utc, &s, ts("2024-01-09T08:50:00Z")).0,
            Decision::Run { scheduled: ts("2024-01-09T08:00:00Z"), replace: false }
        );
        let s2 = State { starting_deadline_seconds: Some(60), last_schedule: None, ..s };
        let s2 = State { created: ts("2024-01-09T07:59:00Z"), ..s2 };
        assert_eq!(
            decide(&hourly, &utc, &s2, ts("2024-01-09T08:00:30Z")).0,
            Decision::Run { scheduled: ts("2024-01-09T08:00:00Z"), replace: false }
        );
    }

    #[test]
    fn too_late_when_the_latest_time_is_past_the_deadline() {
        let daily = Schedule::parse("0 3 * * *").unwrap();
        let utc = TimeZone::UTC;
        let none: Vec<String> = vec![];
        // At 04:59 03:00 is within the two-hour deadline; at 05:00:01 the window starts after it.
        let s = State { starting_deadline_seconds: Some(7200), ..state("Allow", &none, Some("2024-01-01T03:00:00Z")) };
        assert!(matches!(decide(&daily, &utc, &s, ts("2024-01-02T04:59:00Z")).0, Decision::Run { .. }));
        assert_eq!(decide(&daily, &utc, &s, ts("2024-01-02T05:00:01Z")).0, Decision::Wait);
    }

    #[test]
    fn history_limits_prune_oldest_finished_jobs() {
        let job = |name: &str, created: &str| {
            let mut j = Job::default();
            j.metadata.name = Some(name.into());
            j.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(created)));
            j
        };
        let (a, b, c) =
            (job("a", "2024-01-01T00:01:00Z"), job("b", "2024-01-01T00:02:00Z"), job("c", "2024-01-01T00:03:00Z"));
        let (f1, f2) = (job("f1", "2024-01-01T00:00:00Z"), job("f2", "2024-01-01T00:04:00Z"));
        let finished = [(&c, true), (&a, true), (&f2, false), (&b, true), (&f1, false)];
        let names: Vec<&str> =
            jobs_to_prune(&finished, Some(1), Some(1)).iter().map(|j| j.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["a", "b", "f1"]);
        assert!(jobs_to_prune(&finished, None, None).is_empty());
    }

    #[test]
    fn jobs_carry_the_scheduled_time_in_the_time_zone() {
        let mut cj = CronJob::default();
        cj.metadata.name = Some("backup".into());
        let t = ts("2024-07-01T10:00:00Z");
        let job = job_from_template(&cj, t, &TimeZone::get("Europe/Paris").unwrap());
        assert_eq!(job.metadata.name.as_deref(), Some("backup-28663800"));
        let ann = job.metadata.annotations.unwrap();
        assert_eq!(ann[SCHEDULED_TIMESTAMP_ANNOTATION], "2024-07-01T12:00:00+02:00");
        assert_eq!(rfc3339_in(t, &TimeZone::UTC), "2024-07-01T10:00:00Z");
    }
}
