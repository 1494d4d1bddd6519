//! Kubelet's restart back-off: no wait before the first restart, then 10 s doubling up to
//! 5 minutes; the delay starts over when the container fails more than 10 minutes (twice the
//! maximum) after the last back-off step, i.e. after it ran fine for a while.

use std::time::Duration;

use tokio::time::Instant;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    delay: Option<Duration>,
    last_update: Option<Instant>,
}

impl Backoff {
    /// How long to wait still, if a container that ended at `finished` is in back-off.
    pub fn remaining(&self, finished: Instant, now: Instant) -> Option<Duration> {
        let delay = self.delay?;
        let elapsed = now.saturating_duration_since(finished);
        (elapsed < delay).then(|| delay - elapsed)
    }

    /// Records a restart of a container that ended at `finished`.
    pub fn step(&mut self, finished: Instant, now: Instant) {
        let expired = self.last_update.is_none_or(|last| finished.saturating_duration_since(last) > 2 * MAX);
        self.delay = Some(match self.delay {
            Some(delay) if !expired => (delay * 2).min(MAX),
            _ => INITIAL,
        });
        self.last_update = Some(now);
    }

    /// The current delay, for messages ("back-off 20s restarting failed container").
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.remaining(start, start), None);
        backoff.step(start, start);
        let mut expected = INITIAL;
        let mut now = start;
        for _ in 0..8 {
            now += Duration::from_secs(1);
            assert_eq!(backoff.remaining(now, now), Some(expected));
            assert_eq!(backoff.remaining(now, now + expected), None);
            now += expected;
            backoff.step(now, now);
            expected = (expected * 2).min(MAX);
        }
        assert_eq!(backoff.delay(), Some(MAX));
    }

    #[test]
    fn long_run_resets_the_delay() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        backoff.step(start, start);
        backoff.step(start + Duration::from_secs(11), start + Duration::from_secs(11));
        assert_eq!(backoff.delay(), Some(INITIAL * 2));
        let much_later = start + Duration::from_secs(11) + 2 * MAX + Duration::from_secs(1);
        backoff.step(much_later, much_later);
        assert_eq!(backoff.delay(), Some(INITIAL));
    }
}
