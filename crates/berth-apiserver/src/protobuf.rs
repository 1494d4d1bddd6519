//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which typed
//! client-go clients (e.g. `kubectl create namespace`) send with no JSON fallback.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message whose `typeMeta` names
//! the kind and whose `raw` holds the object's own message. The object is decoded with the
//! `k8s-pb` prost types and turned into the JSON a JSON client would have sent for the same Go
//! object: the converters in `protobuf/generated.rs` are generated from k8s-pb and from the Go
//! struct tags compiled into kubectl, so field names, `omitempty` and pointer semantics match
//! `encoding/json`.

mod convert;
mod generated;

use berth_core::ApiError;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value};

use convert::{ConvertError, ToJson};

/// The 4-byte magic that starts every Kubernetes protobuf envelope.
pub const MAGIC: &[u8] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the Kubernetes envelope magic \"k8s\\x00\"")]
    MissingMagic,
    #[error("protobuf envelope (runtime.Unknown) could not be decoded: {0}")]
    Envelope(prost::DecodeError),
    #[error("protobuf envelope has no typeMeta.apiVersion and typeMeta.kind")]
    MissingTypeMeta,
    #[error("protobuf envelope uses content encoding {0:?}; only unencoded bodies are supported")]
    ContentEncoding(String),
    #[error("protobuf envelope declares content type {0:?}; expected {MEDIA_TYPE}")]
    ContentType(String),
    #[error(
        "protobuf request bodies are accepted only for these kinds: {supported}; got {api_version}, Kind={kind}; send application/json instead"
    )]
    UnsupportedKind { api_version: String, kind: String, supported: String },
    #[error("protobuf body for {api_version}, Kind={kind} could not be decoded: {source}")]
    Object { api_version: String, kind: String, source: prost::DecodeError },
    #[error("protobuf body for {api_version}, Kind={kind} could not be converted to JSON: {source}")]
    Convert { api_version: String, kind: String, source: ConvertError },
}

impl From<ProtobufError> for ApiError {
    fn from(error: ProtobufError) -> Self {
        match error {
            ProtobufError::UnsupportedKind { .. } => ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: error.to_string(),
                details: None,
                list_continue: None,
            },
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// Decodes a protobuf request body into the JSON object (with `apiVersion` and `kind`) that a
/// JSON client would have sent.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    decode_envelope(body).map_err(ApiError::from)
}

/// The `(apiVersion, kind)` pairs accepted as protobuf bodies.
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    generated::KINDS.iter().map(|(api_version, kind, _)| (*api_version, *kind))
}

fn decode_envelope(body: &[u8]) -> Result<Value, ProtobufError> {
    let payload = body.strip_prefix(MAGIC).ok_or(ProtobufError::MissingMagic)?;
    let unknown = Unknown::decode(payload).map_err(ProtobufError::Envelope)?;
    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::ContentEncoding(encoding));
    }
    if let Some(content_type) = unknown.content_type.filter(|t| !t.is_empty() && t != MEDIA_TYPE) {
        return Err(ProtobufError::ContentType(content_type));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let (api_version, kind) = match (type_meta.api_version, type_meta.kind) {
        (Some(api_version), Some(kind)) if !api_version.is_empty() && !kind.is_empty() => (api_version, kind),
        _ => return Err(ProtobufError::MissingTypeMeta),
    };
    let Some((_, _, decoder)) = generated::KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind) else {
        let supported: Vec<String> = supported_kinds().map(|(v, k)| format!("{v}/{k}")).collect();
        return Err(ProtobufError::UnsupportedKind { api_version, kind, supported: supported.join(", ") });
    };
    let raw = unknown.raw.unwrap_or_default();
    let fields = decoder(&raw).map_err(|error| match error {
        ObjectError::Decode(source) => {
            ProtobufError::Object { api_version: api_version.clone(), kind: kind.clone(), source }
        }
        ObjectError::Convert(source) => {
            ProtobufError::Convert { api_version: api_version.clone(), kind: kind.clone(), source }
        }
    })?;
    // Go prints the inlined TypeMeta first.
    let mut object = Map::new();
    object.insert("kind".to_owned(), Value::String(kind));
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}

