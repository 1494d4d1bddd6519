//! Turning a request path and method into what it asks for (upstream's `RequestInfo`).

use http::Method;

/// What a resource request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Health(&'static str),
    Version,
    /// `/api` (legacy core listing) or aggregated discovery for the core group.
    CoreRoot,
    /// `/apis`.
    GroupsRoot,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    GroupVersion(String, String),
    OpenApiV2,
    OpenApiV3Root,
    /// `/openapi/v3/{api/v1 | apis/g/v}`.
    OpenApiV3(String),
    Resource(ResourcePath),
    Metrics,
    NotFound,
}

/// Subresources of a namespace object, which would otherwise read as a namespaced resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

pub fn parse(path: &str) -> Target {
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/healthz" | "/livez" | "/readyz" => {
            return Target::Health(match trimmed {
                "/healthz" => "healthz",
                "/livez" => "livez",
                _ => "readyz",
            });
        }
        "/version" => return Target::Version,
        "/api" => return Target::CoreRoot,
        "/apis" => return Target::GroupsRoot,
        "/openapi/v2" => return Target::OpenApiV2,
        "/openapi/v3" => return Target::OpenApiV3Root,
        "/metrics" => return Target::Metrics,
        _ => {}
    }
    if let Some(rest) = trimmed.strip_prefix("/openapi/v3/") {
        return Target::OpenApiV3(rest.to_owned());
    }
    if trimmed.starts_with("/healthz/") || trimmed.starts_with("/livez/") || trimmed.starts_with("/readyz/") {
        return Target::Health("healthz");
    }
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), (*v).to_owned(), rest),
        ["apis", g] => return Target::Group((*g).to_owned()),
        ["apis", g, v, rest @ ..] => ((*g).to_owned(), (*v).to_owned(), rest),
        _ => return Target::NotFound,
    };
    if rest.is_empty() {
        return Target::GroupVersion(group, version);
    }
    if rest.iter().any(|s| s.is_empty()) {
        return Target::NotFound;
    }
    let mut parts: &[&str] = rest;
    let mut namespace = None;
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = Some(parts[1].to_owned());
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    let (resource, name, subresource) = match parts {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Target::NotFound,
    };
    // For `/api/v1/namespaces/{name}` itself the "namespace" is the object's name.
    let namespace = if resource == "namespaces" { None } else { namespace };
    Target::Resource(ResourcePath {
        group,
        version,
        namespace,
        resource: resource.to_owned(),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

/// The verb a method and path make (`get`, `list`, `watch`, ...), for errors and audit.
pub fn verb(method: &Method, path: &ResourcePath, watch: bool) -> &'static str {
    match (method.as_str(), path.name.is_some()) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path) {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("/apis/apps/v1/namespaces/default/deployments/web/scale");
        assert_eq!(
            (
                r.group.as_str(),
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("apps", Some("default"), "deployments", Some("web"), Some("scale"))
        );
        let r = res("/api/v1/namespaces/demo");
        assert_eq!((r.resource.as_str(), r.name.as_deref(), r.namespace), ("namespaces", Some("demo"), None));
        let r = res("/api/v1/namespaces/demo/finalize");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("demo"), Some("finalize"))
        );
        let r = res("/api/v1/pods");
        assert_eq!((r.resource.as_str(), r.namespace), ("pods", None));
        let r = res("/api/v1/namespaces/default/pods");
        assert_eq!((r.resource.as_str(), r.namespace.as_deref(), r.name), ("pods", Some("default"), None));
        assert_eq!(parse("/apis/apps/v1"), Target::GroupVersion("apps".into(), "v1".into()));
        assert_eq!(parse("/apis/apps"), Target::Group("apps".into()));
        assert_eq!(parse("/bogus"), Target::NotFound);
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/c/d"), Target::NotFound);
    }
}
