//! Control-plane benchmarks for Berth, each run side by side with a peer in the same process
//! run: a trivial server (busybox httpd) for cold start, etcd 3.4 for memory, writes, reads,
//! watches and store size. `bench/run-control-plane.sh` builds and runs this.

mod api;
mod coldstart;
mod http;
mod load;
mod memory;
mod procs;
mod report;
mod stats;
mod storesize;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Clone)]
#[command(about = "Berth control-plane benchmarks against a peer in the same run")]
pub struct Args {
    /// The `berth` binary (a release build).
    #[arg(long)]
    pub berth: PathBuf,
    /// etcd 3.4 (Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd: PathBuf,
    /// A busybox with the httpd applet.
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// Scratch directory for data dirs and logs (emptied first). Put it on the disk under test.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// Benchmarks to run, comma-separated: cold,memory,creates,list,watch,store.
    #[arg(long, default_value = "cold,memory,creates,list,watch,store", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Cold starts per Berth variant (fresh and warm data dir).
    #[arg(long, default_value_t = 30)]
    pub cold_runs: usize,
    /// Cold starts of the trivial server.
    #[arg(long, default_value_t = 100)]
    pub httpd_runs: usize,
    /// Concurrent clients (one connection each) for the write benchmarks.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Objects created per round in the create benchmark, for Berth and for etcd each.
    #[arg(long, default_value_t = 20_000)]
    pub creates: usize,
    /// Rounds of the create benchmark (Berth, then etcd, alternating).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Objects created before measuring memory "after objects".
    #[arg(long, default_value_t = 1_000)]
    pub memory_objects: usize,
    /// Pods in the list benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Timed lists per format.
    #[arg(long, default_value_t = 50)]
    pub list_runs: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Timed updates seen by every watcher.
    #[arg(long, default_value_t = 20)]
    pub watch_rounds: usize,
    /// Updates of one object in the store-size benchmark through the API.
    #[arg(long, default_value_t = 100_000)]
    pub store_updates: usize,
    /// Where to write the Markdown results table.
    #[arg(long)]
    pub table_out: Option<PathBuf>,
    /// Where to append raw results, one JSON object a line.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

impl Args {
    fn wants(&self, name: &str) -> bool {
        self.only.iter().any(|item| item == name)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.work_dir.exists() {
        std::fs::remove_dir_all(&args.work_dir).with_context(|| format!("emptying {}", args.work_dir.display()))?;
    }
    std::fs::create_dir_all(&args.work_dir)?;
    let mut report = report::Report::new(args.json_out.clone());

    if args.wants("cold") {
        coldstart::run(&args, &mut report).await.context("cold start benchmark")?;
    }
    if args.wants("memory") {
        memory::run(&args, &mut report).await.context("memory benchmark")?;
    }
    if args.wants("creates") || args.wants("list") || args.wants("watch") {
        api::run(&args, &mut report).await.context("API benchmarks")?;
    }
    if args.wants("store") {
        storesize::run(&args, &mut report).await.context("store size benchmark")?;
    }

    let table = report.markdown();
    println!("\n{table}");
    if let Some(path) = &args.table_out {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
