use serde_json::{Value, json};

use super::pod::image_tag;
use super::*;

fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    apply(&GroupVersionKind::new(group, "v1", kind), &mut obj);
    obj
}

fn created(group: &str, kind: &str, mut obj: Value) -> Value {
    let gvk = GroupVersionKind::new(group, "v1", kind);
    apply(&gvk, &mut obj);
    prepare_for_create(&gvk, &mut obj);
    obj
}

#[test]
fn pod_defaults_match_upstream() {
    let pod = defaulted(
        "",
        "Pod",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "containers": [{
                    "name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}},
                    "livenessProbe": {"httpGet": {"port": 80}},
                    "readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 5},
                    "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}}
                }],
                "initContainers": [{"name": "init", "image": "busybox"}],
                "volumes": [
                    {"name": "scratch"},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "host", "hostPath": {"path": "/data"}},
                    {"name": "cache", "emptyDir": {"sizeLimit": "1024Mi"}}
                ]
            }
        }),
    );
    assert!(pod.pointer("/metadata/creationTimestamp").is_none(), "null creationTimestamp is dropped");
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["enableServiceLinks"], true);

    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["resources"],
        json!({"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}})
    );
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
               "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
    assert_eq!(c["lifecycle"]["preStop"]["httpGet"], json!({"port": 80, "path": "/quit", "scheme": "HTTP"}));

    let init = &spec["initContainers"][0];
    assert_eq!(init["imagePullPolicy"], "Always");
    assert_eq!(init["resources"], json!({}));

    let volumes = &spec["volumes"];
    assert_eq!(volumes[0], json!({"name": "scratch", "emptyDir": {}}));
    assert_eq!(volumes[1]["configMap"]["defaultMode"], 420);
    assert_eq!(volumes[2]["secret"]["defaultMode"], 256);
    assert_eq!(volumes[3]["downwardAPI"]["defaultMode"], 420);
    assert_eq!(volumes[3]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(volumes[4]["projected"]["defaultMode"], 420);
    assert_eq!(volumes[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3600);
    assert_eq!(volumes[5]["hostPath"]["type"], "");
    assert_eq!(volumes[6]["emptyDir"]["sizeLimit"], "1Gi");
}

#[test]
fn pod_host_network_ports_and_given_values_are_kept() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"metadata": {"name": "p"}, "spec": {
            "hostNetwork": true, "restartPolicy": "Never", "dnsPolicy": "ClusterFirstWithHostNet",
            "enableServiceLinks": false, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "app", "imagePullPolicy": "Never", "ports": [{"containerPort": 8080, "protocol": "UDP"}]}]
        }}),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["terminationGracePeriodSeconds"], 0);
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(spec["containers"][0]["ports"][0], json!({"containerPort": 8080, "protocol": "UDP", "hostPort": 8080}));
}

#[test]
fn image_pull_policy_follows_the_tag() {
    assert_eq!(image_tag("nginx").as_deref(), Some("latest"));
    assert_eq!(image_tag("nginx:latest").as_deref(), Some("latest"));
    assert_eq!(image_tag("nginx:1.27").as_deref(), Some("1.27"));
    assert_eq!(image_tag("localhost:5000/team/app").as_deref(), Some("latest"));
    assert_eq!(image_tag("registry.example.com:5000/app:v2").as_deref(), Some("v2"));
    let digest = format!("nginx@sha256:{}", "a".repeat(64));
    assert_eq!(image_tag(&digest).as_deref(), Some(""));
    assert_eq!(image_tag("Nginx"), None);
    assert_eq!(image_tag(""), None);
}

#[test]
fn pod_create_sets_pending_status_and_qos() {
    let best_effort =
        created("", "Pod", json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
    assert_eq!(best_effort["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
    let guaranteed = created(
        "",
        "Pod",
        json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}),
    );
    assert_eq!(guaranteed["status"]["qosClass"], "Guaranteed");
    let burstable = created(
        "",
        "Pod",
        json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}]}}),
    );
    assert_eq!(burstable["status"]["qosClass"], "Burstable");
}

#[test]
fn deployment_defaults() {
    let d = defaulted(
        "apps",
        "Deployment",
        json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
    );
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["template"]["metadata"], json!({"labels": {"app": "web"}}));
    let tpl = &spec["template"]["spec"];
    assert_eq!(tpl["restartPolicy"], "Always");
    assert_eq!(tpl["containers"][0]["imagePullPolicy"], "Always");
    assert!(tpl.get("enableServiceLinks").is_none(), "Pod-only defaults stay out of templates");

    let recreate = defaulted(
        "apps",
        "Deployment",
        json!({"metadata": {"name": "w"}, "spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "template": {"spec": {"containers": []}}}}),
    );
    assert_eq!(recreate["spec"]["replicas"], 0);
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));

    let nulls = defaulted("apps", "Deployment", json!({"metadata": {"name": "w"}, "spec": {"replicas": null}}));
    assert_eq!(nulls["spec"]["replicas"], 1);
}

