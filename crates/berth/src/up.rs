//! `berth up`: the first command a newcomer runs. Starts the server with its defaults,
//! deploys the example in `examples/hello/`, waits until its URL answers, and prints it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::{
    Api,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ServerArgs, default_data_dir, server};

const EXAMPLE: &str = include_str!("../../../examples/hello/hello.yaml");

pub async fn run(args: ServerArgs, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let kubeconfig = args.data_dir.clone().unwrap_or_else(default_data_dir).join("kubeconfig");
    let router = args.http_listen.0;
    let mut server = tokio::spawn(server::run(args));
    let deadline = started + timeout;

    let client = loop {
        if server.is_finished() {
            return server.await.context("server task")?;
        }
        if kubeconfig.exists()
            && let Ok(client) = server::api_client(&kubeconfig).await
            && client.apiserver_version().await.is_ok()
        {
            break client;
        }
        if Instant::now() > deadline {
            bail!("the API did not come up within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let deploy = async {
        apply_example(&client).await?;
        let (url, local) = wait_for_route(&client, deadline).await?;
        if let Some(addr) = router {
            let host = local.trim_start_matches("http://").split(['/', ':']).next().unwrap_or_default().to_owned();
            wait_for_answer(addr, &host, deadline).await?;
        }
        anyhow::Ok((url, local))
    };
    let (url, local) = tokio::select! {
        result = &mut server => return result.context("server task")?,
        result = deploy => result?,
    };
    println!("berth: example app ready in {:.1} s at {local} (also {url})", started.elapsed().as_secs_f64());
    println!("berth: export KUBECONFIG={}", kubeconfig.display());
    server.await.context("server task")?
}

/// Server-side applies every document of the example.
async fn apply_example(client: &kube::Client) -> anyhow::Result<()> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(EXAMPLE).context("parsing examples/hello/hello.yaml")?;
    let params = PatchParams::apply("berth-up").force();
    for doc in docs.into_iter().filter(|d| d.is_object()) {
        let obj: DynamicObject = serde_json::from_value(doc.clone())?;
        let types = obj.types.clone().context("example object without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
        let name = obj.metadata.name.clone().context("example object without name")?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
        api.patch(&name, &params, &Patch::Apply(&doc))
            .await
            .with_context(|| format!("applying {} {name}", gvk.kind))?;
    }
    Ok(())
}

/// Waits until both replicas are ready and the Route has its URLs; returns (url, local URL).
async fn wait_for_route(client: &kube::Client, deadline: Instant) -> anyhow::Result<(String, String)> {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "default");
    let route_type = GroupVersionKind::gvk("berth.dev", "v1", "Route");
    let (resource, _) = kube::discovery::pinned_kind(client, &route_type).await?;
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    loop {
        let ready =
            deployments.get_opt("hello").await?.and_then(|d| d.status).and_then(|s| s.ready_replicas).unwrap_or(0);
        let route = routes.get_opt("hello").await?;
        let status = route.as_ref().and_then(|r| r.data.get("status"));
        let text = |k: &str| status.and_then(|s| s.get(k)).and_then(Value::as_str).map(str::to_owned);
        if ready >= 2
            && let (Some(url), Some(local)) = (text("url"), text("localURL"))
        {
            return Ok((url, local));
        }
        if Instant::now() > deadline {
            bail!("the example did not become ready in time ({ready}/2 replicas ready)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the router answers `host` with 200.
async fn wait_for_answer(addr: std::net::SocketAddr, host: &str, deadline: Instant) -> anyhow::Result<()> {
    let target =
        if addr.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(target).await {
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut answer = Vec::new();
            if s.write_all(request.as_bytes()).await.is_ok()
                && s.read_to_end(&mut answer).await.is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the router did not answer for {host} in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
