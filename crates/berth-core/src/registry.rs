//! The resources Berth serves: built-in kinds plus custom resources added at run time.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl GroupVersionKind {
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self { group: group.to_owned(), version: version.to_owned(), kind: kind.to_owned() }
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Splits an `apiVersion` string into group and version.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        match api_version.split_once('/') {
            Some((g, v)) => Self::new(g, v, kind),
            None => Self::new("", api_version, kind),
        }
    }
}

impl fmt::Display for GroupVersionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, Kind={}", self.api_version(), self.kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// Everything the API server needs to know to serve one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    pub gvk: GroupVersionKind,
    /// Plural, lower-case name used in URLs (`deployments`).
    pub plural: String,
    pub singular: String,
    pub scope: Scope,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub has_status: bool,
    pub has_scale: bool,
    /// Served from a CustomResourceDefinition rather than built in.
    pub custom: bool,
    /// Read-only projections (`metrics.k8s.io`) serve only get and list.
    pub read_only: bool,
    /// A CRD version's `additionalPrinterColumns` (empty for built-in kinds).
    pub printer_columns: Vec<PrinterColumn>,
}

/// One `additionalPrinterColumns` entry of a CustomResourceDefinition version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// A simple JSONPath such as `.status.url` or `.spec.ports[0].port`.
    pub json_path: String,
}

impl ResourceInfo {
    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// `deployments.apps`, or `pods` for the core group: the name used in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.gvk.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.gvk.group) }
    }

    /// `Deployment.apps`, or `Pod` for the core group: used in `Invalid` messages.
    pub fn qualified_kind(&self) -> String {
        if self.gvk.group.is_empty() { self.gvk.kind.clone() } else { format!("{}.{}", self.gvk.kind, self.gvk.group) }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.read_only {
            vec!["get", "list"]
        } else {
            vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        }
    }

    /// Storage key prefix for the whole resource, e.g. `/registry/apps/deployments/`.
    pub fn key_prefix(&self) -> String {
        let group = if self.gvk.group.is_empty() { "core" } else { &self.gvk.group };
        format!("/registry/{}/{}/", group, self.plural)
    }

    /// Storage key prefix for one namespace (or the whole resource for cluster scope).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}{}/", self.key_prefix(), ns),
            _ => self.key_prefix(),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short: &'static [&'static str],
    all: bool,
    status: bool,
    scale: bool,
}

// A table row constructor: positional arguments keep the BUILTINS table one line per kind.
#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short: &'static [&'static str],
    all: bool,
    status: bool,
    scale: bool,
) -> Builtin {
    Builtin { group, version, kind, plural, scope, short, all, status, scale }
}

use Scope::{Cluster, Namespaced};

#[rustfmt::skip]
/// The group of the resource metrics API (`kubectl top`).
pub const METRICS_GROUP: &str = "metrics.k8s.io";

const BUILTINS: &[Builtin] = &[
    b("", "v1", "Namespace", "namespaces", Cluster, &["ns"], false, true, false),
    b("", "v1", "Pod", "pods", Namespaced, &["po"], true, true, false),
    b("", "v1", "Service", "services", Namespaced, &["svc"], true, true, false),
    b("", "v1", "Endpoints", "endpoints", Namespaced, &["ep"], false, false, false),
    b("", "v1", "ConfigMap", "configmaps", Namespaced, &["cm"], false, false, false),
    b("", "v1", "Secret", "secrets", Namespaced, &[], false, false, false),
    b("", "v1", "ServiceAccount", "serviceaccounts", Namespaced, &["sa"], false, false, false),
    b("", "v1", "Event", "events", Namespaced, &["ev"], false, false, false),
    b("", "v1", "Node", "nodes", Cluster, &["no"], false, true, false),
    b("", "v1", "ResourceQuota", "resourcequotas", Namespaced, &["quota"], false, true, false),
    b("", "v1", "LimitRange", "limitranges", Namespaced, &["limits"], false, false, false),
    b("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", Namespaced, &["pvc"], false, true, false),
    b("", "v1", "PersistentVolume", "persistentvolumes", Cluster, &["pv"], false, true, false),
    b("apps", "v1", "Deployment", "deployments", Namespaced, &["deploy"], true, true, true),
    b("apps", "v1", "ReplicaSet", "replicasets", Namespaced, &["rs"], true, true, true),
    b("apps", "v1", "StatefulSet", "statefulsets", Namespaced, &["sts"], true, true, true),
    b("apps", "v1", "DaemonSet", "daemonsets", Namespaced, &["ds"], true, true, false),
    b("apps", "v1", "ControllerRevision", "controllerrevisions", Namespaced, &[], false, false, false),
    b("batch", "v1", "Job", "jobs", Namespaced, &[], true, true, false),
    b("batch", "v1", "CronJob", "cronjobs", Namespaced, &["cj"], true, true, false),
    b("networking.k8s.io", "v1", "Ingress", "ingresses", Namespaced, &["ing"], false, true, false),
    b("networking.k8s.io", "v1", "IngressClass", "ingressclasses", Cluster, &[], false, false, false),
    b("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", Namespaced, &["netpol"], false, false, false),
    b("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", Namespaced, &[], false, false, false),
    b("coordination.k8s.io", "v1", "Lease", "leases", Namespaced, &[], false, false, false),
    b("rbac.authorization.k8s.io", "v1", "Role", "roles", Namespaced, &[], false, false, false),
    b("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", Namespaced, &[], false, false, false),
    b("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", Cluster, &[], false, false, false),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        Cluster,
        &[],
        false,
        false,
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        Cluster,
        &["crd", "crds"],
        false,
        true,
        false,
    ),
];

