//! Per-object exponential retry delays, like client-go's default controller rate limiter
//! (5 ms doubling, capped at five minutes), reset once an object reconciles cleanly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const BASE: Duration = Duration::from_millis(5);
// Upstream caps at 1000 s; five minutes keeps a stuck object from waiting a quarter of an hour on
// a single machine where nothing else would retry it sooner.
const MAX: Duration = Duration::from_secs(300);

/// Failure counts per object key.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure and returns how long to wait before retrying.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = BASE.saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX)).min(MAX);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of an object that reconciled cleanly.
    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_cap_and_reset() {
        let b = Backoff::default();
        assert_eq!(b.next_delay("a"), Duration::from_millis(5));
        assert_eq!(b.next_delay("a"), Duration::from_millis(10));
        assert_eq!(b.next_delay("a"), Duration::from_millis(20));
        assert_eq!(b.next_delay("b"), Duration::from_millis(5));
        for _ in 0..40 {
            b.next_delay("a");
        }
        assert_eq!(b.next_delay("a"), MAX);
        b.reset("a");
        assert_eq!(b.next_delay("a"), Duration::from_millis(5));
    }
}
