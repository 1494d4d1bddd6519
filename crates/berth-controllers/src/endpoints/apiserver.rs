//! The `default/kubernetes` Service's Endpoints and EndpointSlice, naming the API server as
//! upstream's API server writes them for itself (`pkg/controlplane/reconcilers`): one ready
//! address, port `https`, the Endpoints marked `skip-mirror` and the slice named after the
//! Service. The Service has no selector, so the other endpoint controllers leave both alone.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NAMESPACE: &str = "default";
const NAME: &str = "kubernetes";

/// The Endpoints naming `api` (upstream's layout).
pub fn endpoints(api: SocketAddr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": api.ip().to_string()}],
                     "ports": [{"name": "https", "port": api.port(), "protocol": "TCP"}]}]
    })
}

/// The EndpointSlice naming `api` (upstream's layout).
pub fn endpoint_slice(api: SocketAddr) -> Value {
    let family = if api.is_ipv4() { "IPv4" } else { "IPv6" };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": family,
        "endpoints": [{"addresses": [api.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": api.port(), "protocol": "TCP"}]
    })
}

/// Keeps both objects naming `api`: writes them now and every 30 s again if someone changed
/// or deleted them, as upstream's reconciler does.
pub async fn publish(client: Client, api: SocketAddr) {
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let slices_api: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    loop {
        let results = [
            ensure(&endpoints_api, endpoints(api), &["/metadata/labels", "/subsets"]).await,
            ensure(&slices_api, endpoint_slice(api), &["/metadata/labels", "/addressType", "/endpoints", "/ports"])
                .await,
        ];
        for e in results.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %e, "cannot write the kubernetes Service's endpoints; will retry");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Creates `want`, or replaces the object when one of `fields` differs.
async fn ensure<K>(api: &Api<K>, want: Value, fields: &[&str]) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut obj: K = serde_json::from_value(want.clone()).map_err(kube::Error::SerdeError)?;
    match api.get_opt(NAME).await? {
        None => {
            api.create(&PostParams::default(), &obj).await?;
        }
        Some(current) => {
            let current_value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
            if fields.iter().all(|f| current_value.pointer(f) == want.pointer(f)) {
                return Ok(());
            }
            obj.meta_mut().resource_version = current.meta().resource_version.clone();
            api.replace(NAME, &PostParams::default(), &obj).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn objects_parse_as_their_kinds() {
        let api: SocketAddr = "192.0.2.7:6443".parse().unwrap();
        let ep: Endpoints = serde_json::from_value(endpoints(api)).unwrap();
        assert_eq!(ep.subsets.unwrap()[0].ports.as_ref().unwrap()[0].port, 6443);
        let slice: EndpointSlice = serde_json::from_value(endpoint_slice(api)).unwrap();
        assert_eq!(slice.endpoints[0].addresses, ["192.0.2.7"]);
        assert_eq!(slice.address_type, "IPv4");
    }
}
