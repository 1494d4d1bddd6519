//! Closed-loop load: `clients` connections, each sending its next request as soon as the
//! previous one is answered, until `total` requests are done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::http::{Endpoint, Req};
use crate::stats::{Summary, summarize};

pub struct LoadResult {
    pub total: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latency: Summary,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        (self.total - self.errors) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `total` requests made by `make(index)`; a non-2xx answer counts as an error.
pub async fn run<F>(endpoint: &Arc<Endpoint>, clients: usize, total: usize, make: F) -> Result<LoadResult>
where
    F: Fn(usize) -> Req + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    // Connect everyone first so handshakes are not counted as request time.
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(endpoint.connect().await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let make = Arc::clone(&make);
            let next = Arc::clone(&next);
            let endpoint = Arc::clone(endpoint);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut first_error = None;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return (latencies, errors, first_error);
                    }
                    let request = make(index);
                    let begun = Instant::now();
                    match conn.call(&request).await {
                        Ok((status, _)) if status.is_success() => latencies.push(begun.elapsed()),
                        Ok((status, body)) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
                            });
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                            // The connection may be gone: open a new one for the next request.
                            if let Ok(fresh) = endpoint.connect().await {
                                conn = fresh;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (task_latencies, task_errors, task_first_error) = task.await?;
        latencies.extend(task_latencies);
        errors += task_errors;
        if first_error.is_none() {
            first_error = task_first_error;
        }
    }
    let elapsed = started.elapsed();
    if errors == total {
        bail!("every request failed; first error: {}", first_error.unwrap_or_default());
    }
    Ok(LoadResult { total, errors, elapsed, latency: summarize(&latencies), first_error })
}
