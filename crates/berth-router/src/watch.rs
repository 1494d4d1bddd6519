//! Watching the API: one reflector per kind, a rebuild of the snapshot after every change,
//! and the status the router owns (Route URLs, Ingress addresses).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use k8s_openapi::{
    api::{
        core::v1::{Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    runtime::reflector::{self, Store},
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    RouterError, route,
    snapshot::{self, CLASS_NAME, CONTROLLER, Inputs, Snapshot},
    tls,
};

fn route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(route::GROUP, route::VERSION, route::KIND), route::PLURAL)
}

/// Installs the Route CRD and the default IngressClass `berth` (both left alone if present).
pub async fn install(client: &Client) -> Result<(), RouterError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(route::crd())?;
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Keep an existing CRD current with this binary's schema and columns.
            let name = format!("{}.{}", route::PLURAL, route::GROUP);
            crds.patch(&name, &PatchParams::default(), &Patch::Merge(&route::crd())).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let classes: Api<IngressClass> = Api::all(client.clone());
    let class: IngressClass = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": CLASS_NAME, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": CONTROLLER}
    }))?;
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps a store of `api` current until `stop`, poking `changed` after every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>, stop: &CancellationToken) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, run) = berth_watch::watch(api, changed);
    tokio::spawn(until(stop.clone(), run));
    store
}

async fn until(stop: CancellationToken, run: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = stop.cancelled() => {}
        () = run => {}
    }
}

pub async fn run(
    client: Client,
    snapshot: Arc<ArcSwap<Snapshot>>,
    naming: route::HostNaming,
    address: Option<IpAddr>,
    applied: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let ingresses = reflect(Api::<Ingress>::all(client.clone()), Arc::clone(&changed), &stop);
    let classes = reflect(Api::<IngressClass>::all(client.clone()), Arc::clone(&changed), &stop);
    let services = reflect(Api::<Service>::all(client.clone()), Arc::clone(&changed), &stop);
    let slices = reflect(Api::<EndpointSlice>::all(client.clone()), Arc::clone(&changed), &stop);
    let secrets = reflect(Api::<Secret>::all(client.clone()), Arc::clone(&changed), &stop);
    let ar = route_resource();
    let routes_api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let (routes, routes_watch) = {
        let changed = Arc::clone(&changed);
        berth_watch::watch_with(routes_api, ar.clone(), move |_| changed.notify_one())
    };
    tokio::spawn(until(stop.clone(), routes_watch));
    for ready in [
        ingresses.wait_until_ready().await,
        classes.wait_until_ready().await,
        services.wait_until_ready().await,
        slices.wait_until_ready().await,
        secrets.wait_until_ready().await,
        routes.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    let mut generation = 0u64;
    let mut written: HashMap<String, Value> = HashMap::new();
    let mut written_ingresses: HashMap<String, Value> = HashMap::new();
    loop {
        let all_ingresses = ingresses.state();
        let all_classes = classes.state();
        let all_services = services.state();
        let all_slices = slices.state();
        let all_routes = routes.state();
        let route_values: Vec<Value> =
            all_routes.iter().filter_map(|r| serde_json::to_value(r.as_ref()).ok()).collect();
        let certs = referenced_certs(&all_ingresses, &secrets);
        let inputs = Inputs {
            ingresses: all_ingresses.iter().map(AsRef::as_ref).collect(),
            classes: all_classes.iter().map(AsRef::as_ref).collect(),
            services: all_services.iter().map(AsRef::as_ref).collect(),
            slices: all_slices.iter().map(AsRef::as_ref).collect(),
            certs,
            routes: route_values.iter().collect(),
            route_hosts: naming.clone(),
        };
        let built = snapshot::build(&inputs);
        tracing::debug!(snapshot = ?built, "router configuration applied");
        snapshot.store(Arc::new(built));
        generation += 1;
        applied.send_replace(generation);
        write_route_status(&client, &ar, &naming, &route_values, &mut written).await;
        if let Some(ip) = address {
            let classes: Vec<&IngressClass> = all_classes.iter().map(AsRef::as_ref).collect();
            write_ingress_status(&client, ip, &all_ingresses, &classes, &mut written_ingresses).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.notified() => {}
        }
    }
}

/// Parses the TLS Secrets that some Ingress names.
fn referenced_certs(
    ingresses: &[Arc<Ingress>],
    secrets: &Store<Secret>,
) -> HashMap<String, Arc<rustls::sign::CertifiedKey>> {
    let mut out = HashMap::new();
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        for t in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(name) = &t.secret_name else { continue };
            let key = format!("{ns}/{name}");
            if out.contains_key(&key) {
                continue;
            }
            let reference = reflector::ObjectRef::<Secret>::new(name).within(&ns);
            if let Some(cert) = secrets.get(&reference).and_then(|s| tls::from_secret(&s)) {
                out.insert(key, Arc::new(cert));
            }
        }
    }
    out
}

/// Publishes the router's address in `status.loadBalancer.ingress` of every Ingress it
/// serves (as k3s's bundled ingress controller does), so `kubectl get ingress` shows it, and
/// takes it back from an Ingress that moved to another class, as ingress controllers do when
/// they stop serving one.
async fn write_ingress_status(
    client: &Client,
    ip: IpAddr,
    ingresses: &[Arc<Ingress>],
    classes: &[&IngressClass],
    written: &mut HashMap<String, Value>,
) {
    let want = json!({"ingress": [{"ip": ip.to_string()}]});
    for ing in ingresses {
        let (Some(ns), Some(name)) = (ing.metadata.namespace.as_deref(), ing.metadata.name.as_deref()) else {
            continue;
        };
        let key = ing.metadata.uid.clone().unwrap_or_else(|| format!("{ns}/{name}"));
        let current =
            ing.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| serde_json::to_value(lb).ok());
        let (patch, record) = if snapshot::ours(ing, classes) {
            if current.as_ref() == Some(&want) || written.get(&key) == Some(&want) {
                continue;
            }
            (json!({"status": {"loadBalancer": want}}), want.clone())
        } else if current.as_ref() == Some(&want) && written.get(&key) != Some(&Value::Null) {
            // Exactly the address this router writes (so this router wrote it, also before a
            // restart), on an Ingress it no longer serves.
            (json!({"status": {"loadBalancer": {"ingress": null}}}), Value::Null)
        } else {
            continue;
        };
        let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                written.insert(key, record);
            }
            Err(e) => tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "cannot write Ingress status"),
        }
    }
    written.retain(|key, _| ingresses.iter().any(|i| i.metadata.uid.as_deref() == Some(key)));
}

/// Writes each Route's URL to its status when it differs from what is there.
async fn write_route_status(
    client: &Client,
    ar: &ApiResource,
    naming: &route::HostNaming,
    routes: &[Value],
    written: &mut HashMap<String, Value>,
) {
    for r in routes {
        let (Some(ns), Some(name)) = (
            r.pointer("/metadata/namespace").and_then(Value::as_str),
            r.pointer("/metadata/name").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Some(status) = naming.status(r) else { continue };
        let key = r.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or(name).to_owned();
        if r.get("status") == Some(&status) || written.get(&key) == Some(&status) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
            Ok(_) => {
                written.insert(key, status);
            }
            Err(e) => tracing::warn!(route = %format!("{ns}/{name}"), error = %e, "cannot write Route status"),
        }
    }
}
