//! Store size after one object is updated many times through the API, against etcd with its
//! default settings (no automatic compaction) doing the same puts.

use std::time::Duration;

use anyhow::{Result, ensure};
use http::Method;
use serde_json::json;

use crate::Args;
use crate::api::{self, configmap_body, etcd_put};
use crate::http::Req;
use crate::load;
use crate::procs::{file_size, tree_size};
use crate::report::{Report, Row, mib, ratio, verdict};

const GOAL_MIB: f64 = 50.0;
const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    let updates = args.store_updates;
    let berth_dir = args.work_dir.join("store-berth");
    let (mut berth, berth_api) = api::start_berth(args, &berth_dir, &["--no-controllers", "--no-node"]).await?;
    api::create_namespace(&berth_api, "bench-store").await?;
    berth_api.connect().await?.call_ok(&configmap_body("bench-store", "hot")).await?;
    let (db, wal) = (berth_dir.join("state.db"), berth_dir.join("state.db-wal"));
    let before = (file_size(&db), file_size(&wal));
    let berth_result = load::run(&berth_api, args.clients, updates, |i| {
        Req::json(
            Method::PATCH,
            "/api/v1/namespaces/bench-store/configmaps/hot",
            json!({"data": {"update": i.to_string()}}).to_string(),
        )
        .with_content_type("application/merge-patch+json")
    })
    .await?;
    ensure!(berth_result.errors == 0, "updates failed: {:?}", berth_result.first_error);
    let running = (file_size(&db), file_size(&wal));
    berth.stop(Duration::from_secs(20))?;
    let stopped = (file_size(&db), file_size(&wal));

    let etcd_dir = args.work_dir.join("store-etcd");
    let (mut etcd, etcd_api) = api::start_etcd(args, &etcd_dir).await?;
    let value = configmap_body("bench-store", "hot").body;
    let etcd_before = tree_size(&etcd_dir);
    let etcd_result =
        load::run(&etcd_api, args.clients, updates, move |_| etcd_put("/registry/configmaps/bench-store/hot", &value))
            .await?;
    ensure!(etcd_result.errors == 0, "etcd puts failed: {:?}", etcd_result.first_error);
    let etcd_after = tree_size(&etcd_dir);
    etcd.stop(Duration::from_secs(20))?;

    report.raw(json!({"bench": "store_size_api", "updates": updates, "unit": "bytes",
        "berth": {"before": {"db": before.0, "wal": before.1}, "running": {"db": running.0, "wal": running.1},
                  "stopped": {"db": stopped.0, "wal": stopped.1}, "per_second": berth_result.per_second()},
        "etcd": {"before": etcd_before, "after": etcd_after, "per_second": etcd_result.per_second()}}))?;
    let berth_total = (running.0 + running.1) as f64;
    report.row(Row {
        benchmark: format!("Store size after {updates} updates of one ConfigMap via the API (db + WAL)"),
        berth: format!(
            "{} + {} = {} while running; {} after stop (from {} fresh)",
            mib(running.0 as f64, MIB),
            mib(running.1 as f64, MIB),
            mib(berth_total, MIB),
            mib((stopped.0 + stopped.1) as f64, MIB),
            mib((before.0 + before.1) as f64, MIB),
        ),
        peer: format!(
            "etcd 3.4 data dir, defaults (no auto-compaction): {} (from {})",
            mib(etcd_after as f64, MIB),
            mib(etcd_before as f64, MIB)
        ),
        ratio: ratio(berth_total, etcd_after as f64),
        goal: format!("< {GOAL_MIB:.0} MB"),
        met: verdict(berth_total / MIB < GOAL_MIB),
    });
    report.row(Row {
        benchmark: format!("Updates/s of one object, {} clients (same run as above)", args.clients),
        berth: format!("{:.0}/s (p99 {:.1} ms)", berth_result.per_second(), berth_result.latency.p99_ms),
        peer: format!("etcd 3.4 put: {:.0}/s (p99 {:.1} ms)", etcd_result.per_second(), etcd_result.latency.p99_ms),
        ratio: ratio(berth_result.per_second(), etcd_result.per_second()),
        goal: "—".to_owned(),
        met: "—".to_owned(),
    });
    Ok(())
}
