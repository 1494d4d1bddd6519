use serde_json::{Value, json};

use super::*;
use crate::defaults;

fn gvk(group: &str, kind: &str) -> GroupVersionKind {
    GroupVersionKind::new(group, "v1", kind)
}

/// Runs the write path a create goes through: decode, defaults, create preparation, validation.
fn create(group: &str, kind: &str, mut obj: Value) -> Vec<String> {
    let g = gvk(group, kind);
    assert_eq!(unknown_fields(&g, &obj), Ok(vec![]), "{kind} decodes cleanly");
    defaults::apply(&g, &mut obj);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".to_owned(), json!("0b5e7c1a-uid"));
    }
    defaults::prepare_for_create(&g, &mut obj);
    validate(&g, &obj, None).iter().map(FieldError::render).collect()
}

fn update(group: &str, kind: &str, old: Value, mut new: Value) -> Vec<String> {
    let g = gvk(group, kind);
    let mut old = old;
    defaults::apply(&g, &mut old);
    defaults::apply(&g, &mut new);
    validate(&g, &new, Some(&old)).iter().map(FieldError::render).collect()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
                    "volumes": [{"name": "cache", "emptyDir": {}}]}
            }
        }
    })
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

#[test]
fn valid_objects_of_every_kind_pass() {
    let ns = |mut v: Value| {
        v["metadata"]["namespace"] = json!("default");
        v
    };
    let cases: Vec<(&str, &str, Value)> = vec![
        ("apps", "Deployment", deployment()),
        (
            "",
            "Pod",
            ns(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"]}]}}),
            ),
        ),
        (
            "",
            "Service",
            ns(
                json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            ),
        ),
        (
            "",
            "Service",
            ns(json!({"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}})),
        ),
        ("", "ConfigMap", ns(json!({"metadata": {"name": "cfg"}, "data": {"app.properties": "x=1"}}))),
        (
            "",
            "Secret",
            ns(
                json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}),
            ),
        ),
        ("", "Namespace", json!({"metadata": {"name": "demo"}})),
        ("", "ServiceAccount", ns(json!({"metadata": {"name": "builder"}}))),
        (
            "",
            "PersistentVolumeClaim",
            ns(
                json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            ),
        ),
        (
            "",
            "PersistentVolume",
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/srv/pv1"}}}),
        ),
        (
            "",
            "ResourceQuota",
            ns(json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10", "requests.cpu": "2"}}})),
        ),
        (
            "",
            "LimitRange",
            ns(
                json!({"metadata": {"name": "l"}, "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"cpu": "100m"}}]}}),
            ),
        ),
        (
            "",
            "Endpoints",
            ns(
                json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 8080}]}]}),
            ),
        ),
        (
            "",
            "Event",
            ns(
                json!({"metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started", "type": "Normal"}),
            ),
        ),
        ("", "Node", json!({"metadata": {"name": "berth"}, "status": {"capacity": {"cpu": "2", "memory": "24Gi"}}})),
        (
            "apps",
            "ReplicaSet",
            ns(
                json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            ),
        ),
        (
            "apps",
            "StatefulSet",
            ns(
                json!({"metadata": {"name": "db"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "db"}}, "template": {"metadata": {"labels": {"a": "db"}}, "spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
            ),
        ),
        (
            "apps",
            "DaemonSet",
            ns(
                json!({"metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"a": "ds"}}, "template": {"metadata": {"labels": {"a": "ds"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            ),
        ),
        ("apps", "ControllerRevision", ns(json!({"metadata": {"name": "db-1"}, "data": {"spec": {}}, "revision": 1}))),
        (
            "batch",
            "Job",
            ns(
                json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "print 1"]}]}}}}),
            ),
        ),
        (
            "batch",
            "CronJob",
            ns(
                json!({"metadata": {"name": "hello"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "h", "image": "busybox"}]}}}}}}),
            ),
        ),
        (
            "networking.k8s.io",
            "Ingress",
            ns(
                json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "berth", "rules": [{"host": "web.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
            "tls": [{"hosts": ["*.example.com"], "secretName": "tls"}]}}),
            ),
        ),
        (
            "networking.k8s.io",
            "IngressClass",
            json!({"metadata": {"name": "berth"}, "spec": {"controller": "berth.dev/ingress"}}),
        ),
        (
            "networking.k8s.io",
            "NetworkPolicy",
            ns(
                json!({"metadata": {"name": "np"}, "spec": {"podSelector": {"matchLabels": {"a": "b"}}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}}),
            ),
        ),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            ns(
                json!({"metadata": {"name": "web-x"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.5"]}], "ports": [{"name": "http", "port": 8080}]}),
            ),
        ),
        (
            "coordination.k8s.io",
            "Lease",
            ns(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "x", "leaseDurationSeconds": 15}})),
        ),
        (
            "rbac.authorization.k8s.io",
            "Role",
            ns(
                json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
            ),
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": {"name": "system:reader"}, "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            ns(
                json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "Role", "name": "reader"}, "subjects": [{"kind": "ServiceAccount", "name": "builder"}]}),
            ),
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            json!({"metadata": {"name": "crb"}, "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"}, "subjects": [{"kind": "User", "name": "alice"}]}),
        ),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
        ),
    ];
    for (group, kind, obj) in cases {
        assert_eq!(create(group, kind, obj), Vec::<String>::new(), "{kind}");
    }
}

