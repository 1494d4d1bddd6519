//! Wall-clock helpers. Kubernetes serialises `metav1.Time` with whole seconds, so the controllers
//! truncate "now" the same way: a condition written and read back then compares equal.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The current time truncated to whole seconds.
pub fn now() -> Timestamp {
    let exact = Timestamp::now();
    Timestamp::from_second(exact.as_second()).unwrap_or(exact)
}

/// The current time as a `metav1.Time`.
pub fn now_time() -> Time {
    Time(now())
}

/// `t + seconds`, saturating at the representable range.
pub fn add_seconds(t: Timestamp, seconds: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(seconds)).unwrap_or(t)
}

/// How long from `now` until `deadline`, or zero if it has passed.
pub fn until(now: Timestamp, deadline: Timestamp) -> std::time::Duration {
    let delta = deadline.duration_since(now);
    if delta.is_negative() { std::time::Duration::ZERO } else { delta.unsigned_abs() }
}
