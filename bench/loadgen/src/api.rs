//! Benchmarks through the API, Berth and etcd running side by side: creates per second, lists
//! of many pods, and watch fan-out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use http::Method;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::Args;
use crate::coldstart::summary_json;
use crate::http::{Endpoint, Req};
use crate::load::{self, LoadResult};
use crate::procs::{self, Server, memory_kib};
use crate::report::{Report, Row, mib, ratio, verdict};
use crate::stats::{Summary, summarize, summarize_ms};

const START_DEADLINE: Duration = Duration::from_secs(60);
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
const CREATE_GOAL: f64 = 5_000.0;
const LIST_GOAL_MS: f64 = 50.0;
const WATCH_GOAL_MS: f64 = 10.0;

/// Starts `berth server` with `extra` flags in `dir`; returns once `/readyz` answers, with an
/// endpoint carrying the admin token from the kubeconfig.
pub async fn start_berth(args: &Args, dir: &Path, extra: &[&str]) -> Result<(Server, Arc<Endpoint>)> {
    let port = procs::free_port()?;
    let addr = procs::loopback(port);
    let mut server = procs::spawn_berth(&args.berth, dir, port, extra)?;
    let ca_path = dir.join("pki").join("ca.crt");
    let endpoint_for = || -> Result<Option<Arc<Endpoint>>> {
        Ok(std::fs::read(&ca_path).ok().and_then(|ca| Endpoint::tls(addr, &ca, None).ok()).map(Arc::new))
    };
    procs::wait_until_ok(addr, endpoint_for, "/readyz", Duration::from_millis(5), START_DEADLINE, &mut server.child)
        .await?;
    // The kubeconfig is written before the server starts answering.
    let (ca, token) = procs::read_kubeconfig(&dir.join("kubeconfig"))?;
    Ok((server, Arc::new(Endpoint::tls(addr, &ca, Some(token))?)))
}

/// Starts one etcd member; returns once `/health` answers.
pub async fn start_etcd(args: &Args, dir: &Path) -> Result<(Server, Arc<Endpoint>)> {
    let (client_port, peer_port) = (procs::free_port()?, procs::free_port()?);
    let addr = procs::loopback(client_port);
    let mut server = procs::spawn_etcd(&args.etcd, dir, client_port, peer_port)?;
    let endpoint = Arc::new(Endpoint::plain(addr));
    procs::wait_until_ok(
        addr,
        || Ok(Some(Arc::clone(&endpoint))),
        "/health",
        Duration::from_millis(5),
        START_DEADLINE,
        &mut server.child,
    )
    .await?;
    Ok((server, endpoint))
}

pub async fn create_namespace(endpoint: &Arc<Endpoint>, name: &str) -> Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    endpoint.connect().await?.call_ok(&Req::json(Method::POST, "/api/v1/namespaces", body.to_string())).await?;
    Ok(())
}

/// A small ConfigMap (about 200 bytes of JSON).
pub fn configmap_body(namespace: &str, name: &str) -> Req {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "data": {"key": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}});
    Req::json(Method::POST, format!("/api/v1/namespaces/{namespace}/configmaps"), body.to_string())
}

/// A small Pod: one container, a label.
fn pod_body(namespace: &str, name: &str) -> Req {
    let body = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}});
    Req::json(Method::POST, format!("/api/v1/namespaces/{namespace}/pods"), body.to_string())
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// etcd v3 `Put` through its HTTP/JSON gateway.
pub fn etcd_put(key: &str, value: &[u8]) -> Req {
    Req::json(Method::POST, "/v3/kv/put", json!({"key": b64(key.as_bytes()), "value": b64(value)}).to_string())
}

fn rate_cell(result: &LoadResult) -> String {
    let errors = if result.errors > 0 { format!(", {} errors", result.errors) } else { String::new() };
    format!(
        "{:.0}/s (p50 {:.1} ms, p99 {:.1} ms{errors})",
        result.per_second(),
        result.latency.p50_ms,
        result.latency.p99_ms
    )
}