#[test]
fn object_meta_rules() {
    let mut d = deployment();
    d["metadata"]["name"] = json!("Web");
    assert_eq!(create("apps", "Deployment", d), [format!("metadata.name: Invalid value: \"Web\": {SUBDOMAIN_MSG}")]);

    let mut d = deployment();
    d["metadata"].as_object_mut().unwrap().remove("name");
    assert_eq!(create("apps", "Deployment", d), ["metadata.name: Required value: name or generateName is required"]);

    let mut d = deployment();
    d["metadata"].as_object_mut().unwrap().remove("name");
    d["metadata"]["generateName"] = json!("web-");
    assert_eq!(create("apps", "Deployment", d), Vec::<String>::new());

    let svc = json!({"metadata": {"name": "1web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
    assert_eq!(
        create("", "Service", svc),
        [
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    assert_eq!(
        create("", "Namespace", json!({"metadata": {"name": "a.b"}})),
        ["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );

    let mut d = deployment();
    d["metadata"]["labels"] = json!({"app": "bad value", "-x": "ok"});
    let errs = create("apps", "Deployment", d);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("metadata.labels: Invalid value: \"bad value\": a valid label must be an empty string"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("metadata.labels: Invalid value: \"-x\": name part must consist of alphanumeric"),
        "{errs:?}"
    );

    let mut d = deployment();
    d["metadata"].as_object_mut().unwrap().remove("namespace");
    assert_eq!(create("apps", "Deployment", d), ["metadata.namespace: Required value"]);

    let old = deployment();
    let mut renamed = deployment();
    renamed["metadata"]["name"] = json!("other");
    assert_eq!(
        update("apps", "Deployment", old, renamed),
        ["metadata.name: Invalid value: \"other\": field is immutable"]
    );
}

#[test]
fn container_rules() {
    let with_containers = |containers: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": containers}});
    let errs = create(
        "",
        "Pod",
        with_containers(json!([
            {"name": "Web", "image": "nginx"},
            {"name": "side", "image": ""},
            {"name": "side", "image": "x", "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP"}]}
        ])),
    );
    assert_eq!(
        errs,
        [
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.containers[1].image: Required value",
            "spec.containers[2].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[2].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[2].name: Duplicate value: \"side\"",
        ]
    );
    assert_eq!(create("", "Pod", with_containers(json!([]))), ["spec.containers: Required value"]);

    let errs = create(
        "",
        "Pod",
        with_containers(json!([{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "2", "memory": "-1"}, "limits": {"cpu": "1", "gpu": "1"}},
            "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2},
            "readinessProbe": {"periodSeconds": 5},
            "volumeMounts": [{"name": "missing", "mountPath": "/data"}],
            "env": [{"name": "A=B", "value": "x"}]}])),
    );
    assert_eq!(
        errs,
        [
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            "spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0",
            // Requests were defaulted from limits, as upstream does for Pods.
            "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
        ]
    );

    let errs = create(
        "",
        "Pod",
        with_containers(json!([{"name": "c", "image": "i", "resources": {"requests": {"example.com/gpu": "1"}}}])),
    );
    assert_eq!(
        errs,
        ["spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources"]
    );
}

#[test]
fn pod_spec_rules() {
    let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {
        "restartPolicy": "Sometimes",
        "containers": [{"name": "c", "image": "i"}],
        "volumes": [{"name": "a", "emptyDir": {}, "hostPath": {"path": "/x"}}, {"name": "a", "secret": {}}]
    }});
    assert_eq!(
        create("", "Pod", pod),
        [
            "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[1].secret.secretName: Required value",
            "spec.volumes[1].name: Duplicate value: \"a\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ]
    );
}

#[test]
fn pod_updates_only_change_images() {
    let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "nginx:1.26"}]}});
    let mut new_image = pod.clone();
    new_image["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    assert_eq!(update("", "Pod", pod.clone(), new_image), Vec::<String>::new());

    let mut bound = pod.clone();
    bound["spec"]["nodeName"] = json!("berth");
    assert_eq!(update("", "Pod", pod.clone(), bound.clone()), Vec::<String>::new());

    let mut changed = bound.clone();
    changed["spec"]["containers"][0]["command"] = json!(["sh"]);
    let errs = update("", "Pod", bound, changed);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"),
        "{errs:?}"
    );
    assert!(errs[0].contains("spec.containers"), "{errs:?}");
}

