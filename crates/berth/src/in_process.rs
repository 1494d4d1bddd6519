//! The embedded API server's own clients (controllers, scheduler, node agent, router, DNS,
//! proxy) reach it without the network: a `kube::Client` whose transport hands each request
//! to the API server's router in this process.
//!
//! Only the wire is skipped. The request still carries the kubeconfig's credentials (kube's
//! own base-URI, auth and header layers put them there, as for the network client) and goes
//! through the same handlers: authentication, admission, watches, `Status` errors. Response
//! bodies are the handlers' own, so a watch streams each event as the handler yields it.
//! Upgrades (exec, attach, port-forward) need a real connection to take over and go to the
//! network client. A client built from a kubeconfig for any other server (`berth up`, the
//! controllers against a real cluster) never comes here.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response, header};
use kube::client::{Body, ConfigExt as _, retry::RetryPolicy};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _, retry::RetryLayer};

/// A client of the API served by `app` in this process, with `config`'s credentials; requests
/// that upgrade the connection go out through `network` (the same server over HTTPS).
pub fn client(config: &kube::Config, app: axum::Router, network: kube::Client) -> Result<kube::Client, kube::Error> {
    let local = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(app)
        .boxed_clone();
    Ok(kube::Client::new(Transport { local, network }, config.default_namespace.clone()))
}

type Local = tower::util::BoxCloneService<Request<Body>, Response<axum::body::Body>, BoxError>;

#[derive(Clone)]
struct Transport {
    local: Local,
    network: kube::Client,
}

