//! Idle resident memory: right after start (then a settle pause) and after a number of small
//! objects, for `berth server --no-node` (controllers running) and for one etcd member.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::Args;
use crate::api::{self, configmap_body, etcd_put};
use crate::load;
use crate::procs::memory_kib;
use crate::report::{Report, Row, mib, ratio, verdict};

/// Time for background work after start or load (controllers' first sync, etcd's election) to end.
const SETTLE: Duration = Duration::from_secs(3);
const GOAL_MIB: f64 = 30.0;

pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    let objects = args.memory_objects;
    let (mut berth, berth_api) = api::start_berth(args, &args.work_dir.join("memory-berth"), &["--no-node"]).await?;
    let (mut etcd, etcd_api) = api::start_etcd(args, &args.work_dir.join("memory-etcd")).await?;
    tokio::time::sleep(SETTLE).await;
    let berth_idle = memory_kib(berth.pid())?;
    let etcd_idle = memory_kib(etcd.pid())?;

    api::create_namespace(&berth_api, "bench-memory").await?;
    let created =
        load::run(&berth_api, args.clients, objects, |index| configmap_body("bench-memory", &format!("cm-{index:06}")))
            .await?;
    let put = load::run(&etcd_api, args.clients, objects, |index| {
        let name = format!("cm-{index:06}");
        etcd_put(&format!("/registry/configmaps/bench-memory/{name}"), &configmap_body("bench-memory", &name).body)
    })
    .await?;
    anyhow::ensure!(
        created.errors == 0 && put.errors == 0,
        "object creation failed: {:?} {:?}",
        created.first_error,
        put.first_error
    );
    tokio::time::sleep(SETTLE).await;
    let berth_loaded = memory_kib(berth.pid())?;
    let etcd_loaded = memory_kib(etcd.pid())?;
    berth.stop(Duration::from_secs(10))?;
    etcd.stop(Duration::from_secs(10))?;

    report.raw(json!({"bench": "memory", "unit": "KiB", "objects": objects,
        "berth_idle": {"rss": berth_idle.0, "pss": berth_idle.1}, "etcd_idle": {"rss": etcd_idle.0, "pss": etcd_idle.1},
        "berth_loaded": {"rss": berth_loaded.0, "pss": berth_loaded.1}, "etcd_loaded": {"rss": etcd_loaded.0, "pss": etcd_loaded.1}}))?;
    for (label, berth, etcd) in [
        ("after start".to_owned(), berth_idle, etcd_idle),
        (format!("after {objects} ConfigMaps / keys"), berth_loaded, etcd_loaded),
    ] {
        report.row(Row {
            benchmark: format!("Idle memory {label}: RSS (PSS)"),
            berth: format!("{} ({})", mib(berth.0 as f64, 1024.0), mib(berth.1 as f64, 1024.0)),
            peer: format!("etcd 3.4: {} ({})", mib(etcd.0 as f64, 1024.0), mib(etcd.1 as f64, 1024.0)),
            ratio: ratio(berth.0 as f64, etcd.0 as f64),
            goal: format!("< {GOAL_MIB:.0} MB RSS"),
            met: verdict((berth.0 as f64 / 1024.0) < GOAL_MIB),
        });
    }
    Ok(())
}
