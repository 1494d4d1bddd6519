//! Decoding a body as its kind, as the API server's JSON decoder does: type mismatches and
//! malformed base64 or quantities fail the request (with Go-style messages), and fields the
//! kind's schema does not know are listed for `fieldValidation=Strict`/`Warn`.
//!
//! The schema is that of the typed `k8s-openapi` structs: the body is decoded into the
//! struct and encoded again, and every path present in the body but missing from the
//! round trip is unknown.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::DecodeError;
use super::parse_quantity;
use crate::registry::GroupVersionKind;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::{apps, batch, coordination, discovery, networking, rbac};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

/// Decodes `obj` as `gvk`; `Ok(None)` for kinds without a typed schema (custom resources).
fn roundtrip(gvk: &GroupVersionKind, obj: &Value) -> Result<Option<Value>, DecodeError> {
    macro_rules! kinds {
        ($( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {
            match (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) {
                $( ($g, $v, $k) => typed::<$t>(obj, $k).map(Some), )*
                _ => Ok(None),
            }
        };
    }
    kinds! {
        ("", "v1", "Namespace") => corev1::Namespace,
        ("", "v1", "Pod") => corev1::Pod,
        ("", "v1", "Service") => corev1::Service,
        ("", "v1", "Endpoints") => corev1::Endpoints,
        ("", "v1", "ConfigMap") => corev1::ConfigMap,
        ("", "v1", "Secret") => corev1::Secret,
        ("", "v1", "ServiceAccount") => corev1::ServiceAccount,
        ("", "v1", "Event") => corev1::Event,
        ("", "v1", "Node") => corev1::Node,
        ("", "v1", "ResourceQuota") => corev1::ResourceQuota,
        ("", "v1", "LimitRange") => corev1::LimitRange,
        ("", "v1", "PersistentVolumeClaim") => corev1::PersistentVolumeClaim,
        ("", "v1", "PersistentVolume") => corev1::PersistentVolume,
        ("apps", "v1", "Deployment") => apps::v1::Deployment,
        ("apps", "v1", "ReplicaSet") => apps::v1::ReplicaSet,
        ("apps", "v1", "StatefulSet") => apps::v1::StatefulSet,
        ("apps", "v1", "DaemonSet") => apps::v1::DaemonSet,
        ("apps", "v1", "ControllerRevision") => apps::v1::ControllerRevision,
        ("batch", "v1", "Job") => batch::v1::Job,
        ("batch", "v1", "CronJob") => batch::v1::CronJob,
        ("networking.k8s.io", "v1", "Ingress") => networking::v1::Ingress,
        ("networking.k8s.io", "v1", "IngressClass") => networking::v1::IngressClass,
        ("networking.k8s.io", "v1", "NetworkPolicy") => networking::v1::NetworkPolicy,
        ("discovery.k8s.io", "v1", "EndpointSlice") => discovery::v1::EndpointSlice,
        ("coordination.k8s.io", "v1", "Lease") => coordination::v1::Lease,
        ("rbac.authorization.k8s.io", "v1", "Role") => rbac::v1::Role,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => rbac::v1::ClusterRoleBinding,
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => apiextensions::CustomResourceDefinition,
    }
}

/// Unknown field paths of `obj`, or why it cannot be decoded as `gvk` at all.
pub(crate) fn unknown_fields(gvk: &GroupVersionKind, obj: &Value) -> Result<Vec<String>, DecodeError> {
    let mut input = obj.clone();
    if gvk.group.is_empty() && gvk.version == "v1" {
        // `[]byte` fields: check with Go's decoder, then hide them from the typed one.
        let byte_maps: &[&str] = match gvk.kind.as_str() {
            "Secret" => &["data"],
            "ConfigMap" => &["binaryData"],
            _ => &[],
        };
        for key in byte_maps {
            if let Some(map) = input.get_mut(*key).and_then(Value::as_object_mut) {
                for value in map.values_mut() {
                    if let Some(s) = value.as_str() {
                        go_base64(s)?;
                        *value = Value::from("");
                    }
                }
            }
        }
    }
    let Some(round) = roundtrip(gvk, &input)? else { return Ok(Vec::new()) };
    if gvk.group != "apiextensions.k8s.io" && !(gvk.group == "apps" && gvk.kind == "ControllerRevision") {
        check_quantities(obj)?;
    }
    let mut unknown = Vec::new();
    diff(obj, &round, "", &mut unknown);
    Ok(unknown)
}

fn typed<T: DeserializeOwned + Serialize>(obj: &Value, kind: &str) -> Result<Value, DecodeError> {
    let mut input = obj.clone();
    if let Some(map) = input.as_object_mut() {
        // Checked by the API server against the URL; the typed decoder would reject others.
        map.remove("apiVersion");
        map.remove("kind");
    }
    match serde_path_to_error::deserialize::<_, T>(&input) {
        Ok(value) => serde_json::to_value(&value).map_err(|e| DecodeError { message: e.to_string() }),
        Err(err) => Err(type_error::<T>(&input, &err, kind)),
    }
}

/// Paths present (and non-null) in `input` but absent from `output`.
fn diff(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match b.get(key) {
                    None => out.push(child),
                    Some(other) => diff(value, other, &child, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Keys whose values are free-form maps: their keys are data, not field names.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "binaryData",
    "stringData",
    "nodeSelector",
    "matchLabels",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "hard",
    "used",
    "overhead",
    "volumeAttributes",
    "properties",
    "definitions",
    "patternProperties",
    "allocatedResources",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

/// A Go-style type error: `json: cannot unmarshal string into Go struct field
/// DeploymentSpec.spec.replicas of type int32`.
fn type_error<T: DeserializeOwned>(
    input: &Value,
    err: &serde_path_to_error::Error<serde_json::Error>,
    kind: &str,
) -> DecodeError {
    let segments: Vec<&Segment> = err.path().iter().collect();
    let inner = err.inner().to_string();
    let Some((found, expected)) = parse_serde_type_error(&inner) else {
        return DecodeError { message: format!("error decoding {}: {inner}", err.path()) };
    };
    // Field names only: Go leaves out list indices and map keys.
    let mut names: Vec<(usize, &str)> = Vec::new();
    let mut previous: Option<&str> = None;
    for (i, seg) in segments.iter().enumerate() {
        if let Segment::Map { key } = seg {
            let is_map_key =
                previous.is_some_and(|p| MAP_FIELDS.contains(&p) || (p == "selector" && kind == "Service"));
            if !is_map_key {
                names.push((i, key.as_str()));
            }
            previous = Some(key.as_str());
        }
    }
    let go_path: Vec<&str> = names.iter().map(|(_, n)| *n).collect();
    let struct_name = match names.last() {
        Some((i, _)) => containing_struct::<T>(input, &segments[..*i]).unwrap_or_else(|| kind.to_owned()),
        None => kind.to_owned(),
    };
    DecodeError {
        message: format!(
            "json: cannot unmarshal {found} into Go struct field {struct_name}.{} of type {}",
            go_path.join("."),
            go_type(&expected)
        ),
    }
}

/// The Go struct holding a field, found by decoding again with the parent replaced by `0`:
/// the typed decoder then names the struct it expected.
fn containing_struct<T: DeserializeOwned>(input: &Value, parent: &[&Segment]) -> Option<String> {
    if parent.is_empty() {
        return None;
    }
    let mut probe = input.clone();
    let mut cursor = &mut probe;
    for seg in parent {
        cursor = match seg {
            Segment::Map { key } => cursor.get_mut(key.as_str())?,
            Segment::Seq { index } => cursor.get_mut(*index)?,
            _ => return None,
        };
    }
    *cursor = Value::from(0);
    let err = serde_path_to_error::deserialize::<_, T>(&probe).err()?;
    let (_, expected) = parse_serde_type_error(&err.inner().to_string())?;
    Some(expected)
}

/// Splits serde's `invalid type: string "x", expected i32` into Go's JSON type name and the
/// expected type.
fn parse_serde_type_error(msg: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix("invalid type: ").or_else(|| msg.strip_prefix("invalid value: "))?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let expected = expected.split(" at line ").next().unwrap_or(expected).to_owned();
    let literal = found.split_once('`').map(|(_, v)| v.trim_end_matches('`'));
    let found = if found.starts_with("string") {
        "string".to_owned()
    } else if found.starts_with("integer") || found.starts_with("floating point") {
        format!("number {}", literal.unwrap_or_default())
    } else if found.starts_with("boolean") {
        "bool".to_owned()
    } else if found.starts_with("map") {
        "object".to_owned()
    } else if found.starts_with("sequence") {
        "array".to_owned()
    } else {
        found.to_owned()
    };
    Some((found, expected))
}

fn go_type(expected: &str) -> String {
    match expected {
        "i32" => "int32".to_owned(),
        "i64" => "int64".to_owned(),
        "u32" => "uint32".to_owned(),
        "u64" => "uint64".to_owned(),
        "f64" => "float64".to_owned(),
        "a boolean" => "bool".to_owned(),
        "a string" => "string".to_owned(),
        "a map" => "map[string]string".to_owned(),
        "a sequence" => "[]interface {}".to_owned(),
        "Quantity" => "resource.Quantity".to_owned(),
        "IntOrString" => "intstr.IntOrString".to_owned(),
        other => format!("v1.{other}"),
    }
}

/// `base64.StdEncoding.Decode`'s acceptance, with its `CorruptInputError` offsets.
pub(crate) fn go_base64(s: &str) -> Result<(), DecodeError> {
    let corrupt = |at: usize| DecodeError { message: format!("illegal base64 data at input byte {at}") };
    let src = s.as_bytes();
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let skip_newlines = |mut i: usize| {
        while i < src.len() && (src[i] == b'\n' || src[i] == b'\r') {
            i += 1;
        }
        i
    };
    let mut si = 0;
    loop {
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                return match j {
                    0 => Ok(()),
                    _ => Err(corrupt(si - j)),
                };
            }
            let c = src[si];
            si += 1;
            if valid(c) {
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(si - 1));
            }
            // Padding: only after two or three symbols, and it ends the input.
            match j {
                0 | 1 => return Err(corrupt(si - 1)),
                2 => {
                    si = skip_newlines(si);
                    if si == src.len() {
                        return Err(corrupt(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(corrupt(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            si = skip_newlines(si);
            return if si < src.len() { Err(corrupt(si)) } else { Ok(()) };
        }
    }
}

/// Keys whose object values are `ResourceList`s and scalar quantity fields.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "overhead",
    "capacity",
    "allocatable",
    "hard",
    "used",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
    "allocatedResources",
];

/// Quantities that do not parse fail decoding upstream, with the parser's message.
fn check_quantities(v: &Value) -> Result<(), DecodeError> {
    let check = |q: &Value| -> Result<(), DecodeError> {
        let text = match q {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Ok(()),
        };
        parse_quantity(&text).map(|_| ()).map_err(|e| DecodeError { message: e.to_string() })
    };
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                if QUANTITY_MAPS.contains(&key.as_str())
                    && let Some(list) = value.as_object()
                {
                    list.values().try_for_each(check)?;
                } else if key == "sizeLimit" {
                    check(value)?;
                } else if !matches!(key.as_str(), "metadata" | "data" | "binaryData" | "stringData") {
                    check_quantities(value)?;
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_quantities),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web", "x/y": "z"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web", "image": "nginx",
                            "ports": [{"containerPort": 80, "name": "http"}],
                            "resources": {"limits": {"cpu": 1, "memory": "128Mi"}, "requests": {}},
                            "livenessProbe": {"httpGet": {"port": "http"}}
                        }],
                        "volumes": [{"name": "v", "emptyDir": {}}]
                    }
                }
            },
            "status": {}
        })
    }

    fn gvk(group: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind::new(group, "v1", kind)
    }

    #[test]
    fn known_objects_have_no_unknown_fields() {
        assert_eq!(unknown_fields(&gvk("apps", "Deployment"), &deployment()), Ok(vec![]));
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "type": "Opaque", "data": {"a": "aGVsbG8="}, "stringData": {"b": "plain"}});
        assert_eq!(unknown_fields(&gvk("", "Secret"), &secret), Ok(vec![]));
        let pod = json!({"metadata": {"name": "p", "labels": {}, "annotations": null}, "spec": {"volumes": [], "containers": [
            {"name": "c", "image": "i", "env": [], "ports": [], "resources": {"limits": {"cpu": 0.5, "memory": 1048576}},
             "startupProbe": {"tcpSocket": {"port": 8080}}, "livenessProbe": {"httpGet": {"port": "web"}}}]}});
        assert_eq!(unknown_fields(&gvk("", "Pod"), &pod), Ok(vec![]));
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "x"}}});
        assert_eq!(unknown_fields(&gvk("", "Service"), &svc), Ok(vec![]));
    }

    #[test]
    fn unknown_fields_are_reported_with_upstream_paths() {
        let mut d = deployment();
        d["spec"]["foo"] = json!(1);
        d["spec"]["template"]["spec"]["containers"][0]["bar"] = json!({"x": 1});
        d["metadata"]["bogus"] = json!(null);
        d["spec"]["strategy"]["nope"] = json!("x");
        assert_eq!(
            unknown_fields(&gvk("apps", "Deployment"), &d),
            // Document order, as Go's strict decoder meets them.
            Ok(vec![
                "spec.strategy.nope".to_owned(),
                "spec.template.spec.containers[0].bar".to_owned(),
                "spec.foo".to_owned()
            ])
        );
    }

    #[test]
    fn custom_resources_have_no_schema_here() {
        let obj = json!({"metadata": {"name": "w"}, "spec": {"anything": true}});
        assert_eq!(unknown_fields(&GroupVersionKind::new("example.com", "v1", "Widget"), &obj), Ok(vec![]));
    }

    #[test]
    fn type_errors_name_the_field_like_go() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!("two");
        assert_eq!(
            unknown_fields(&gvk("apps", "Deployment"), &d).unwrap_err().message,
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        );
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("80");
        assert_eq!(
            unknown_fields(&gvk("apps", "Deployment"), &d).unwrap_err().message,
            "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
        );
        let mut d = deployment();
        d["metadata"]["labels"]["app"] = json!(1);
        assert_eq!(
            unknown_fields(&gvk("apps", "Deployment"), &d).unwrap_err().message,
            "json: cannot unmarshal number 1 into Go struct field ObjectMeta.metadata.labels of type string"
        );
        let mut d = deployment();
        d["spec"] = json!("x");
        assert_eq!(
            unknown_fields(&gvk("apps", "Deployment"), &d).unwrap_err().message,
            "json: cannot unmarshal string into Go struct field Deployment.spec of type v1.DeploymentSpec"
        );
    }

    #[test]
    fn base64_and_quantities_fail_decoding() {
        let secret = json!({"metadata": {"name": "s"}, "data": {"a": "abc"}});
        assert_eq!(
            unknown_fields(&gvk("", "Secret"), &secret).unwrap_err().message,
            "illegal base64 data at input byte 0"
        );
        let secret = json!({"metadata": {"name": "s"}, "data": {"a": "ab!d"}});
        assert_eq!(
            unknown_fields(&gvk("", "Secret"), &secret).unwrap_err().message,
            "illegal base64 data at input byte 2"
        );
        assert!(go_base64("aGVsbG8=").is_ok());
        assert!(go_base64("aGVs\nbG8=").is_ok());
        assert!(go_base64("").is_ok());
        assert_eq!(go_base64("aGVsbG8=x").unwrap_err().message, "illegal base64 data at input byte 8");

        let cm = json!({"metadata": {"name": "c", "annotations": {"sizeLimit": "big"}}, "data": {"sizeLimit": "big", "limits": "none"}});
        assert_eq!(unknown_fields(&gvk("", "ConfigMap"), &cm), Ok(vec![]));

        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = json!("lots");
        assert_eq!(
            unknown_fields(&gvk("apps", "Deployment"), &d).unwrap_err().message,
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }
}
