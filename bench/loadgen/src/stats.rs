//! Percentiles over samples, in milliseconds.

use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of samples given in milliseconds (sorted here).
pub fn summarize_ms(mut samples: Vec<f64>) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_by(f64::total_cmp);
    let rank = |fraction: f64| {
        let index = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index]
    };
    Summary { count: samples.len(), p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: samples[samples.len() - 1] }
}

pub fn summarize(samples: &[Duration]) -> Summary {
    summarize_ms(samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = summarize_ms((1..=100).map(f64::from).rev().collect());
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        let one = summarize_ms(vec![3.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (3.0, 3.0));
    }
}