/// The set of resources currently served. Built-ins are fixed; custom resources come and
/// go with their CustomResourceDefinitions.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Keyed by (group, version, plural).
    resources: BTreeMap<(String, String, String), ResourceInfo>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for bi in BUILTINS {
            r.insert(ResourceInfo {
                gvk: GroupVersionKind::new(bi.group, bi.version, bi.kind),
                plural: bi.plural.to_owned(),
                singular: bi.kind.to_lowercase(),
                scope: bi.scope,
                short_names: bi.short.iter().map(|s| (*s).to_owned()).collect(),
                categories: if bi.all { vec!["all".to_owned()] } else { vec![] },
                has_status: bi.status,
                has_scale: bi.scale,
                custom: false,
                read_only: false,
                printer_columns: Vec::new(),
            });
        }
        // metrics.k8s.io: usage the node measures, served read-only (never stored).
        for (kind, plural, scope) in [("PodMetrics", "pods", Namespaced), ("NodeMetrics", "nodes", Cluster)] {
            r.insert(ResourceInfo {
                gvk: GroupVersionKind::new(METRICS_GROUP, "v1beta1", kind),
                plural: plural.to_owned(),
                singular: kind.to_lowercase(),
                scope,
                short_names: vec![],
                categories: vec![],
                has_status: false,
                has_scale: false,
                custom: false,
                read_only: true,
                printer_columns: Vec::new(),
            });
        }
        r
    }

    pub fn insert(&mut self, info: ResourceInfo) {
        let key = (info.gvk.group.clone(), info.gvk.version.clone(), info.plural.clone());
        self.resources.insert(key, info);
    }

    /// Removes every version of a custom resource `plural.group`.
    pub fn remove_custom(&mut self, group: &str, plural: &str) {
        self.resources.retain(|(g, _, p), info| !(info.custom && g == group && p == plural));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources.get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    pub fn by_kind(&self, gvk: &GroupVersionKind) -> Option<&ResourceInfo> {
        self.resources.values().find(|r| &r.gvk == gvk)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ResourceInfo> {
        self.resources.values()
    }

    /// Group names in serving order: core first, then the rest as registered.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for bi in BUILTINS {
            if !groups.iter().any(|g| g == bi.group) {
                groups.push(bi.group.to_owned());
            }
        }
        for r in self.resources.values() {
            if !groups.contains(&r.gvk.group) {
                groups.push(r.gvk.group.clone());
            }
        }
        groups
    }

    /// Versions served for `group`, preferred first.
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for r in self.resources.values().filter(|r| r.gvk.group == group) {
            if !versions.contains(&r.gvk.version) {
                versions.push(r.gvk.version.clone());
            }
        }
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        versions
    }

    pub fn resources_in(&self, group: &str, version: &str) -> Vec<&ResourceInfo> {
        self.resources.values().filter(|r| r.gvk.group == group && r.gvk.version == version).collect()
    }
}

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else { return (0, 0, 0) };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        let r = Registry::with_builtins();
        let d = r.get("apps", "v1", "deployments").expect("deployments");
        assert_eq!(d.key(Some("default"), "web"), "/registry/apps/deployments/default/web");
        assert_eq!(d.qualified_plural(), "deployments.apps");
        let ns = r.get("", "v1", "namespaces").expect("namespaces");
        assert_eq!(ns.key(Some("ignored"), "demo"), "/registry/core/namespaces/demo");
        assert_eq!(ns.qualified_plural(), "namespaces");
    }

    #[test]
    fn versions_prefer_ga() {
        let mut r = Registry::default();
        for v in ["v1alpha1", "v1", "v2beta1"] {
            r.insert(ResourceInfo {
                gvk: GroupVersionKind::new("x.io", v, "Thing"),
                plural: "things".into(),
                singular: "thing".into(),
                scope: Scope::Namespaced,
                short_names: vec![],
                categories: vec![],
                has_status: false,
                has_scale: false,
                custom: true,
                read_only: false,
                printer_columns: vec![],
            });
        }
        assert_eq!(r.versions("x.io"), vec!["v1", "v2beta1", "v1alpha1"]);
    }
}
