//! The `Route` custom resource (`routes.berth.dev`): one object gives one or more Services a
//! URL. Without `spec.host` it gets generated hosts, `<name>-<namespace>.<suffix>` and
//! `<name>-<namespace>.localhost`; the URL is written to `status.url` and printed by kubectl.

use serde_json::{Value, json};

use crate::snapshot::PortRef;

pub const GROUP: &str = "berth.dev";
pub const VERSION: &str = "v1";
pub const KIND: &str = "Route";
pub const PLURAL: &str = "routes";

/// The CustomResourceDefinition the server installs at start.
pub fn crd() -> Value {
    let backend = json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "kind": {"type": "string", "description": "Only Service."},
            "name": {"type": "string", "description": "The Service's name."},
            "weight": {"type": "integer", "minimum": 0, "maximum": 256,
                       "description": "Relative share of requests (default 100)."}
        }
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{PLURAL}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "route", "kind": KIND, "listKind": "RouteList", "shortNames": ["rt"]},
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Host", "type": "string", "jsonPath": ".status.host"},
                    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
                    {"name": "Services", "type": "string", "jsonPath": ".status.services"},
                    {"name": "Local", "type": "string", "priority": 1, "jsonPath": ".status.localURL"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["to"],
                            "properties": {
                                "host": {"type": "string", "description": "A custom host; generated when empty."},
                                "path": {"type": "string", "description": "Path prefix served (default /)."},
                                "to": backend.clone(),
                                "alternateBackends": {"type": "array", "items": backend},
                                "port": {"type": "object", "properties": {
                                    "targetPort": {"x-kubernetes-int-or-string": true,
                                                   "description": "The Service port (number or name); the first port when unset."}
                                }},
                                "stickySessions": {"type": "boolean",
                                                   "description": "Pin each client to one endpoint with a cookie."}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "host": {"type": "string"},
                                "url": {"type": "string"},
                                "localURL": {"type": "string"},
                                "hosts": {"type": "array", "items": {"type": "string"}},
                                "services": {"type": "string"}
                            }
                        }
                    }
                }}
            }]
        }
    })
}

/// What the router needs from a Route's spec.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub host: Option<String>,
    pub path: String,
    /// Service names with their weights, `to` first.
    pub backends: Vec<(String, u32)>,
    pub port: PortRef,
    pub sticky: bool,
}

impl RouteSpec {
    pub fn parse(route: &Value) -> Option<RouteSpec> {
        let spec = route.get("spec")?;
        let backend = |b: &Value| -> Option<(String, u32)> {
            let name = b.get("name")?.as_str()?.to_owned();
            let weight = b.get("weight").and_then(Value::as_u64).map_or(100, |w| u32::try_from(w).unwrap_or(256));
            Some((name, weight))
        };
        let mut backends = vec![backend(spec.get("to")?)?];
        backends
            .extend(spec.get("alternateBackends").and_then(Value::as_array).into_iter().flatten().filter_map(backend));
        let port = match spec.pointer("/port/targetPort") {
            Some(Value::Number(n)) => {
                n.as_i64().and_then(|n| i32::try_from(n).ok()).map_or(PortRef::First, PortRef::Number)
            }
            Some(Value::String(s)) => s.parse::<i32>().map_or_else(|_| PortRef::Name(s.clone()), PortRef::Number),
            _ => PortRef::First,
        };
        let path = spec.get("path").and_then(Value::as_str).filter(|p| p.starts_with('/')).unwrap_or("/").to_owned();
        Some(RouteSpec {
            host: spec.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_ascii_lowercase),
            path,
            backends,
            port,
            sticky: spec.get("stickySessions").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// How generated hosts and URLs are spelled.
#[derive(Debug, Clone, Default)]
pub struct HostNaming {
    /// `<machine-ip>.nip.io` unless `--route-suffix` says otherwise.
    pub suffix: String,
    /// The HTTP listener's port, shown in URLs unless it is 80.
    pub http_port: u16,
}

impl HostNaming {
    /// The hosts a Route answers on: its custom host, or the two generated ones.
    pub fn hosts(&self, name: &str, ns: &str, custom: Option<&str>) -> Vec<String> {
        match custom {
            Some(h) => vec![h.to_owned()],
            None => vec![format!("{name}-{ns}.{}", self.suffix), format!("{name}-{ns}.localhost")],
        }
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        let port =
            if self.http_port == 80 || self.http_port == 0 { String::new() } else { format!(":{}", self.http_port) };
        let path = if path == "/" { "" } else { path };
        format!("http://{host}{port}{path}")
    }

    /// The status a Route should have.
    pub fn status(&self, route: &Value) -> Option<Value> {
        let spec = RouteSpec::parse(route)?;
        let ns = route.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
        let name = route.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let hosts = self.hosts(name, ns, spec.host.as_deref());
        let services = spec
            .backends
            .iter()
            .map(|(s, w)| if spec.backends.len() > 1 { format!("{s}({w})") } else { s.clone() })
            .collect::<Vec<_>>()
            .join(",");
        let local = hosts.iter().find(|h| h.ends_with(".localhost")).map(|h| self.url(h, &spec.path));
        let mut status = json!({
            "host": hosts[0],
            "url": self.url(&hosts[0], &spec.path),
            "hosts": hosts,
            "services": services,
        });
        if let Some(local) = local {
            status["localURL"] = json!(local);
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_and_custom_hosts_reach_status() {
        let naming = HostNaming { suffix: "10.0.0.5.nip.io".into(), http_port: 8080 };
        let route = json!({"metadata": {"name": "web", "namespace": "shop"},
                           "spec": {"to": {"name": "web"}, "alternateBackends": [{"name": "canary", "weight": 10}]}});
        let st = naming.status(&route).unwrap();
        assert_eq!(st["url"], "http://web-shop.10.0.0.5.nip.io:8080");
        assert_eq!(st["localURL"], "http://web-shop.localhost:8080");
        assert_eq!(st["services"], "web(100),canary(10)");
        let custom = json!({"metadata": {"name": "web", "namespace": "shop"},
                            "spec": {"host": "Shop.Example.com", "to": {"name": "web"}}});
        assert_eq!(naming.status(&custom).unwrap()["hosts"], json!(["shop.example.com"]));
    }
}