fn load_json(result: &LoadResult) -> Value {
    json!({"total": result.total, "errors": result.errors, "seconds": result.elapsed.as_secs_f64(),
        "per_second": result.per_second(), "latency": summary_json(&result.latency), "first_error": result.first_error})
}

pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    let (mut berth, berth_api) =
        start_berth(args, &args.work_dir.join("api-berth"), &["--no-controllers", "--no-node"]).await?;
    let (mut etcd, etcd_api) = start_etcd(args, &args.work_dir.join("api-etcd")).await?;
    if args.wants("creates") {
        creates(args, report, &berth_api, &etcd_api).await?;
    }
    if args.wants("list") {
        list(args, report, &berth_api, &etcd_api).await?;
    }
    if args.wants("watch") {
        watch(args, report, &berth_api, &etcd_api).await?;
    }
    let berth_memory = memory_kib(berth.pid())?;
    let etcd_memory = memory_kib(etcd.pid())?;
    report.raw(json!({"bench": "memory_after_api_benchmarks", "unit": "KiB",
        "berth": {"rss": berth_memory.0, "pss": berth_memory.1}, "etcd": {"rss": etcd_memory.0, "pss": etcd_memory.1}}))?;
    report.row(Row {
        benchmark: format!("Memory after the API benchmarks above ({}): RSS (PSS)", args.only.join(", ")),
        berth: format!("{} ({})", mib(berth_memory.0 as f64, 1024.0), mib(berth_memory.1 as f64, 1024.0)),
        peer: format!(
            "etcd 3.4, same keys: {} ({})",
            mib(etcd_memory.0 as f64, 1024.0),
            mib(etcd_memory.1 as f64, 1024.0)
        ),
        ratio: ratio(berth_memory.0 as f64, etcd_memory.0 as f64),
        goal: "—".to_owned(),
        met: "—".to_owned(),
    });
    berth.stop(Duration::from_secs(20))?;
    etcd.stop(Duration::from_secs(20))?;
    Ok(())
}

async fn creates(args: &Args, report: &mut Report, berth_api: &Arc<Endpoint>, etcd_api: &Arc<Endpoint>) -> Result<()> {
    create_namespace(berth_api, "bench-create").await?;
    let key = |name: &str| format!("/registry/configmaps/bench-create/{name}");
    // Warm-up: connections, caches, the first WAL segments.
    load::run(berth_api, args.clients, 1_000, |i| configmap_body("bench-create", &format!("warm-{i:06}"))).await?;
    load::run(etcd_api, args.clients, 1_000, move |i| {
        let name = format!("warm-{i:06}");
        etcd_put(&key(&name), &configmap_body("bench-create", &name).body)
    })
    .await?;
    for round in 1..=args.rounds {
        let berth_result = load::run(berth_api, args.clients, args.creates, move |i| {
            configmap_body("bench-create", &format!("cm-r{round}-{i:06}"))
        })
        .await?;
        let etcd_result = load::run(etcd_api, args.clients, args.creates, move |i| {
            let name = format!("cm-r{round}-{i:06}");
            etcd_put(&key(&name), &configmap_body("bench-create", &name).body)
        })
        .await?;
        report.raw(json!({"bench": "creates", "round": round, "clients": args.clients,
            "berth": load_json(&berth_result), "etcd": load_json(&etcd_result)}))?;
        let (berth_rate, etcd_rate) = (berth_result.per_second(), etcd_result.per_second());
        report.row(Row {
            benchmark: format!(
                "Creates/s, {} clients, durable, {} ConfigMaps (round {round})",
                args.clients, args.creates
            ),
            berth: rate_cell(&berth_result),
            peer: format!("etcd 3.4 put via gateway: {}", rate_cell(&etcd_result)),
            ratio: ratio(berth_rate, etcd_rate),
            goal: "≥ 5,000/s and ≥ 0.5× etcd".to_owned(),
            met: verdict(berth_rate >= CREATE_GOAL && berth_rate >= 0.5 * etcd_rate && berth_result.errors == 0),
        });
    }
    Ok(())
}

