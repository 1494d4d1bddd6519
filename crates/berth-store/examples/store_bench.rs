//! Store benchmark: durable puts per second from concurrent writers, and the database size
//! after many updates of one key.
//!
//! ```text
//! cargo run --release -p berth-store --example store_bench -- \
//!     [--writers 32] [--puts 50000] [--updates 1000000] [--value-size 256] \
//!     [--sync full|normal] [--history 10000] [--dir PATH]
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_store::{Durability, SqliteStore, Store, StoreOptions};
use bytes::Bytes;

struct Args {
    writers: usize,
    puts: usize,
    updates: usize,
    value_size: usize,
    sync: Durability,
    history: i64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        writers: 32,
        puts: 50_000,
        updates: 1_000_000,
        value_size: 256,
        sync: Durability::Full,
        history: 10_000,
        dir: None,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--writers" => args.writers = value.parse()?,
            "--puts" => args.puts = value.parse()?,
            "--updates" => args.updates = value.parse()?,
            "--value-size" => args.value_size = value.parse()?,
            "--history" => args.history = value.parse()?,
            "--dir" => args.dir = Some(PathBuf::from(value)),
            "--sync" => {
                args.sync = match value.as_str() {
                    "full" => Durability::Full,
                    "normal" => Durability::Normal,
                    other => return Err(format!("--sync must be full or normal, not {other}").into()),
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `total` operations spread over `writers` tasks; returns the elapsed time and the
/// per-operation latencies, sorted.
async fn run_writers<F, Fut>(writers: usize, total: usize, op: F) -> Result<(Duration, Vec<Duration>), Box<dyn Error>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), berth_store::Error>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let op = Arc::clone(&op);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return Ok::<_, berth_store::Error>(latencies);
                    }
                    let begun = Instant::now();
                    op(index).await?;
                    latencies.push(begun.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok((elapsed, latencies))
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let options = StoreOptions { sync: args.sync, history: args.history, ..StoreOptions::default() };
    println!(
        "store_bench: dir {} sync {:?} writers {} value {} B history {}",
        dir.display(),
        args.sync,
        args.writers,
        args.value_size,
        args.history
    );
    let value = Bytes::from(vec![b'x'; args.value_size]);

    // Phase 1: creates of distinct keys, each acknowledged only after its group's commit.
    if args.puts > 0 {
        let store = SqliteStore::open(&dir.join("puts.db"), options.clone())?;
        let (elapsed, latencies) = {
            let store = Arc::clone(&store);
            let value = value.clone();
            run_writers(args.writers, args.puts, move |index| {
                let store = Arc::clone(&store);
                let value = value.clone();
                async move { store.create(&format!("/bench/puts/{index:08}"), value).await.map(|_| ()) }
            })
            .await?
        };
        println!(
            "puts: {} creates in {:.2} s = {:.0} puts/s (p50 {:.2} ms, p99 {:.2} ms)",
            args.puts,
            elapsed.as_secs_f64(),
            args.puts as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        );
    }
    if args.updates > 0 {
        update_one_key(&args, &dir, options, value).await?;
    }
    Ok(())
}

/// Phase 2: one key updated many times in its own database; automatic compaction must keep
/// the file small.
async fn update_one_key(args: &Args, dir: &Path, options: StoreOptions, value: Bytes) -> Result<(), Box<dyn Error>> {
    let path = dir.join("updates.db");
    let wal = dir.join("updates.db-wal");
    let store = SqliteStore::open(&path, options)?;
    store.create("/bench/hot", value.clone()).await?;
    let (elapsed, _) = {
        let store = Arc::clone(&store);
        let value = value.clone();
        run_writers(args.writers, args.updates, move |_| {
            let store = Arc::clone(&store);
            let value = value.clone();
            async move { store.update("/bench/hot", value, None).await.map(|_| ()) }
        })
        .await?
    };
    let current = store.current_revision().await?;
    let compacted = store.compacted_revision().await?;
    println!(
        "updates: {} updates of one key in {:.2} s = {:.0} updates/s; revision {current}, compacted {compacted}",
        args.updates,
        elapsed.as_secs_f64(),
        args.updates as f64 / elapsed.as_secs_f64(),
    );
    println!(
        "size after updates: db {:.2} MiB, wal {:.2} MiB, total {:.2} MiB",
        mib(file_size(&path)),
        mib(file_size(&wal)),
        mib(file_size(&path) + file_size(&wal)),
    );
    drop(store);
    println!("size after close: db {:.2} MiB, wal {:.2} MiB", mib(file_size(&path)), mib(file_size(&wal)));
    Ok(())
}
