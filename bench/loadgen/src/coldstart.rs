//! Cold start: from spawning the process to the first 200 answer on a new connection.
//! Berth's probe is `GET /readyz` over TLS (trusting its CA, as a client would); the floor is
//! `busybox httpd` answering `GET /index.html` over plain TCP.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::Args;
use crate::http::Endpoint;
use crate::procs::{self, Server};
use crate::report::{Report, Row, ratio, verdict};
use crate::stats::{Summary, summarize};

const PROBE_INTERVAL: Duration = Duration::from_micros(200);
const START_DEADLINE: Duration = Duration::from_secs(30);
const GOAL_MS: f64 = 100.0;

pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    let httpd = httpd_starts(args).await?;
    let root = args.work_dir.join("cold");
    let warm_dir = root.join("warm");
    let mut fresh = Vec::with_capacity(args.cold_runs);
    for run in 0..args.cold_runs {
        // The first fresh data dir is kept and reused for the warm starts.
        let dir = if run == 0 { warm_dir.clone() } else { root.join(format!("fresh-{run}")) };
        fresh.push(berth_start(args, &dir).await?);
        if run > 0 {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let mut warm = Vec::with_capacity(args.cold_runs);
    for _ in 0..args.cold_runs {
        warm.push(berth_start(args, &warm_dir).await?);
    }
    let (fresh, warm) = (summarize(&fresh), summarize(&warm));
    for (label, berth) in [("fresh data dir", &fresh), ("warm data dir", &warm)] {
        report.raw(json!({"bench": "cold_start", "variant": label, "berth": summary_json(berth), "httpd": summary_json(&httpd)}))?;
        report.row(Row {
            benchmark: format!("Cold start to /readyz, {label} (median / p99, {} runs)", berth.count),
            berth: format!("{:.1} / {:.1} ms", berth.p50_ms, berth.p99_ms),
            peer: format!(
                "busybox httpd start+GET: {:.2} / {:.2} ms ({} runs)",
                httpd.p50_ms, httpd.p99_ms, httpd.count
            ),
            ratio: format!("{} / {}", ratio(berth.p50_ms, httpd.p50_ms), ratio(berth.p99_ms, httpd.p99_ms)),
            goal: format!("< {GOAL_MS:.0} ms"),
            met: verdict(berth.p99_ms < GOAL_MS),
        });
    }
    Ok(())
}

pub fn summary_json(summary: &Summary) -> serde_json::Value {
    json!({"count": summary.count, "p50_ms": summary.p50_ms, "p99_ms": summary.p99_ms, "max_ms": summary.max_ms})
}

async fn httpd_starts(args: &Args) -> Result<Summary> {
    let root = args.work_dir.join("httpd-root");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("index.html"), "ready\n")?;
    let mut samples = Vec::with_capacity(args.httpd_runs);
    for _ in 0..args.httpd_runs {
        let port = procs::free_port()?;
        let addr = procs::loopback(port);
        let endpoint = Arc::new(Endpoint::plain(addr));
        let started = Instant::now();
        let mut server = procs::spawn_httpd(&args.busybox, &root, port)?;
        procs::wait_until_ok(
            addr,
            || Ok(Some(Arc::clone(&endpoint))),
            "/index.html",
            PROBE_INTERVAL,
            START_DEADLINE,
            &mut server.child,
        )
        .await?;
        samples.push(started.elapsed());
        server.stop(Duration::from_secs(5))?;
    }
    Ok(summarize(&samples))
}

/// One start of `berth server --no-node` in `dir`; returns the time to the first 200 from /readyz.
async fn berth_start(args: &Args, dir: &Path) -> Result<Duration> {
    let port = procs::free_port()?;
    let addr = procs::loopback(port);
    let ca_path = dir.join("pki").join("ca.crt");
    let started = Instant::now();
    let mut server: Server = procs::spawn_berth(&args.berth, dir, port, &["--no-node"])?;
    // The CA file is written before the port is bound, so reading it once the file exists is
    // not on the critical path of a probe that can succeed.
    let endpoint_for = || -> Result<Option<Arc<Endpoint>>> {
        match std::fs::read(&ca_path) {
            // A half-written file does not parse yet: try again on the next probe.
            Ok(ca) => Ok(Endpoint::tls(addr, &ca, None).ok().map(Arc::new)),
            Err(_) => Ok(None),
        }
    };
    procs::wait_until_ok(addr, endpoint_for, "/readyz", PROBE_INTERVAL, START_DEADLINE, &mut server.child).await?;
    let elapsed = started.elapsed();
    server.stop(Duration::from_secs(10))?;
    Ok(elapsed)
}