impl Service<Request<Body>> for Transport {
    type Response = Response<axum::body::Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call readies its own clone: the router is always ready, and the network client
        // queues requests itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.headers().contains_key(header::UPGRADE) {
            let network = self.network.clone();
            // The response keeps its extensions, where hyper left the upgraded connection.
            return Box::pin(async move { Ok(network.send(req).await?.map(axum::body::Body::new)) });
        }
        Box::pin(self.local.clone().oneshot(req))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use futures::{StreamExt as _, TryStreamExt as _};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{
        Api,
        api::{PostParams, WatchEvent, WatchParams},
    };
    use tokio_util::sync::CancellationToken;

    /// An API server on a temporary store, served over HTTPS too, and its kubeconfig's
    /// client configuration.
    struct Fixture {
        state: berth_apiserver::handlers::Shared,
        config: kube::Config,
        shutdown: CancellationToken,
        _dir: tempfile::TempDir,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn fixture() -> Fixture {
        fixture_with(Default::default()).await
    }

    async fn fixture_with(options: berth_store::StoreOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let listener = berth_apiserver::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let pki = berth_apiserver::pki::ensure(dir.path(), &["127.0.0.1".to_owned()]).unwrap();
        let kubeconfig =
            berth_apiserver::pki::write_kubeconfig(dir.path(), &format!("https://{address}"), &pki).unwrap();
        let store = berth_store::SqliteStore::open(&dir.path().join("state.db"), options).unwrap();
        let ranges = berth_apiserver::ServiceRanges::parse("10.96.0.0/12", "30000-32767").unwrap();
        let state =
            berth_apiserver::build_state(store, pki.admin_token.clone(), address.clone(), None, ranges).await.unwrap();
        let serve_config = berth_apiserver::ServerConfig {
            listen: listener.local_addr().unwrap(),
            cert_pem: pki.server_cert_pem.clone(),
            key_pem: pki.server_key_pem.clone(),
            token: pki.admin_token.clone(),
            server_address: address,
        };
        let shutdown = CancellationToken::new();
        let (state2, stop) = (Arc::clone(&state), shutdown.clone());
        tokio::spawn(async move { berth_apiserver::serve(listener, &serve_config, state2, stop).await });
        let config = crate::server::client_config(&kubeconfig).await.unwrap();
        Fixture { state, config, shutdown, _dir: dir }
    }

    /// A network client that cannot connect: whatever reaches it fails.
    fn unreachable_network(config: &kube::Config) -> kube::Client {
        let mut config = config.clone();
        config.cluster_url = format!("https://127.0.0.1:{}", berth_testkit::free_port()).parse().unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn in_process(f: &Fixture, config: &kube::Config) -> kube::Client {
        let app = berth_apiserver::router(Arc::clone(&f.state));
        super::client(config, app, unreachable_network(config)).unwrap()
    }

    fn config_map(name: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
    }

    #[tokio::test]
    async fn watch_event_arrives_while_the_request_is_open() {
        let f = fixture().await;
        // The network client cannot connect, so every answer below came in-process.
        let client = in_process(&f, &f.config);
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let rv = api.list_metadata(&Default::default()).await.unwrap().metadata.resource_version.unwrap();
        let mut events = api.watch(&WatchParams::default().timeout(120), &rv).await.unwrap().boxed();
        api.create(&PostParams::default(), &config_map("first")).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(30), events.try_next())
            .await
            .expect("the event arrives before the watch ends")
            .unwrap()
            .expect("the watch is still open");
        match event {
            WatchEvent::Added(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("first")),
            other => panic!("expected ADDED, got {other:?}"),
        }
        // A second change arrives on the same open request.
        api.create(&PostParams::default(), &config_map("second")).await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(30), events.try_next()).await.unwrap().unwrap().unwrap();
        assert!(matches!(event, WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("second")));
    }

    /// The same request's error, in-process and over HTTPS.
    async fn both_errors<T: std::fmt::Debug>(
        f: &Fixture,
        config: &kube::Config,
        call: impl AsyncFn(Api<ConfigMap>) -> kube::Result<T>,
    ) -> (kube::core::Status, kube::core::Status) {
        let local = call(Api::namespaced(in_process(f, config), "default")).await;
        let network = call(Api::namespaced(kube::Client::try_from(config.clone()).unwrap(), "default")).await;
        match (local, network) {
            (Err(kube::Error::Api(a)), Err(kube::Error::Api(b))) => (*a, *b),
            other => panic!("expected two API errors, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unauthenticated_request_is_refused_as_over_https() {
        let f = fixture().await;
        let mut anonymous = f.config.clone();
        anonymous.auth_info.token = None;
        let (local, network) = both_errors(&f, &anonymous, async |api| api.list(&Default::default()).await).await;
        assert_eq!(local.code, 401);
        assert_eq!(local.reason, "Unauthorized");
        assert_eq!(local, network);
        let mut wrong = f.config.clone();
        wrong.auth_info.token = Some("not-the-token".to_owned().into());
        let (local, network) = both_errors(&f, &wrong, async |api| api.get("x").await).await;
        assert_eq!(local.code, 401);
        assert_eq!(local, network);
    }

    #[tokio::test]
    async fn request_bodies_and_errors_match_https() {
        let f = fixture().await;
        let (local, network) =
            both_errors(&f, &f.config, async |api| api.create(&PostParams::default(), &config_map("Not_Valid")).await)
                .await;
        assert_eq!(local.code, 422);
        assert_eq!(local.reason, "Invalid");
        assert_eq!(local, network);
        let (local, network) = both_errors(&f, &f.config, async |api| api.get("missing").await).await;
        assert_eq!(local.code, 404);
        assert_eq!(local, network);
    }

    #[tokio::test]
    async fn upgrades_go_over_the_network() {
        let f = fixture().await;
        let client = in_process(&f, &f.config);
        let request = http::Request::get("/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true")
            .body(Vec::new())
            .unwrap();
        // The network client cannot connect: the upgrade failed there, not in the handlers.
        match client.connect(request).await {
            Err(kube::Error::HyperError(_) | kube::Error::Service(_)) => {}
            other => panic!("expected a connection error, got {:?}", other.map(|_| ())),
        }
    }

    /// CPU time of this process (both ends of every request) in microseconds.
    fn cpu_micros() -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
    }

    #[derive(Default)]
    struct Sample {
        latencies: Vec<Duration>,
        cpu_micros: u64,
    }

    impl Sample {
        fn quantile(&mut self, q: f64) -> f64 {
            self.latencies.sort();
            let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len()) - 1;
            self.latencies[i].as_secs_f64() * 1e6
        }

        fn cpu_per_request(&self) -> f64 {
            self.cpu_micros as f64 / self.latencies.len() as f64
        }
    }

    /// Runs `op` `n` times in a row, timing each.
    async fn measure(sample: &mut Sample, n: usize, mut op: impl AsyncFnMut(usize)) {
        let cpu = cpu_micros();
        for i in 0..n {
            let started = std::time::Instant::now();
            op(i).await;
            sample.latencies.push(started.elapsed());
        }
        sample.cpu_micros += cpu_micros() - cpu;
    }

    /// One request kind through both clients of one server: rounds alternate between them so
    /// drift in the machine's load hits both alike.
    async fn compare(
        name: &str,
        rounds: usize,
        per_round: usize,
        clients: &[(&str, kube::Client)],
        op: impl AsyncFn(usize, &kube::Client, usize),
    ) {
        let mut samples: Vec<Sample> = clients.iter().map(|_| Sample::default()).collect();
        let mut seq = 0;
        for _ in 0..rounds {
            for (k, ((_, client), sample)) in clients.iter().zip(&mut samples).enumerate() {
                measure(sample, per_round, async |_| {
                    op(k, client, seq).await;
                    seq += 1;
                })
                .await;
            }
        }
        let mut line = format!("{name:<28}");
        for ((label, _), sample) in clients.iter().zip(&mut samples) {
            line += &format!(
                " | {label}: p50 {:>7.1} us p99 {:>7.1} us cpu {:>6.1} us/req",
                sample.quantile(0.5),
                sample.quantile(0.99),
                sample.cpu_per_request()
            );
        }
        let (p50, cpu) = (
            samples[1].quantile(0.5) / samples[0].quantile(0.5),
            samples[1].cpu_per_request() / samples[0].cpu_per_request(),
        );
        println!("{line} | https/in-process: p50 {p50:.2}x cpu {cpu:.2}x");
    }

    /// `bench/api-client/run.sh`: latency and CPU per request of the in-process client beside
    /// the HTTPS one, against one server in one process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: bench/api-client/run.sh"]
    async fn bench_transports() {
        let n: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        // Commits without fsync: the transport, not the disk, is what is compared.
        let options = berth_store::StoreOptions { sync: berth_store::Durability::Normal, ..Default::default() };
        let f = fixture_with(options).await;
        let network = kube::Client::try_from(f.config.clone()).unwrap();
        let local = super::client(&f.config, berth_apiserver::router(Arc::clone(&f.state)), network.clone()).unwrap();
        let clients = [("in-process", local), ("https", network)];
        let api = |c: &kube::Client| Api::<ConfigMap>::namespaced(c.clone(), "default");
        for i in 0..100 {
            api(&clients[0].1).create(&PostParams::default(), &config_map(&format!("cm-{i}"))).await.unwrap();
        }
        // Warm both: connections, caches, discovery of nothing.
        for (_, c) in &clients {
            for _ in 0..50 {
                api(c).get("cm-0").await.unwrap();
            }
        }
        let rounds = 10;
        let per = n / rounds;
        println!("requests per client and kind: {}", rounds * per);
        compare("get configmap", rounds, per, &clients, async |_, c, _| {
            api(c).get("cm-1").await.unwrap();
        })
        .await;
        compare("list 100 configmaps", rounds, per / 4, &clients, async |_, c, _| {
            api(c).list(&Default::default()).await.unwrap();
        })
        .await;
        compare("create configmap", rounds, per, &clients, async |_, c, i| {
            api(c).create(&PostParams::default(), &config_map(&format!("new-{i}"))).await.unwrap();
        })
        .await;
        // A write seen by a watch the same client holds open, each client in its own
        // namespace: create -> ADDED event.
        let mut watches = Vec::new();
        for (k, (_, c)) in clients.iter().enumerate() {
            let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
            let body = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("watch-{k}")}})).unwrap();
            ns.create(&PostParams::default(), &body).await.unwrap();
            let cms = Api::<ConfigMap>::namespaced(c.clone(), &format!("watch-{k}"));
            let rv = cms.list_metadata(&Default::default()).await.unwrap().metadata.resource_version.unwrap();
            let events = cms.watch(&WatchParams::default().timeout(290), &rv).await.unwrap().boxed();
            watches.push((cms, tokio::sync::Mutex::new(events)));
        }
        compare("create -> watch event", rounds, per, &clients, async |k, _, i| {
            let (cms, events) = &watches[k];
            let name = format!("w-{i}");
            cms.create(&PostParams::default(), &config_map(&name)).await.unwrap();
            match events.lock().await.try_next().await.unwrap().unwrap() {
                WatchEvent::Added(cm) => assert_eq!(cm.metadata.name, Some(name)),
                other => panic!("unexpected {other:?}"),
            }
        })
        .await;
    }
}