#[test]
fn replicaset_statefulset_daemonset_defaults() {
    let rs = defaulted(
        "apps",
        "ReplicaSet",
        json!({"metadata": {"name": "r"}, "spec": {"template": {"spec": {"containers": []}}}}),
    );
    assert_eq!(rs["spec"]["replicas"], 1);

    let sts = defaulted(
        "apps",
        "StatefulSet",
        json!({"metadata": {"name": "db"}, "spec": {
            "serviceName": "db", "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1024Mi"}}}}]}}),
    );
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(spec["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["persistentVolumeClaimRetentionPolicy"], json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(claim["status"], json!({"phase": "Pending"}));

    let on_delete = defaulted(
        "apps",
        "StatefulSet",
        json!({"metadata": {"name": "x"}, "spec": {"updateStrategy": {"type": "OnDelete"}}}),
    );
    assert_eq!(on_delete["spec"]["updateStrategy"], json!({"type": "OnDelete"}));

    let ds = defaulted(
        "apps",
        "DaemonSet",
        json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": []}}}}),
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
}

#[test]
fn job_and_cronjob_defaults() {
    let job = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"name": "pi"}, "spec": {"template": {"metadata": {"labels": {"app": "pi"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34"}]}}}}),
    );
    let spec = &job["spec"];
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert!(spec.get("manualSelector").is_none());
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(job["metadata"]["labels"], json!({"app": "pi"}));

    let parallel = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"name": "p"}, "spec": {"parallelism": 3, "backoffLimitPerIndex": 1,
        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
    );
    assert!(parallel["spec"].get("completions").is_none());
    assert_eq!(parallel["spec"]["backoffLimit"], 2147483647);
    assert_eq!(parallel["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(parallel["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"], "True");

    let mut created_job = job.clone();
    created_job["metadata"]["uid"] = json!("1234");
    prepare_for_create(&GroupVersionKind::new("batch", "v1", "Job"), &mut created_job);
    assert_eq!(created_job["spec"]["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}}));
    assert_eq!(
        created_job["spec"]["template"]["metadata"]["labels"],
        json!({"app": "pi", "job-name": "pi", "batch.kubernetes.io/job-name": "pi",
               "controller-uid": "1234", "batch.kubernetes.io/controller-uid": "1234"})
    );

    let cj = defaulted(
        "batch",
        "CronJob",
        json!({"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
    );
    let spec = &cj["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none(), "Job defaults are not applied to templates");
    assert_eq!(spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
}

#[test]
fn service_defaults() {
    let svc = defaulted(
        "",
        "Service",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "TCP"}, {"port": 53, "targetPort": 0, "protocol": "UDP"}]}}),
    );
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
    assert_eq!(spec["ports"][1]["targetPort"], "https");
    assert_eq!(spec["ports"][2]["targetPort"], 53);
    assert!(spec.get("externalTrafficPolicy").is_none());
    assert!(spec.get("ipFamilyPolicy").is_none(), "no IP families before a cluster IP is allocated");
    assert!(spec.get("ipFamilies").is_none());

    let allocated = defaulted(
        "",
        "Service",
        json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}}),
    );
    assert_eq!(allocated["spec"]["clusterIPs"], json!(["10.43.0.10"]));
    assert_eq!(allocated["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(allocated["spec"]["ipFamilies"], json!(["IPv4"]));

    let headless = defaulted("", "Service", json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}));
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");

    let lb = defaulted(
        "",
        "Service",
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.9"}, {"hostname": "x"}]}}}),
    );
    let spec = &lb["spec"];
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    assert_eq!(spec["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    assert_eq!(lb["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    assert!(lb["status"]["loadBalancer"]["ingress"][1].get("ipMode").is_none());

    let external = defaulted(
        "",
        "Service",
        json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    assert!(external["spec"].get("internalTrafficPolicy").is_none());
    assert_eq!(
        created("", "Service", json!({"metadata": {"name": "s"}, "spec": {}}))["status"],
        json!({"loadBalancer": {}})
    );
}

#[test]
fn core_object_defaults() {
    let ns = created("", "Namespace", json!({"metadata": {"name": "demo"}}));
    assert_eq!(ns["metadata"]["labels"], json!({"kubernetes.io/metadata.name": "demo"}));
    assert_eq!(ns["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(ns["status"], json!({"phase": "Active"}));
    // On update the finalizer is not brought back once the namespace controller removed it.
    let updated = defaulted(
        "",
        "Namespace",
        json!({"metadata": {"name": "demo"}, "spec": {}, "status": {"phase": "Terminating"}}),
    );
    assert_eq!(updated["spec"], json!({}));
    assert_eq!(updated["status"]["phase"], "Terminating");

    assert_eq!(defaulted("", "Secret", json!({"metadata": {"name": "s"}}))["type"], "Opaque");
    assert_eq!(
        defaulted("", "Secret", json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"}))["type"],
        "kubernetes.io/tls"
    );

    let pvc = defaulted(
        "",
        "PersistentVolumeClaim",
        json!({"metadata": {"name": "d"}, "spec": {"resources": {"requests": {"storage": "1000M"}}}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1G");
    assert_eq!(pvc["status"]["phase"], "Pending");

    let pv = defaulted(
        "",
        "PersistentVolume",
        json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "5Gi"}, "hostPath": {"path": "/d"}}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["hostPath"]["type"], "");
    assert_eq!(pv["status"]["phase"], "Pending");

    let ep = defaulted("", "Endpoints", json!({"metadata": {"name": "e"}, "subsets": [{"ports": [{"port": 80}]}]}));
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

    let node = defaulted(
        "",
        "Node",
        json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": 2, "memory": "24Gi", "pods": "110"}}}),
    );
    assert_eq!(node["status"]["capacity"]["cpu"], "2");
    assert_eq!(node["status"]["allocatable"], json!({"cpu": "2", "memory": "24Gi", "pods": "110"}));

    let lr = defaulted(
        "",
        "LimitRange",
        json!({"metadata": {"name": "l"}, "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}}),
    );
    assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
    assert_eq!(lr["spec"]["limits"][0]["defaultRequest"], json!({"cpu": "2", "memory": "64Mi"}));

    let quota = defaulted(
        "",
        "ResourceQuota",
        json!({"metadata": {"name": "q"}, "spec": {"hard": {"cpu": "1000m", "pods": 10}}}),
    );
    assert_eq!(quota["spec"]["hard"], json!({"cpu": "1", "pods": "10"}));
}

#[test]
fn networking_rbac_discovery_and_crd_defaults() {
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"metadata": {"name": "n"}, "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}], "egress": [{}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"metadata": {"name": "n"}, "spec": {"podSelector": {}}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));

    let class = defaulted(
        "networking.k8s.io",
        "IngressClass",
        json!({"metadata": {"name": "c"}, "spec": {"controller": "x/y", "parameters": {"kind": "K", "name": "n"}}}),
    );
    assert_eq!(class["spec"]["parameters"]["scope"], "Cluster");

    let slice = defaulted(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": {"name": "s"}, "addressType": "IPv4", "ports": [{"port": 80}]}),
    );
    assert_eq!(slice["ports"][0], json!({"port": 80, "name": "", "protocol": "TCP"}));

    let rb = defaulted(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        json!({"metadata": {"name": "r"}, "roleRef": {"kind": "Role", "name": "x"},
               "subjects": [{"kind": "User", "name": "a"}, {"kind": "ServiceAccount", "name": "b", "namespace": "c"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][1]["apiGroup"], "");

    let crd = defaulted(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": null}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "default": null}}}]}}),
    );
    assert_eq!(crd["spec"]["names"]["singular"], "widget");
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
    assert!(crd["metadata"].get("creationTimestamp").is_none());
    assert!(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["default"].is_null(), "schema JSON is left alone");
}

#[test]
fn custom_resources_are_untouched() {
    let obj = json!({"metadata": {"name": "w"}, "spec": {"x": null}});
    assert_eq!(defaulted("example.com", "Widget", obj.clone()), obj);
}

#[test]
fn defaulting_is_idempotent() {
    let gvk = GroupVersionKind::new("apps", "v1", "Deployment");
    let mut once = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "b", "resources": {"requests": {"cpu": 0.25}}}]}}}});
    apply(&gvk, &mut once);
    let mut twice = once.clone();
    apply(&gvk, &mut twice);
    assert_eq!(once, twice);
    assert_eq!(once["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], "250m");
}

#[test]
fn secret_string_data_is_merged_into_data() {
    let secret = defaulted(
        "",
        "Secret",
        json!({"metadata": {"name": "s"}, "data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "b": "hello"}}),
    );
    assert_eq!(secret["data"], json!({"a": "bmV3", "keep": "eA==", "b": "aGVsbG8="}));
    assert!(secret.get("stringData").is_none());
    assert_eq!(secret["type"], "Opaque");
}

#[test]
fn updates_keep_server_owned_values() {
    let ns_gvk = GroupVersionKind::new("", "v1", "Namespace");
    let stored = created("", "Namespace", json!({"metadata": {"name": "demo"}}));
    let mut replaced = json!({"metadata": {"name": "demo", "labels": {"team": "a"}}});
    prepare_for_update(&ns_gvk, &mut replaced, &stored);
    apply(&ns_gvk, &mut replaced);
    assert_eq!(replaced["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(replaced["status"], json!({"phase": "Active"}));

    let svc_gvk = GroupVersionKind::new("", "v1", "Service");
    let stored = defaulted(
        "",
        "Service",
        json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.7", "ports": [{"port": 80, "nodePort": 30080}]}}),
    );
    let mut replaced =
        json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
    prepare_for_update(&svc_gvk, &mut replaced, &stored);
    apply(&svc_gvk, &mut replaced);
    assert_eq!(replaced["spec"]["clusterIP"], "10.43.0.7");
    assert_eq!(replaced["spec"]["clusterIPs"], json!(["10.43.0.7"]));
    assert_eq!(replaced["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(replaced["spec"]["ports"][0]["nodePort"], 30080);
    assert!(replaced["spec"]["ports"][1].get("nodePort").is_none());
}