/// Times `runs` sequential requests on one connection (after two untimed ones); checks that
/// the answer holds `expected` entries once.
async fn time_requests(
    endpoint: &Arc<Endpoint>,
    request: &Req,
    runs: usize,
    count_entries: impl Fn(&Value) -> Option<usize>,
    expected: usize,
) -> Result<(Summary, usize)> {
    let mut conn = endpoint.connect().await?;
    let first = conn.call_ok(request).await?;
    let parsed: Value = serde_json::from_slice(&first).context("parsing a list answer")?;
    let entries = count_entries(&parsed).ok_or_else(|| anyhow!("no entries in the answer to {}", request.path))?;
    ensure!(entries == expected, "{} returned {entries} entries, expected {expected}", request.path);
    conn.call_ok(request).await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let begun = Instant::now();
        conn.call_ok(request).await?;
        samples.push(begun.elapsed());
    }
    Ok((summarize(&samples), first.len()))
}

async fn list(args: &Args, report: &mut Report, berth_api: &Arc<Endpoint>, etcd_api: &Arc<Endpoint>) -> Result<()> {
    let pods = args.pods;
    create_namespace(berth_api, "bench-list").await?;
    let created = load::run(berth_api, args.clients, pods, |i| pod_body("bench-list", &format!("pod-{i:05}"))).await?;
    ensure!(created.errors == 0, "creating pods failed: {:?}", created.first_error);
    // etcd holds the same bytes Berth stored for a pod, under kube-apiserver's key layout.
    let stored_pod =
        berth_api.connect().await?.call_ok(&Req::get("/api/v1/namespaces/bench-list/pods/pod-00000")).await?;
    let put = load::run(etcd_api, args.clients, pods, move |i| {
        etcd_put(&format!("/registry/pods/bench-list/pod-{i:05}"), &stored_pod)
    })
    .await?;
    ensure!(put.errors == 0, "etcd puts failed: {:?}", put.first_error);

    let path = "/api/v1/namespaces/bench-list/pods";
    let items = |v: &Value| v.get("items").and_then(Value::as_array).map(Vec::len);
    let rows = |v: &Value| v.get("rows").and_then(Value::as_array).map(Vec::len);
    let (json_list, json_bytes) = time_requests(berth_api, &Req::get(path), args.list_runs, items, pods).await?;
    let (table_list, table_bytes) =
        time_requests(berth_api, &Req::get(path).with_accept(TABLE_ACCEPT), args.list_runs, rows, pods).await?;
    let range = Req::json(
        Method::POST,
        "/v3/kv/range",
        json!({"key": b64(b"/registry/pods/bench-list/"), "range_end": b64(b"/registry/pods/bench-list0")}).to_string(),
    );
    let count = |v: &Value| v.get("count").and_then(Value::as_str).and_then(|c| c.parse().ok());
    let (etcd_range, etcd_bytes) = time_requests(etcd_api, &range, args.list_runs, count, pods).await?;
    report.raw(json!({"bench": "list", "pods": pods, "stored_pod_bytes": stored_pod_len(berth_api).await?,
        "berth_json": summary_json(&json_list), "berth_json_bytes": json_bytes,
        "berth_table": summary_json(&table_list), "berth_table_bytes": table_bytes,
        "etcd_range": summary_json(&etcd_range), "etcd_range_bytes": etcd_bytes}))?;
    for (format, berth, bytes) in [("JSON", &json_list, json_bytes), ("Table", &table_list, table_bytes)] {
        report.row(Row {
            benchmark: format!("List {pods} pods as {format}, {:.1} MB answer (p50 / p99)", bytes as f64 / 1e6),
            berth: format!("{:.1} / {:.1} ms", berth.p50_ms, berth.p99_ms),
            peer: format!(
                "etcd range of the same {pods} values ({:.1} MB): {:.1} / {:.1} ms",
                etcd_bytes as f64 / 1e6,
                etcd_range.p50_ms,
                etcd_range.p99_ms
            ),
            ratio: format!("{} (p99)", ratio(berth.p99_ms, etcd_range.p99_ms)),
            goal: format!("p99 < {LIST_GOAL_MS:.0} ms"),
            met: verdict(berth.p99_ms < LIST_GOAL_MS),
        });
    }
    Ok(())
}