/// Why one object message could not be turned into JSON.
#[derive(Debug)]
enum ObjectError {
    Decode(prost::DecodeError),
    Convert(ConvertError),
}

/// Decodes the object message `T` and converts it to JSON (without `apiVersion` and `kind`).
fn decode_object<T: Message + Default + ToJson>(raw: &[u8]) -> Result<Value, ObjectError> {
    let message = T::decode(raw).map_err(ObjectError::Decode)?;
    message.to_json().map_err(ObjectError::Convert)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_pb::api::{apps, batch, coordination, core, networking, rbac};
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, ObjectMeta, Time};
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    use super::*;

    /// Wraps `message` the way client-go's protobuf serializer does.
    fn envelope(api_version: &str, kind: &str, message: &impl Message) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.to_owned()), kind: Some(kind.to_owned()) }),
            raw: Some(message.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn s(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta { name: s(name), ..Default::default() })
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn int(value: i32) -> Option<IntOrString> {
        Some(IntOrString { r#type: Some(0), int_val: Some(value), str_val: None })
    }

    fn string(value: &str) -> Option<IntOrString> {
        Some(IntOrString { r#type: Some(1), int_val: None, str_val: s(value) })
    }

    fn quantity(value: &str) -> Quantity {
        Quantity { string: s(value) }
    }

    /// Compares as text so that key order (Go's field order) is checked too.
    fn assert_json(actual: &Value, expected: &Value) {
        assert_eq!(serde_json::to_string_pretty(actual).unwrap(), serde_json::to_string_pretty(expected).unwrap());
    }

    /// Bodies captured from `kubectl` 1.32 create commands, next to what the same kubectl prints
    /// for the object with `--dry-run=client -o json`.
    const KUBECTL_FIXTURES: &[(&str, &[u8], &str)] = &[
        (
            "namespace",
            include_bytes!("protobuf/testdata/namespace.pb"),
            include_str!("protobuf/testdata/namespace.json"),
        ),
        (
            "configmap",
            include_bytes!("protobuf/testdata/configmap.pb"),
            include_str!("protobuf/testdata/configmap.json"),
        ),
        (
            "secret-generic",
            include_bytes!("protobuf/testdata/secret-generic.pb"),
            include_str!("protobuf/testdata/secret-generic.json"),
        ),
        (
            "secret-docker",
            include_bytes!("protobuf/testdata/secret-docker.pb"),
            include_str!("protobuf/testdata/secret-docker.json"),
        ),
        (
            "deployment",
            include_bytes!("protobuf/testdata/deployment.pb"),
            include_str!("protobuf/testdata/deployment.json"),
        ),
        (
            "deployment-zero",
            include_bytes!("protobuf/testdata/deployment-zero.pb"),
            include_str!("protobuf/testdata/deployment-zero.json"),
        ),
        ("job", include_bytes!("protobuf/testdata/job.pb"), include_str!("protobuf/testdata/job.json")),
        ("cronjob", include_bytes!("protobuf/testdata/cronjob.pb"), include_str!("protobuf/testdata/cronjob.json")),
        (
            "service-clusterip",
            include_bytes!("protobuf/testdata/service-clusterip.pb"),
            include_str!("protobuf/testdata/service-clusterip.json"),
        ),
        (
            "service-nodeport",
            include_bytes!("protobuf/testdata/service-nodeport.pb"),
            include_str!("protobuf/testdata/service-nodeport.json"),
        ),
        (
            "service-headless",
            include_bytes!("protobuf/testdata/service-headless.pb"),
            include_str!("protobuf/testdata/service-headless.json"),
        ),
        (
            "service-externalname",
            include_bytes!("protobuf/testdata/service-externalname.pb"),
            include_str!("protobuf/testdata/service-externalname.json"),
        ),
        (
            "serviceaccount",
            include_bytes!("protobuf/testdata/serviceaccount.pb"),
            include_str!("protobuf/testdata/serviceaccount.json"),
        ),
        ("quota", include_bytes!("protobuf/testdata/quota.pb"), include_str!("protobuf/testdata/quota.json")),
        ("ingress", include_bytes!("protobuf/testdata/ingress.pb"), include_str!("protobuf/testdata/ingress.json")),
        (
            "rolebinding",
            include_bytes!("protobuf/testdata/rolebinding.pb"),
            include_str!("protobuf/testdata/rolebinding.json"),
        ),
        (
            "clusterrolebinding",
            include_bytes!("protobuf/testdata/clusterrolebinding.pb"),
            include_str!("protobuf/testdata/clusterrolebinding.json"),
        ),
        (
            "clusterrole-agg",
            include_bytes!("protobuf/testdata/clusterrole-agg.pb"),
            include_str!("protobuf/testdata/clusterrole-agg.json"),
        ),
        (
            "clusterrole-nonresource",
            include_bytes!("protobuf/testdata/clusterrole-nonresource.pb"),
            include_str!("protobuf/testdata/clusterrole-nonresource.json"),
        ),
    ];

    #[test]
    fn kubectl_create_bodies_decode_to_the_json_kubectl_prints_for_them() {
        for (name, body, expected) in KUBECTL_FIXTURES {
            let expected: Value = serde_json::from_str(expected).unwrap();
            let actual = decode(body).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                serde_json::to_string_pretty(&actual).unwrap(),
                serde_json::to_string_pretty(&expected).unwrap(),
                "fixture {name}"
            );
        }
    }

    #[test]
    fn namespace_prints_empty_spec_and_status_and_null_creation_timestamp() {
        let ns = core::v1::Namespace {
            metadata: Some(ObjectMeta { creation_timestamp: Some(Time::default()), ..meta("x").unwrap() }),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x", "creationTimestamp": null},
                    "spec": {}, "status": {}}),
        );
    }

    #[test]
    fn configmap_binary_data_is_base64_and_immutable_false_is_kept() {
        let cm = core::v1::ConfigMap {
            metadata: meta("c"),
            immutable: Some(false),
            data: labels(&[("a", "b")]),
            binary_data: [("bin".to_owned(), vec![0u8, 255, 1])].into_iter().collect(),
        };
        let json = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "creationTimestamp": null},
                    "immutable": false, "data": {"a": "b"}, "binaryData": {"bin": "AP8B"}}),
        );
    }

    #[test]
    fn secret_data_is_base64_and_empty_type_is_omitted() {
        let secret = core::v1::Secret {
            metadata: meta("s"),
            data: [("p".to_owned(), b"q".to_vec())].into_iter().collect(),
            r#type: Some(String::new()),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s", "creationTimestamp": null},
                    "data": {"p": "cQ=="}}),
        );
    }

    #[test]
    fn service_ports_render_int_or_string_and_skip_zero_values() {
        let svc = core::v1::Service {
            metadata: Some(ObjectMeta { labels: labels(&[("app", "web")]), ..meta("web").unwrap() }),
            spec: Some(core::v1::ServiceSpec {
                ports: vec![
                    core::v1::ServicePort {
                        name: s("http"),
                        protocol: s("TCP"),
                        port: Some(80),
                        target_port: string("http"),
                        node_port: Some(0),
                        ..Default::default()
                    },
                    core::v1::ServicePort { port: Some(443), target_port: int(8443), ..Default::default() },
                ],
                selector: labels(&[("app", "web")]),
                r#type: s("ClusterIP"),
                cluster_ip: Some(String::new()),
                ..Default::default()
            }),
            status: None,
        };
        let json = decode(&envelope("v1", "Service", &svc)).unwrap();
        assert_json(
            &json,
            &json!({
                "kind": "Service", "apiVersion": "v1",
                "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "ports": [
                        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"},
                        {"port": 443, "targetPort": 8443}
                    ],
                    "selector": {"app": "web"},
                    "type": "ClusterIP"
                },
                "status": {"loadBalancer": {}}
            }),
        );
    }

    #[test]
    fn service_account_keeps_explicit_false_automount() {
        let sa = core::v1::ServiceAccount {
            metadata: meta("sa1"),
            automount_service_account_token: Some(false),
            image_pull_secrets: vec![core::v1::LocalObjectReference { name: s("reg") }],
            ..Default::default()
        };
        let json = decode(&envelope("v1", "ServiceAccount", &sa)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "ServiceAccount", "apiVersion": "v1",
                    "metadata": {"name": "sa1", "creationTimestamp": null},
                    "imagePullSecrets": [{"name": "reg"}], "automountServiceAccountToken": false}),
        );
    }

    #[test]
    fn resource_quota_quantities_are_strings() {
        let quota = core::v1::ResourceQuota {
            metadata: meta("q"),
            spec: Some(core::v1::ResourceQuotaSpec {
                hard: [("cpu".to_owned(), quantity("500m")), ("memory".to_owned(), quantity("1Gi"))]
                    .into_iter()
                    .collect(),
                scopes: vec!["NotTerminating".to_owned()],
                scope_selector: None,
            }),
            status: None,
        };
        let json = decode(&envelope("v1", "ResourceQuota", &quota)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "ResourceQuota", "apiVersion": "v1", "metadata": {"name": "q", "creationTimestamp": null},
                    "spec": {"hard": {"cpu": "500m", "memory": "1Gi"}, "scopes": ["NotTerminating"]},
                    "status": {}}),
        );
    }

    fn pod_spec() -> core::v1::PodSpec {
        core::v1::PodSpec {
            containers: vec![core::v1::Container {
                name: s("web"),
                image: s("nginx"),
                ports: vec![core::v1::ContainerPort { container_port: Some(80), ..Default::default() }],
                env: vec![core::v1::EnvVar { name: s("EMPTY"), value: Some(String::new()), value_from: None }],
                resources: Some(core::v1::ResourceRequirements {
                    limits: [("memory".to_owned(), quantity("128Mi"))].into_iter().collect(),
                    ..Default::default()
                }),
                volume_mounts: vec![core::v1::VolumeMount {
                    name: s("data"),
                    mount_path: s("/data"),
                    read_only: Some(false),
                    ..Default::default()
                }],
                readiness_probe: Some(core::v1::Probe {
                    handler: Some(core::v1::ProbeHandler {
                        http_get: Some(core::v1::HttpGetAction {
                            path: s("/healthz"),
                            port: string("http"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                security_context: Some(core::v1::SecurityContext {
                    run_as_user: Some(0),
                    allow_privilege_escalation: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![core::v1::Volume {
                name: s("data"),
                volume_source: Some(core::v1::VolumeSource {
                    empty_dir: Some(core::v1::EmptyDirVolumeSource { medium: Some(String::new()), size_limit: None }),
                    ..Default::default()
                }),
            }],
            termination_grace_period_seconds: Some(0),
            restart_policy: s("Always"),
            ..Default::default()
        }
    }

    fn pod_spec_json() -> Value {
        json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "web",
                "image": "nginx",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "EMPTY"}],
                "resources": {"limits": {"memory": "128Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false}
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0
        })
    }

    #[test]
    fn pod_inlines_volume_sources_and_probe_handlers_and_keeps_zero_pointers() {
        let pod = core::v1::Pod { metadata: meta("p"), spec: Some(pod_spec()), status: None };
        let json = decode(&envelope("v1", "Pod", &pod)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "creationTimestamp": null},
                    "spec": pod_spec_json(), "status": {}}),
        );
    }

    fn template(app: &str) -> Option<core::v1::PodTemplateSpec> {
        Some(core::v1::PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: labels(&[("app", app)]), ..Default::default() }),
            spec: Some(pod_spec()),
        })
    }

    fn template_json(app: &str) -> Value {
        json!({"metadata": {"creationTimestamp": null, "labels": {"app": app}}, "spec": pod_spec_json()})
    }

    fn selector(app: &str) -> Option<LabelSelector> {
        Some(LabelSelector { match_labels: labels(&[("app", app)]), match_expressions: vec![] })
    }

    #[test]
    fn deployment_keeps_zero_replicas_and_percent_surge() {
        let deploy = apps::v1::Deployment {
            metadata: meta("d"),
            spec: Some(apps::v1::DeploymentSpec {
                replicas: Some(0),
                selector: selector("d"),
                template: template("d"),
                strategy: Some(apps::v1::DeploymentStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(apps::v1::RollingUpdateDeployment {
                        max_unavailable: int(0),
                        max_surge: string("25%"),
                    }),
                }),
                min_ready_seconds: Some(0),
                ..Default::default()
            }),
            status: None,
        };
        let json = decode(&envelope("apps/v1", "Deployment", &deploy)).unwrap();
        assert_json(
            &json,
            &json!({
                "kind": "Deployment", "apiVersion": "apps/v1",
                "metadata": {"name": "d", "creationTimestamp": null},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "d"}},
                    "template": template_json("d"),
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
                },
                "status": {}
            }),
        );
    }

    #[test]
    fn job_and_cronjob_keep_zero_limits() {
        let job_spec = batch::v1::JobSpec { backoff_limit: Some(0), template: template("j"), ..Default::default() };
        let job = batch::v1::Job { metadata: meta("j"), spec: Some(job_spec.clone()), status: None };
        let json = decode(&envelope("batch/v1", "Job", &job)).unwrap();
        assert_json(
            &json,
            &json!({"kind": "Job", "apiVersion": "batch/v1", "metadata": {"name": "j", "creationTimestamp": null},
                    "spec": {"backoffLimit": 0, "template": template_json("j")}, "status": {}}),
        );

        let cronjob = batch::v1::CronJob {
            metadata: meta("cj"),
            spec: Some(batch::v1::CronJobSpec {
                schedule: s("*/1 * * * *"),
                successful_jobs_history_limit: Some(0),
                suspend: Some(false),
                job_template: Some(batch::v1::JobTemplateSpec { metadata: meta("cj"), spec: Some(job_spec) }),
                ..Default::default()
            }),
            status: None,
        };
        let json = decode(&envelope("batch/v1", "CronJob", &cronjob)).unwrap();
        assert_json(
            &json,
            &json!({
                "kind": "CronJob", "apiVersion": "batch/v1",
                "metadata": {"name": "cj", "creationTimestamp": null},
                "spec": {
                    "schedule": "*/1 * * * *",
                    "suspend": false,
                    "jobTemplate": {
                        "metadata": {"name": "cj", "creationTimestamp": null},
                        "spec": {"backoffLimit": 0, "template": template_json("j")}
                    },
                    "successfulJobsHistoryLimit": 0
                },
                "status": {}
            }),
        );
    }

    #[test]
    fn ingress_backend_port_number_and_path_type() {
        let ingress = networking::v1::Ingress {
            metadata: meta("ing"),
            spec: Some(networking::v1::IngressSpec {
                ingress_class_name: s("default"),
                rules: vec![networking::v1::IngressRule {
                    host: s("foo.com"),
                    ingress_rule_value: Some(networking::v1::IngressRuleValue {
                        http: Some(networking::v1::HttpIngressRuleValue {
                            paths: vec![networking::v1::HttpIngressPath {
                                path: s("/"),
                                path_type: s("Prefix"),
                                backend: Some(networking::v1::IngressBackend {
                                    service: Some(networking::v1::IngressServiceBackend {
                                        name: s("web"),
                                        port: Some(networking::v1::ServiceBackendPort {
                                            name: Some(String::new()),
                                            number: Some(80),
                                        }),
                                    }),
                                    resource: None,
                                }),
                            }],
                        }),
                    }),
                }],
                ..Default::default()
            }),
            status: None,
        };
        let json = decode(&envelope("networking.k8s.io/v1", "Ingress", &ingress)).unwrap();
        assert_json(
            &json,
            &json!({
                "kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
                "metadata": {"name": "ing", "creationTimestamp": null},
                "spec": {
                    "ingressClassName": "default",
                    "rules": [{"host": "foo.com", "http": {"paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}
                    }]}}]
                },
                "status": {"loadBalancer": {}}
            }),
        );
    }

    #[test]
    fn rbac_kinds_decode() {
        let rule = rbac::v1::PolicyRule {
            verbs: vec!["get".to_owned(), "list".to_owned()],
            api_groups: vec![String::new()],
            resources: vec!["pods".to_owned()],
            ..Default::default()
        };
        let rule_json = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]});
        let role = rbac::v1::Role { metadata: meta("r"), rules: vec![rule.clone()] };
        assert_json(
            &decode(&envelope("rbac.authorization.k8s.io/v1", "Role", &role)).unwrap(),
            &json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
                    "metadata": {"name": "r", "creationTimestamp": null}, "rules": [rule_json.clone()]}),
        );
        let cluster_role = rbac::v1::ClusterRole { metadata: meta("cr"), rules: vec![rule], aggregation_rule: None };
        assert_json(
            &decode(&envelope("rbac.authorization.k8s.io/v1", "ClusterRole", &cluster_role)).unwrap(),
            &json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
                    "metadata": {"name": "cr", "creationTimestamp": null}, "rules": [rule_json]}),
        );
        let subject = rbac::v1::Subject {
            kind: s("ServiceAccount"),
            api_group: Some(String::new()),
            name: s("sa1"),
            namespace: s("default"),
        };
        let subject_json = json!({"kind": "ServiceAccount", "name": "sa1", "namespace": "default"});
        let role_ref = |kind: &str, name: &str| rbac::v1::RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s(kind),
            name: s(name),
        };
        let binding = rbac::v1::RoleBinding {
            metadata: meta("rb"),
            subjects: vec![subject.clone()],
            role_ref: Some(role_ref("Role", "r")),
        };
        assert_json(
            &decode(&envelope("rbac.authorization.k8s.io/v1", "RoleBinding", &binding)).unwrap(),
            &json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
                    "metadata": {"name": "rb", "creationTimestamp": null}, "subjects": [subject_json.clone()],
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
        );
        let cluster_binding = rbac::v1::ClusterRoleBinding {
            metadata: meta("crb"),
            subjects: vec![subject],
            role_ref: Some(role_ref("ClusterRole", "view")),
        };
        assert_json(
            &decode(&envelope("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", &cluster_binding)).unwrap(),
            &json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
                    "metadata": {"name": "crb", "creationTimestamp": null}, "subjects": [subject_json],
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}}),
        );
    }

    #[test]
    fn cluster_role_without_rules_prints_null_rules_like_go() {
        let cluster_role = rbac::v1::ClusterRole { metadata: meta("agg"), rules: vec![], aggregation_rule: None };
        let json = decode(&envelope("rbac.authorization.k8s.io/v1", "ClusterRole", &cluster_role)).unwrap();
        assert_eq!(json["rules"], Value::Null);
        assert!(json.as_object().unwrap().contains_key("rules"));
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        let lease = coordination::v1::Lease {
            metadata: Some(ObjectMeta {
                creation_timestamp: Some(Time { seconds: Some(1_700_000_000), nanos: Some(500_000_000) }),
                deletion_timestamp: Some(Time { seconds: Some(0), nanos: Some(0) }),
                ..meta("l").unwrap()
            }),
            spec: Some(coordination::v1::LeaseSpec {
                holder_identity: s("me"),
                renew_time: Some(MicroTime { seconds: Some(1_700_000_000), nanos: Some(123_456_789) }),
                ..Default::default()
            }),
        };
        let json = decode(&envelope("coordination.k8s.io/v1", "Lease", &lease)).unwrap();
        assert_eq!(json["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(json["metadata"]["deletionTimestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(json["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(json["spec"]["holderIdentity"], "me");
    }

    #[test]
    fn go_zero_time_is_null() {
        let ns = core::v1::Namespace {
            metadata: Some(ObjectMeta {
                creation_timestamp: Some(Time { seconds: Some(-62_135_596_800), nanos: Some(0) }),
                ..meta("x").unwrap()
            }),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(json["metadata"]["creationTimestamp"], Value::Null);
    }

    #[test]
    fn out_of_range_time_is_a_bad_request() {
        let ns = core::v1::Namespace {
            metadata: Some(ObjectMeta {
                creation_timestamp: Some(Time { seconds: Some(i64::MAX), nanos: Some(0) }),
                ..meta("x").unwrap()
            }),
            ..Default::default()
        };
        let error = decode(&envelope("v1", "Namespace", &ns)).unwrap_err();
        assert_eq!(error.code, 400);
        assert!(error.message.contains("out of range"), "{}", error.message);
    }

    #[test]
    fn unsupported_kind_is_415_naming_the_accepted_kinds() {
        let pdb = k8s_pb::api::policy::v1::PodDisruptionBudget { metadata: meta("pdb"), ..Default::default() };
        let error = decode(&envelope("policy/v1", "PodDisruptionBudget", &pdb)).unwrap_err();
        assert_eq!(error.code, 415);
        assert_eq!(error.reason, "UnsupportedMediaType");
        assert!(error.message.contains("policy/v1, Kind=PodDisruptionBudget"), "{}", error.message);
        assert!(error.message.contains("apps/v1/Deployment"), "{}", error.message);
        assert!(error.message.contains("v1/Namespace"), "{}", error.message);
    }

    #[test]
    fn every_kind_in_the_table_decodes_an_empty_object() {
        for (api_version, kind) in supported_kinds() {
            let body = envelope(api_version, kind, &Unknown::default());
            let json = decode(&body).unwrap_or_else(|e| panic!("{api_version} {kind}: {e:?}"));
            assert_eq!(json["kind"], kind);
            assert_eq!(json["apiVersion"], api_version);
        }
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("no magic", b"{\"kind\":\"Namespace\"}".to_vec(), "magic"),
            ("empty", Vec::new(), "magic"),
            ("garbage envelope", [MAGIC, &[0xff, 0xff, 0xff]].concat(), "envelope"),
            ("no type meta", MAGIC.to_vec(), "typeMeta"),
            (
                "bad object",
                {
                    let unknown = Unknown {
                        type_meta: Some(TypeMeta { api_version: s("v1"), kind: s("Namespace") }),
                        raw: Some(vec![0x0a, 0x05, 0x01]),
                        ..Default::default()
                    };
                    [MAGIC, &unknown.encode_to_vec()].concat()
                },
                "v1, Kind=Namespace could not be decoded",
            ),
            (
                "gzip",
                {
                    let unknown = Unknown {
                        type_meta: Some(TypeMeta { api_version: s("v1"), kind: s("Namespace") }),
                        content_encoding: s("gzip"),
                        ..Default::default()
                    };
                    [MAGIC, &unknown.encode_to_vec()].concat()
                },
                "content encoding",
            ),
        ];
        for (name, body, needle) in cases {
            let error = decode(&body).unwrap_err();
            assert_eq!(error.code, 400, "{name}");
            assert_eq!(error.reason, "BadRequest", "{name}");
            assert!(error.message.contains(needle), "{name}: {}", error.message);
        }
    }

    #[test]
    fn truncated_and_corrupted_bodies_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for (_, body, _) in KUBECTL_FIXTURES {
            for len in 0..body.len() {
                let _ = decode(&body[..len]);
            }
            for _ in 0..200 {
                let mut corrupted = body.to_vec();
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = MAGIC.len() + (seed as usize) % (corrupted.len() - MAGIC.len());
                corrupted[at] ^= (seed >> 32) as u8 | 1;
                // Either outcome is fine; a panic fails the test.
                if let Err(error) = decode(&corrupted) {
                    assert!(error.code == 400 || error.code == 415, "{}", error.code);
                }
            }
        }
    }
}
