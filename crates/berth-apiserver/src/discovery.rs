//! Discovery documents (`/api`, `/apis`, per group-version lists, aggregated discovery v2)
//! and the minimal OpenAPI v3 documents kubectl needs for `apply` with strict validation.

use berth_core::{Registry, ResourceInfo};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client accepts aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2")
            && !p.contains("v=v2beta1")
            && p.contains("as=APIGroupDiscoveryList")
    })
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-berth.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = registry
        .versions(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> =
        registry.groups().iter().filter(|g| !g.is_empty()).map(|g| group_entry(registry, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    if registry.versions(group).is_empty() {
        return None;
    }
    let mut g = group_entry(registry, group);
    if let Some(o) = g.as_object_mut() {
        o.insert("kind".into(), json!("APIGroup"));
        o.insert("apiVersion".into(), json!("v1"));
    }
    Some(g)
}

fn subresources(info: &ResourceInfo) -> Vec<(&'static str, String, String, &'static str, Vec<&'static str>)> {
    // (name, group, version, kind, verbs)
    let gv = (info.gvk.group.clone(), info.gvk.version.clone());
    let mut subs = Vec::new();
    if info.has_status {
        subs.push(("status", gv.0.clone(), gv.1.clone(), "", vec!["get", "patch", "update"]));
    }
    if info.has_scale {
        subs.push(("scale", "autoscaling".to_owned(), "v1".to_owned(), "Scale", vec!["get", "patch", "update"]));
    }
    if info.gvk.group.is_empty() && info.gvk.kind == "Pod" {
        subs.push(("log", String::new(), "v1".to_owned(), "Pod", vec!["get"]));
        subs.push(("exec", String::new(), "v1".to_owned(), "PodExecOptions", vec!["create", "get"]));
        subs.push(("portforward", String::new(), "v1".to_owned(), "PodPortForwardOptions", vec!["create", "get"]));
        subs.push(("attach", String::new(), "v1".to_owned(), "PodAttachOptions", vec!["create", "get"]));
        subs.push(("binding", String::new(), "v1".to_owned(), "Binding", vec!["create"]));
        subs.push(("eviction", "policy".to_owned(), "v1".to_owned(), "Eviction", vec!["create"]));
    }
    if info.gvk.group.is_empty() && info.gvk.kind == "Namespace" {
        subs.push(("finalize", String::new(), "v1".to_owned(), "Namespace", vec!["update"]));
    }
    subs
}

pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let infos = registry.resources_in(group, version);
    if infos.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for info in infos {
        let mut r = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced(),
            "kind": info.gvk.kind,
            "verbs": info.verbs(),
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            r["categories"] = json!(info.categories);
        }
        resources.push(r);
        for (name, g, v, kind, verbs) in subresources(info) {
            let kind = if kind.is_empty() { info.gvk.kind.as_str() } else { kind };
            let mut s = json!({
                "name": format!("{}/{name}", info.plural),
                "singularName": "",
                "namespaced": info.namespaced(),
                "kind": kind,
                "verbs": verbs,
            });
            if g != info.gvk.group || v != info.gvk.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn aggregated_group(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = registry
        .versions(group)
        .iter()
        .map(|v| {
            let resources: Vec<Value> = registry
                .resources_in(group, v)
                .into_iter()
                .map(|info| {
                    let subs: Vec<Value> = subresources(info)
                        .into_iter()
                        .map(|(name, g, ver, kind, verbs)| {
                            let kind = if kind.is_empty() { info.gvk.kind.as_str() } else { kind };
                            json!({"subresource": name, "responseKind": {"group": g, "version": ver, "kind": kind}, "verbs": verbs})
                        })
                        .collect();
                    let mut r = json!({
                        "resource": info.plural,
                        "responseKind": {"group": info.gvk.group, "version": info.gvk.version, "kind": info.gvk.kind},
                        "scope": if info.namespaced() { "Namespaced" } else { "Cluster" },
                        "singularResource": info.singular,
                        "verbs": info.verbs(),
                    });
                    if !info.short_names.is_empty() {
                        r["shortNames"] = json!(info.short_names);
                    }
                    if !info.categories.is_empty() {
                        r["categories"] = json!(info.categories);
                    }
                    if !subs.is_empty() {
                        r["subresources"] = json!(subs);
                    }
                    r
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery for `/api` (core only) or `/apis` (every named group).
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = registry
        .groups()
        .iter()
        .filter(|g| g.is_empty() == core)
        .filter(|g| !registry.versions(g).is_empty())
        .map(|g| aggregated_group(registry, g))
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The `/openapi/v3` index: one entry per group-version, with a content hash so clients
/// re-fetch when the served resources change.
pub fn openapi_v3_root(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for g in registry.groups() {
        for v in registry.versions(&g) {
            let doc = openapi_v3_group_version(registry, &g, &v);
            let hash = hex::encode(&Sha256::digest(doc.to_string().as_bytes())[..16]).to_uppercase();
            let p = gv_path(&g, &v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
        }
    }
    json!({"paths": paths})
}

/// A group-version document listing a `patch` operation per kind, carrying
/// `x-kubernetes-group-version-kind` and the `fieldValidation` parameter: enough for
/// kubectl to leave validation to the server. Strategic merge patch is deliberately not
/// listed, so kubectl computes patches from its compiled-in types.
pub fn openapi_v3_group_version(registry: &Registry, group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for info in registry.resources_in(group, version) {
        let base = format!("/{}", gv_path(group, version));
        let item = if info.namespaced() {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", info.plural)
        } else {
            format!("{base}/{}/{{name}}", info.plural)
        };
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": info.gvk.kind},
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            ],
            "requestBody": {"content": {
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/json-patch+json": {"schema": {"type": "object"}},
                "application/apply-patch+yaml": {"schema": {"type": "object"}},
            }},
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(item, json!({"patch": op}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

pub fn openapi_v3_for(registry: &Registry, rest: &str) -> Option<Value> {
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        ["api", v] => Some(openapi_v3_group_version(registry, "", v)),
        ["apis", g, v] => {
            if registry.resources_in(g, v).is_empty() {
                None
            } else {
                Some(openapi_v3_group_version(registry, g, v))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_detection() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn deployments_have_scale_and_all() {
        let r = Registry::with_builtins();
        let agg = aggregated(&r, false);
        let apps = agg["items"].as_array().and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "apps")).cloned();
        let apps = apps.expect("apps group");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["resource"] == "deployments"))
            .cloned()
            .expect("deployments");
        assert_eq!(deploy["categories"], json!(["all"]));
        let subs = deploy["subresources"].as_array().expect("subresources");
        assert!(subs.iter().any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale"));
        let list = resource_list(&r, "apps", "v1").expect("list");
        assert!(list["resources"].as_array().is_some_and(|rs| rs.iter().any(|r| r["name"] == "deployments/scale")));
    }
}