async fn stored_pod_len(berth_api: &Arc<Endpoint>) -> Result<usize> {
    let pod = berth_api.connect().await?.call_ok(&Req::get("/api/v1/namespaces/bench-list/pods/pod-00000")).await?;
    Ok(pod.len())
}

/// What a watcher saw: the revision of the object in an event and when its bytes arrived.
type Sighting = (u64, Instant);

/// How to open a watch and read revisions out of its events, for one kind of server.
#[derive(Clone)]
struct WatchProtocol {
    request: Req,
    /// Revisions carried by one decoded stream message, or None for a message that says the
    /// watch is established (etcd's `created`).
    revisions: fn(&Value) -> Result<Vec<u64>>,
    /// Whether the server sends a message when the watch is established.
    announces_creation: bool,
}

fn berth_revisions(message: &Value) -> Result<Vec<u64>> {
    let kind = message.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind == "ERROR" {
        bail!("watch error: {message}");
    }
    if kind == "BOOKMARK" {
        return Ok(Vec::new());
    }
    let rv = message
        .pointer("/object/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| anyhow!("watch event without resourceVersion: {message}"))?;
    Ok(vec![rv])
}

fn etcd_revisions(message: &Value) -> Result<Vec<u64>> {
    if let Some(error) = message.get("error") {
        bail!("etcd watch error: {error}");
    }
    let events = message.pointer("/result/events").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    events
        .iter()
        .map(|event| {
            event
                .pointer("/kv/mod_revision")
                .and_then(Value::as_str)
                .and_then(|rv| rv.parse().ok())
                .ok_or_else(|| anyhow!("etcd event without mod_revision: {event}"))
        })
        .collect()
}

/// One watcher: opens its own connection, reports when the watch is established, then reports
/// every revision it sees with the time the bytes arrived.
async fn watcher(
    endpoint: Arc<Endpoint>,
    protocol: WatchProtocol,
    connect_slots: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Result<()>>,
    sightings: mpsc::UnboundedSender<Sighting>,
) {
    let opened = async {
        let _slot = connect_slots.acquire().await?;
        let mut conn = endpoint.connect().await?;
        let response = conn.send(&protocol.request).await?;
        ensure!(response.status().is_success(), "watch answered {}", response.status());
        Ok((conn, response))
    }
    .await;
    let (_conn, response) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if !protocol.announces_creation {
        let _ = ready.send(Ok(()));
    }
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let arrived = Instant::now();
        let Some(data) = frame.data_ref() else { continue };
        buffer.extend_from_slice(data);
        // Messages are JSON values one after another (newline-separated from both servers).
        let mut stream = serde_json::Deserializer::from_slice(&buffer).into_iter::<Value>();
        let mut consumed = 0;
        loop {
            match stream.next() {
                Some(Ok(message)) => {
                    consumed = stream.byte_offset();
                    if message.pointer("/result/created").and_then(Value::as_bool) == Some(true) {
                        let _ = ready.send(Ok(()));
                        continue;
                    }
                    match (protocol.revisions)(&message) {
                        Ok(revisions) => {
                            for revision in revisions {
                                let _ = sightings.send((revision, arrived));
                            }
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
                None => break,
            }
        }
        buffer.drain(..consumed);
    }
}

struct FanOut {
    /// Milliseconds from the write's acknowledgment to each watcher's receipt (negative: the
    /// event arrived before the writer had its answer).
    after_ack: Vec<f64>,
    /// Milliseconds from sending the write to each watcher's receipt.
    after_send: Vec<f64>,
    /// Watcher receipts missing when a round's deadline passed.
    missing: usize,
    connect_time: Duration,
}

/// Opens `watchers` watches, then makes `rounds` writes one after another and records, for
/// each write, when every watcher saw it. `write(i)` returns the revision the write produced.
async fn fan_out<W, F>(args: &Args, endpoint: &Arc<Endpoint>, protocol: WatchProtocol, mut write: W) -> Result<FanOut>
where
    W: FnMut(usize) -> F,
    F: std::future::Future<Output = Result<u64>>,
{
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Sighting>();
    let connect_slots = Arc::new(Semaphore::new(64));
    let connect_started = Instant::now();
    let tasks: Vec<_> = (0..args.watchers)
        .map(|_| {
            tokio::spawn(watcher(
                Arc::clone(endpoint),
                protocol.clone(),
                Arc::clone(&connect_slots),
                ready_tx.clone(),
                seen_tx.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..args.watchers {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e.context("opening a watch")),
            Ok(None) => bail!("watchers ended before all were established"),
            Err(_) => bail!("watchers not established within 120 s"),
        }
    }
    let connect_time = connect_started.elapsed();

    let mut seen: HashMap<u64, Vec<Instant>> = HashMap::new();
    let mut result = FanOut { after_ack: Vec::new(), after_send: Vec::new(), missing: 0, connect_time };
    // Round 0 is a warm-up whose delivery is awaited but not recorded.
    for round in 0..=args.watch_rounds {
        let sent = Instant::now();
        let revision = write(round).await?;
        let acknowledged = Instant::now();
        let round_deadline = Instant::now() + Duration::from_secs(30);
        while seen.get(&revision).map_or(0, Vec::len) < args.watchers {
            // A watcher failing mid-stream reports on the ready channel.
            if let Ok(Err(e)) = ready_rx.try_recv() {
                return Err(e.context("a watcher failed"));
            }
            match tokio::time::timeout_at(round_deadline.into(), seen_rx.recv()).await {
                Ok(Some((rev, at))) => seen.entry(rev).or_default().push(at),
                Ok(None) => bail!("all watchers ended"),
                Err(_) => break,
            }
        }
        let arrivals = seen.remove(&revision).unwrap_or_default();
        if round == 0 {
            ensure!(
                arrivals.len() == args.watchers,
                "only {} of {} watchers saw the warm-up write",
                arrivals.len(),
                args.watchers
            );
            continue;
        }
        result.missing += args.watchers - arrivals.len().min(args.watchers);
        for at in arrivals {
            result.after_send.push(at.duration_since(sent).as_secs_f64() * 1000.0);
            let after_ack = match at.checked_duration_since(acknowledged) {
                Some(later) => later.as_secs_f64(),
                None => -acknowledged.duration_since(at).as_secs_f64(),
            };
            result.after_ack.push(after_ack * 1000.0);
        }
        // Let stragglers of this round drain before the next write.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in tasks {
        task.abort();
    }
    Ok(result)
}

async fn watch(args: &Args, report: &mut Report, berth_api: &Arc<Endpoint>, etcd_api: &Arc<Endpoint>) -> Result<()> {
    create_namespace(berth_api, "bench-watch").await?;
    let writer = Arc::new(Mutex::new(berth_api.connect().await?));
    let created: Value =
        serde_json::from_slice(&writer.lock().await.call_ok(&configmap_body("bench-watch", "hot")).await?)?;
    let start_rv = created
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("created ConfigMap has no resourceVersion"))?
        .to_owned();
    let berth_protocol = WatchProtocol {
        request: Req::get(format!("/api/v1/namespaces/bench-watch/configmaps?watch=true&resourceVersion={start_rv}")),
        revisions: berth_revisions,
        announces_creation: false,
    };
    let berth_result = fan_out(args, berth_api, berth_protocol, |round| {
        let request = Req::json(
            Method::PATCH,
            "/api/v1/namespaces/bench-watch/configmaps/hot",
            json!({"data": {"round": round.to_string()}}).to_string(),
        )
        .with_content_type("application/merge-patch+json");
        let writer = Arc::clone(&writer);
        async move {
            let answer: Value = serde_json::from_slice(&writer.lock().await.call_ok(&request).await?)?;
            answer
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|rv| rv.parse().ok())
                .ok_or_else(|| anyhow!("patched ConfigMap has no resourceVersion"))
        }
    })
    .await?;

    let key = "/registry/configmaps/bench-watch/hot";
    let etcd_writer = Arc::new(Mutex::new(etcd_api.connect().await?));
    etcd_writer.lock().await.call_ok(&etcd_put(key, b"start")).await?;
    let etcd_protocol = WatchProtocol {
        request: Req::json(
            Method::POST,
            "/v3/watch",
            json!({"create_request": {"key": b64(key.as_bytes())}}).to_string(),
        ),
        revisions: etcd_revisions,
        announces_creation: true,
    };
    let etcd_result = fan_out(args, etcd_api, etcd_protocol, |round| {
        let request = etcd_put(key, format!("round {round}").as_bytes());
        let writer = Arc::clone(&etcd_writer);
        async move {
            let answer: Value = serde_json::from_slice(&writer.lock().await.call_ok(&request).await?)?;
            answer
                .pointer("/header/revision")
                .and_then(Value::as_str)
                .and_then(|rv| rv.parse().ok())
                .ok_or_else(|| anyhow!("etcd put answer has no revision"))
        }
    })
    .await?;

    let berth_ack = summarize_ms(berth_result.after_ack.clone());
    let berth_send = summarize_ms(berth_result.after_send.clone());
    let etcd_ack = summarize_ms(etcd_result.after_ack.clone());
    let etcd_send = summarize_ms(etcd_result.after_send.clone());
    let early = |samples: &[f64]| samples.iter().filter(|ms| **ms < 0.0).count();
    report.raw(json!({"bench": "watch", "watchers": args.watchers, "rounds": args.watch_rounds,
        "berth": {"after_ack": summary_json(&berth_ack), "after_send": summary_json(&berth_send),
                  "before_ack": early(&berth_result.after_ack), "missing": berth_result.missing,
                  "connect_seconds": berth_result.connect_time.as_secs_f64()},
        "etcd": {"after_ack": summary_json(&etcd_ack), "after_send": summary_json(&etcd_send),
                 "before_ack": early(&etcd_result.after_ack), "missing": etcd_result.missing,
                 "connect_seconds": etcd_result.connect_time.as_secs_f64()}}))?;
    let missing = |n: usize| if n > 0 { format!(", **{n} missed**") } else { String::new() };
    report.row(Row {
        benchmark: format!(
            "{} watchers see an update: delivery after the write's ack (p50 / p99, {} updates)",
            args.watchers, args.watch_rounds
        ),
        berth: format!("{:.1} / {:.1} ms{}", berth_ack.p50_ms, berth_ack.p99_ms, missing(berth_result.missing)),
        peer: format!(
            "etcd 3.4 watch via gateway: {:.1} / {:.1} ms{}",
            etcd_ack.p50_ms,
            etcd_ack.p99_ms,
            missing(etcd_result.missing)
        ),
        ratio: format!("{} (p99)", ratio(berth_ack.p99_ms, etcd_ack.p99_ms)),
        goal: format!("p99 < {WATCH_GOAL_MS:.0} ms"),
        met: verdict(berth_ack.p99_ms < WATCH_GOAL_MS && berth_result.missing == 0),
    });
    report.row(Row {
        benchmark: format!("{} watchers: delivery after the write was sent (p50 / p99)", args.watchers),
        berth: format!("{:.1} / {:.1} ms", berth_send.p50_ms, berth_send.p99_ms),
        peer: format!("etcd 3.4: {:.1} / {:.1} ms", etcd_send.p50_ms, etcd_send.p99_ms),
        ratio: format!("{} (p99)", ratio(berth_send.p99_ms, etcd_send.p99_ms)),
        goal: "—".to_owned(),
        met: "—".to_owned(),
    });
    Ok(())
}