#[test]
fn deployment_rules() {
    let mut d = deployment();
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    assert_eq!(
        create("apps", "Deployment", d),
        [
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        ]
    );

    let mut d = deployment();
    d["spec"]["replicas"] = json!(-1);
    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(
        create("apps", "Deployment", d),
        [
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}: may not be 0 when `maxSurge` is 0",
        ]
    );

    let mut d = deployment();
    d["spec"].as_object_mut().unwrap().remove("selector");
    let errs = create("apps", "Deployment", d);
    assert_eq!(errs[0], "spec.selector: Required value");

    let mut d = deployment();
    d["spec"]["selector"] = json!({});
    d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}});
    assert_eq!(
        create("apps", "Deployment", d),
        [
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ]
    );

    let old = deployment();
    let mut new = deployment();
    new["spec"]["selector"]["matchLabels"]["tier"] = json!("fe");
    new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("fe");
    assert_eq!(
        update("apps", "Deployment", old, new),
        [
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"fe\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        ]
    );
}

#[test]
fn statefulset_and_daemonset_rules() {
    let sts = json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "db"}},
        "template": {"metadata": {"labels": {"a": "db"}}, "spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}}});
    let mut changed = sts.clone();
    changed["spec"]["serviceName"] = json!("other");
    assert_eq!(
        update("apps", "StatefulSet", sts.clone(), changed),
        [
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        ]
    );
    let mut scaled = sts.clone();
    scaled["spec"]["replicas"] = json!(3);
    assert_eq!(update("apps", "StatefulSet", sts, scaled), Vec::<String>::new());

    let ds = json!({"metadata": {"name": "ds", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"a": "ds"}},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}},
        "template": {"metadata": {"labels": {"a": "ds"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(
        create("apps", "DaemonSet", ds),
        ["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]
    );
}

#[test]
fn job_and_cronjob_rules() {
    let job = json!({"metadata": {"name": "pi", "namespace": "default"}, "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}}});
    assert_eq!(
        create("batch", "Job", job),
        ["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]
    );

    let job = json!({"metadata": {"name": "pi", "namespace": "default"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}});
    let mut stored = job.clone();
    defaults::apply(&gvk("batch", "Job"), &mut stored);
    stored["metadata"]["uid"] = json!("u1");
    defaults::prepare_for_create(&gvk("batch", "Job"), &mut stored);
    assert_eq!(validate(&gvk("batch", "Job"), &stored, None), vec![]);
    let mut changed = stored.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:5.36");
    let errs: Vec<String> =
        validate(&gvk("batch", "Job"), &changed, Some(&stored)).iter().map(FieldError::render).collect();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("spec.template: Invalid value: {") && errs[0].ends_with(": field is immutable"),
        "{errs:?}"
    );

    let cron = |schedule: &str| {
        json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {"schedule": schedule, "concurrencyPolicy": "Sometimes",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    assert_eq!(
        create("batch", "CronJob", cron("61 * * * *")),
        [
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
        ]
    );
    assert_eq!(create("batch", "CronJob", cron(""))[0], "spec.schedule: Required value");
    assert_eq!(
        create("batch", "CronJob", cron("TZ=UTC 0 * * * *"))[0],
        "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    );
}

#[test]
fn service_rules() {
    let svc = |spec: Value| json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
    assert_eq!(create("", "Service", svc(json!({"selector": {"app": "web"}}))), ["spec.ports: Required value"]);
    assert_eq!(
        create(
            "",
            "Service",
            svc(
                json!({"type": "Magic", "ports": [{"port": 80}, {"port": 80, "name": "x"}, {"port": 0, "name": "x", "nodePort": 30001}]})
            )
        ),
        [
            "spec.ports[0].name: Required value",
            "spec.ports[2].name: Duplicate value: \"x\"",
            "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[2].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
        ]
    );
    assert_eq!(
        create("", "Service", svc(json!({"ports": [{"port": 80, "nodePort": 30080}]}))),
        ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );

    let old = svc(json!({"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}));
    let changed = svc(json!({"clusterIP": "10.43.0.11", "ports": [{"port": 80}]}));
    assert_eq!(
        update("", "Service", old.clone(), changed),
        ["spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.11\"}: may not change once set"]
    );
    let same = svc(json!({"clusterIP": "10.43.0.10", "ports": [{"port": 8080}]}));
    assert_eq!(update("", "Service", old, same), Vec::<String>::new());
}

#[test]
fn configmap_and_secret_rules() {
    let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"bad key": "x", "..hidden": "y"}});
    assert_eq!(
        create("", "ConfigMap", cm),
        [
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            "data[..hidden]: Invalid value: \"..hidden\": must not start with '..'",
        ]
    );
    let frozen = json!({"metadata": {"name": "c", "namespace": "default"}, "immutable": true, "data": {"a": "1"}});
    let mut edited = frozen.clone();
    edited["data"]["a"] = json!("2");
    assert_eq!(
        update("", "ConfigMap", frozen, edited),
        ["data: Forbidden: field is immutable when `immutable` is set"]
    );

    let g = gvk("", "Secret");
    let bad =
        json!({"metadata": {"name": "s", "namespace": "default"}, "type": "Opaque", "data": {"k": "not base64!"}});
    assert_eq!(
        validate(&g, &bad, None).iter().map(FieldError::render).collect::<Vec<_>>(),
        ["data[k]: Invalid value: \"<secret contents redacted>\": illegal base64 data at input byte 3"]
    );

    let tls = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}});
    assert_eq!(create("", "Secret", tls.clone()), ["data[tls.key]: Required value"]);
    let mut retyped = tls.clone();
    retyped["type"] = json!("Opaque");
    let errs = update("", "Secret", tls, retyped);
    assert!(errs.contains(&"type: Invalid value: \"Opaque\": field is immutable".to_owned()), "{errs:?}");
}

#[test]
fn storage_and_rbac_and_ingress_rules() {
    let pvc = json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {"resources": {"requests": {"storage": "0"}}}});
    assert_eq!(
        create("", "PersistentVolumeClaim", pvc),
        [
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Invalid value: \"0\": must be greater than zero",
        ]
    );
    let bound = json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Bound"}});
    let mut grown = bound.clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert_eq!(update("", "PersistentVolumeClaim", bound.clone(), grown), Vec::<String>::new());
    let mut remoded = bound.clone();
    remoded["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_eq!(
        update("", "PersistentVolumeClaim", bound, remoded),
        ["spec: Forbidden: spec is immutable after creation except resources.requests for bound claims"]
    );

    let rb = json!({"metadata": {"name": "rb", "namespace": "default"}, "roleRef": {"kind": "Role", "name": "reader"}, "subjects": [{"kind": "Robot", "name": "r2"}]});
    assert_eq!(
        create("rbac.authorization.k8s.io", "RoleBinding", rb.clone()),
        ["subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""]
    );
    let mut repointed = rb.clone();
    repointed["roleRef"]["name"] = json!("writer");
    let errs = update("rbac.authorization.k8s.io", "RoleBinding", rb, repointed);
    assert!(
        errs.contains(&"roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"writer\"}: cannot change roleRef".to_owned()),
        "{errs:?}"
    );

    let ing = json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
        {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
        {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web"}}}]}}]}});
    assert_eq!(
        create("networking.k8s.io", "Ingress", ing),
        [
            "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            "spec.rules[0].http.paths[1].path: Invalid value: \"api\": must be an absolute path",
            "spec.rules[0].http.paths[1].backend: Required value: port name or number is required",
        ]
    );
    let empty = json!({"metadata": {"name": "i", "namespace": "default"}, "spec": {}});
    assert_eq!(
        create("networking.k8s.io", "Ingress", empty),
        ["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"]
    );

    let crd = json!({"metadata": {"name": "widgets.example.org"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"}, "versions": [{"name": "v1", "served": true, "storage": false}]}});
    assert_eq!(
        create("apiextensions.k8s.io", "CustomResourceDefinition", crd),
        [
            "metadata.name: Invalid value: \"widgets.example.org\": must be spec.names.plural+\".\"+spec.group",
            "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
            "spec.versions: Invalid value: [{\"name\":\"v1\",\"served\":true,\"storage\":false}]: must have exactly one version marked as storage version",
        ]
    );
}

#[test]
fn custom_resources_only_get_metadata_rules() {
    let g = GroupVersionKind::new("example.com", "v1", "Widget");
    let ok = json!({"metadata": {"name": "w1", "namespace": "default"}, "spec": {"anything": [1, 2]}});
    assert!(validate(&g, &ok, None).is_empty());
    let bad = json!({"metadata": {"name": "W_1"}});
    assert_eq!(validate(&g, &bad, None).len(), 1);
}
