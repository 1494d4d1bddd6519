use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-10T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn gvk(group: &str, kind: &str) -> GroupVersionKind {
    GroupVersionKind::new(group, "v1", kind)
}

fn row(group: &str, kind: &str, obj: Value) -> Vec<Value> {
    let g = gvk(group, kind);
    let cells = cells(&g, &obj, now());
    assert_eq!(cells.len(), columns(&g).len(), "cells and columns of {kind} differ in length");
    cells
}

fn names(group: &str, kind: &str, priority: u8) -> Vec<&'static str> {
    columns(&gvk(group, kind)).into_iter().filter(|c| c.priority == priority).map(|c| c.name).collect()
}

#[test]
fn human_duration_matches_upstream() {
    for (secs, want) in [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 5, "3h5m"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 3600 * 4, "3d4h"),
        (100 * 86400, "100d"),
        (800 * 86400, "2y70d"),
        (365 * 9 * 86400, "9y"),
    ] {
        assert_eq!(human_duration(secs), want, "{secs}s");
    }
    assert_eq!(age(None, now()), "<unknown>");
    assert_eq!(age(Some("2025-01-10T11:55:00Z"), now()), "5m");
}

#[test]
fn pod_columns_and_running_row() {
    assert_eq!(names("", "Pod", 0), ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(names("", "Pod", 1), ["IP", "Node", "Nominated Node", "Readiness Gates"]);
    let pod = json!({
        "metadata": {"name": "web-1", "creationTimestamp": "2025-01-10T10:00:00Z"},
        "spec": {"nodeName": "berth", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.42.0.7"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-01-10T11:57:00Z"}}}
            ]
        }
    });
    assert_eq!(
        row("", "Pod", pod),
        vec![
            json!("web-1"),
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("5 (3m ago)"),
            json!("120m"),
            json!("10.42.0.7"),
            json!("berth"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn pod_status_variants() {
    let status = |pod: Value| row("", "Pod", pod)[2].clone();
    let pending =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
    assert_eq!(status(pending), json!("Pending"));

    let init = json!({
        "metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"running": {}}}]}
    });
    assert_eq!(status(init), json!("Init:0/1"));

    let init_failed = json!({
        "metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"terminated": {"exitCode": 2}}}]}
    });
    assert_eq!(status(init_failed), json!("Init:ExitCode:2"));

    let init_backoff = json!({
        "metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    });
    assert_eq!(status(init_backoff), json!("Init:CrashLoopBackOff"));

    let oom = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
    });
    assert_eq!(status(oom), json!("OOMKilled"));

    let completed = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
    });
    assert_eq!(status(completed), json!("Completed"));

    let signal = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "signal": 9}}}]}
    });
    assert_eq!(status(signal), json!("Signal:9"));

    let terminating = json!({
        "metadata": {"name": "p", "deletionTimestamp": "2025-01-10T11:59:00Z"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": true, "state": {"running": {}}}]}
    });
    assert_eq!(status(terminating), json!("Terminating"));

    let gated = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
    });
    assert_eq!(status(gated), json!("SchedulingGated"));

    // A sidecar (restartable init container) counts toward Ready and total.
    let sidecar = json!({
        "metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "s", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
            "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
    });
    let r = row("", "Pod", sidecar);
    assert_eq!(r[1], json!("2/2"));
    assert_eq!(r[2], json!("Running"));
    assert_eq!(r[3], json!("1"));
}

#[test]
fn pod_readiness_gates() {
    let pod = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "x/ok"}, {"conditionType": "x/lb"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1",
            "conditions": [{"type": "x/ok", "status": "True"}, {"type": "x/lb", "status": "False"}]}
    });
    let r = row("", "Pod", pod);
    assert_eq!(r[5], json!("10.0.0.1"));
    assert_eq!(r[8], json!("1/2"));
}

#[test]
fn deployment_row() {
    assert_eq!(names("apps", "Deployment", 0), ["Name", "Ready", "Up-to-date", "Available", "Age"]);
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": "2025-01-09T12:00:00Z"},
        "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web", "tier": "fe"},
                         "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        row("apps", "Deployment", d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("24h"),
            json!("nginx,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,env in (dev,prod),tier=fe")
        ]
    );
}

#[test]
fn replicaset_statefulset_daemonset_rows() {
    let rs = json!({
        "metadata": {"name": "web-abc", "creationTimestamp": "2025-01-10T11:59:00Z"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1}
    });
    assert_eq!(
        row("apps", "ReplicaSet", rs),
        vec![json!("web-abc"), json!(2), json!(2), json!(1), json!("60s"), json!("c"), json!("i"), json!("app=web")]
    );
    let sts = json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}},
        "status": {"readyReplicas": 3}
    });
    assert_eq!(
        row("apps", "StatefulSet", sts),
        vec![json!("db"), json!("3/3"), json!("<unknown>"), json!("pg"), json!("postgres:16")]
    );
    let ds = json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "b"}]}}},
        "status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1}
    });
    let r = row("apps", "DaemonSet", ds);
    assert_eq!(r[1..7], [json!(1), json!(1), json!(1), json!(1), json!(1), json!("kubernetes.io/os=linux")]);
    assert_eq!(r[10], json!("app=agent"));
}

#[test]
fn job_rows() {
    assert_eq!(names("batch", "Job", 0), ["Name", "Status", "Completions", "Duration", "Age"]);
    let complete = json!({
        "metadata": {"name": "pi", "creationTimestamp": "2025-01-10T11:00:00Z"},
        "spec": {"completions": 3, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                 "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 3, "startTime": "2025-01-10T11:00:00Z", "completionTime": "2025-01-10T11:00:42Z",
                   "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}
    });
    assert_eq!(
        row("batch", "Job", complete),
        vec![
            json!("pi"),
            json!("Complete"),
            json!("3/3"),
            json!("42s"),
            json!("60m"),
            json!("pi"),
            json!("perl"),
            json!("batch.kubernetes.io/controller-uid=u")
        ]
    );
    let running = json!({
        "metadata": {"name": "w"},
        "spec": {"parallelism": 2, "template": {"spec": {"containers": []}}},
        "status": {"startTime": "2025-01-10T11:58:00Z"}
    });
    let r = row("batch", "Job", running);
    assert_eq!(r[1..4], [json!("Running"), json!("0/1 of 2"), json!("2m")]);
    let suspended = json!({"metadata": {"name": "s"}, "spec": {"completions": 1},
        "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    assert_eq!(row("batch", "Job", suspended)[1..4], [json!("Suspended"), json!("0/1"), json!("")]);
    let failed = json!({"metadata": {"name": "f"}, "spec": {},
        "status": {"conditions": [{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}});
    assert_eq!(row("batch", "Job", failed)[1], json!("Failed"));
}

#[test]
fn cronjob_row() {
    assert_eq!(
        names("batch", "CronJob", 0),
        ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"]
    );
    let cj = json!({
        "metadata": {"name": "hello", "creationTimestamp": "2025-01-10T11:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "suspend": false,
                 "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "h", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2025-01-10T11:55:00Z"}
    });
    assert_eq!(
        row("batch", "CronJob", cj),
        vec![
            json!("hello"),
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("5m"),
            json!("60m"),
            json!("h"),
            json!("busybox"),
            json!("<none>")
        ]
    );
}

#[test]
fn service_rows() {
    assert_eq!(names("", "Service", 0), ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]);
    let cluster_ip = json!({
        "metadata": {"name": "web"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                 "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}
    });
    let r = row("", "Service", cluster_ip);
    assert_eq!(r[1..5], [json!("ClusterIP"), json!("10.43.0.10"), json!("<none>"), json!("80/TCP,53/UDP")]);
    assert_eq!(r[6], json!("app=web"));
    let node_port = json!({
        "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "clusterIPs": ["10.43.0.11"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}
    });
    assert_eq!(row("", "Service", node_port)[4], json!("80:30080/TCP"));
    let lb_pending =
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.43.0.12"]}});
    let r = row("", "Service", lb_pending);
    assert_eq!(r[3], json!("<pending>"));
    assert_eq!(r[4], json!("<none>"));
    assert_eq!(r[6], json!("<none>"));
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.20"}, {"hostname": "lb.example.com"}]}}});
    let r = row("", "Service", lb);
    assert_eq!(r[2], json!("<none>"));
    assert_eq!(r[3], json!("192.168.1.20,lb.example.com"));
    let ext = json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    assert_eq!(row("", "Service", ext)[3], json!("db.example.com"));
}

#[test]
fn endpoints_and_slices() {
    let ep = json!({
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
                     "ports": [{"port": 8080}]}]
    });
    assert_eq!(row("", "Endpoints", ep)[1], json!("10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more..."));
    assert_eq!(row("", "Endpoints", json!({"metadata": {"name": "e"}}))[1], json!("<none>"));
    let slice = json!({
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]
    });
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", slice)[1..4],
        [json!("IPv4"), json!("8080"), json!("10.0.0.1,10.0.0.2")]
    );
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    assert_eq!(row("discovery.k8s.io", "EndpointSlice", empty)[2..4], [json!("<unset>"), json!("<unset>")]);
}

#[test]
fn config_secret_serviceaccount_namespace_rows() {
    let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(row("", "ConfigMap", cm)[1], json!(3));
    let secret =
        json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(row("", "Secret", secret)[1..3], [json!("kubernetes.io/tls"), json!(2)]);
    let sa = json!({"metadata": {"name": "default"}});
    assert_eq!(row("", "ServiceAccount", sa)[1], json!(0));
    let ns = json!({"metadata": {"name": "demo"}, "status": {"phase": "Active"}});
    assert_eq!(row("", "Namespace", ns)[1], json!("Active"));
}

#[test]
fn node_row() {
    let node = json!({
        "metadata": {"name": "berth", "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": ""}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}, {"type": "Hostname", "address": "berth"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-berth", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": ""}
        }
    });
    assert_eq!(
        row("", "Node", node)[1..],
        [
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,master"),
            json!("<unknown>"),
            json!("v1.32.0-berth"),
            json!("192.168.1.5"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("<unknown>")
        ]
    );
    let not_ready =
        json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(row("", "Node", not_ready)[1..3], [json!("NotReady"), json!("<none>")]);
}

#[test]
fn event_row() {
    assert_eq!(names("", "Event", 0), ["Last Seen", "Type", "Reason", "Object", "Message"]);
    let ev = json!({
        "metadata": {"name": "web-1.17f"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
        "reason": "Pulled", "type": "Normal", "message": " Container image already present \n",
        "source": {"component": "kubelet", "host": "berth"},
        "firstTimestamp": "2025-01-10T11:50:00Z", "lastTimestamp": "2025-01-10T11:59:00Z", "count": 4
    });
    assert_eq!(
        row("", "Event", ev),
        vec![
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web-1"),
            json!("spec.containers{web}"),
            json!("kubelet, berth"),
            json!("Container image already present"),
            json!("10m"),
            json!(4),
            json!("web-1.17f")
        ]
    );
    let new_style = json!({
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Deployment", "name": "web"},
        "eventTime": "2025-01-10T11:58:00.000000Z", "reportingComponent": "deployment-controller"
    });
    let r = row("", "Event", new_style);
    assert_eq!(r[0], json!("2m"));
    assert_eq!(r[5], json!("deployment-controller"));
    assert_eq!(r[8], json!(1));
}

#[test]
fn quota_pvc_pv_rows() {
    let quota = json!({
        "metadata": {"name": "q"},
        "status": {"hard": {"requests.cpu": "2", "limits.memory": "2048Mi", "pods": "10", "limits.cpu": "4000m"},
                   "used": {"requests.cpu": "500m", "limits.memory": "512Mi", "pods": "3"}}
    });
    assert_eq!(
        row("", "ResourceQuota", quota)[1..3],
        [json!("pods: 3/10, requests.cpu: 500m/2"), json!("limits.cpu: 0/4, limits.memory: 512Mi/2Gi")]
    );
    let pvc = json!({
        "metadata": {"name": "data"},
        "spec": {"volumeName": "pv-1", "storageClassName": "local", "volumeMode": "Filesystem",
                 "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "1024Mi"}, "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"]}
    });
    assert_eq!(
        row("", "PersistentVolumeClaim", pvc)[1..],
        [
            json!("Bound"),
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO,RWOP"),
            json!("local"),
            json!("<unset>"),
            json!("<unknown>"),
            json!("Filesystem")
        ]
    );
    let pending = json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
    assert_eq!(row("", "PersistentVolumeClaim", pending)[1..5], [json!("Pending"), json!(""), json!(""), json!("")]);
    let pv = json!({
        "metadata": {"name": "pv-1"},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local",
                 "claimRef": {"namespace": "default", "name": "data"}},
        "status": {"phase": "Bound"}
    });
    assert_eq!(
        row("", "PersistentVolume", pv)[1..9],
        [
            json!("5Gi"),
            json!("ROX,RWX"),
            json!("Retain"),
            json!("Bound"),
            json!("default/data"),
            json!("local"),
            json!("<unset>"),
            json!("")
        ]
    );
}

#[test]
fn networking_rows() {
    let ing = json!({
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "berth", "tls": [{"hosts": ["a.example.com"]}],
                 "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}]}}
    });
    assert_eq!(
        row("networking.k8s.io", "Ingress", ing)[1..5],
        [
            json!("berth"),
            json!("a.example.com,b.example.com,c.example.com + 2 more..."),
            json!("192.168.1.5"),
            json!("80, 443")
        ]
    );
    let bare = json!({"metadata": {"name": "b"}, "spec": {"defaultBackend": {}}});
    assert_eq!(row("networking.k8s.io", "Ingress", bare)[1..5], [json!("<none>"), json!("*"), json!(""), json!("80")]);
    let class = json!({"metadata": {"name": "berth"}, "spec": {"controller": "berth.dev/ingress",
        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
    assert_eq!(
        row("networking.k8s.io", "IngressClass", class)[1..3],
        [json!("berth.dev/ingress"), json!("IngressParameters.k8s.example.com/p")]
    );
    let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
    assert_eq!(row("networking.k8s.io", "NetworkPolicy", np)[1], json!("<none>"));
    let np = json!({"metadata": {"name": "db"}, "spec": {"podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}});
    assert_eq!(row("networking.k8s.io", "NetworkPolicy", np)[1], json!("role"));
}

#[test]
fn rbac_lease_revision_and_default_rows() {
    let rb = json!({
        "metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                     {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}, {"kind": "User", "name": "bob"}]
    });
    assert_eq!(
        row("rbac.authorization.k8s.io", "RoleBinding", rb)[1..],
        [json!("ClusterRole/view"), json!("<unknown>"), json!("alice, bob"), json!("devs"), json!("build/ci")]
    );
    let lease = json!({"metadata": {"name": "berth"}, "spec": {"holderIdentity": "berth-node"}});
    assert_eq!(row("coordination.k8s.io", "Lease", lease)[1], json!("berth-node"));
    let rev = json!({"metadata": {"name": "web-5d8", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true, "uid": "u"}]}, "revision": 2});
    assert_eq!(row("apps", "ControllerRevision", rev)[1..3], [json!("statefulset.apps/web"), json!(2)]);

    for (group, kind) in [
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("", "LimitRange"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ] {
        assert_eq!(names(group, kind, 0), ["Name", "Created At"]);
        assert_eq!(columns(&gvk(group, kind))[1].kind, "date");
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2025-01-02T03:04:05Z"}});
        assert_eq!(row(group, kind, obj), vec![json!("x"), json!("2025-01-02T03:04:05Z")]);
    }
}

#[test]
fn unknown_kinds_fall_back_to_name_and_age() {
    let g = GroupVersionKind::new("example.com", "v1", "Widget");
    assert_eq!(columns(&g).iter().map(|c| c.name).collect::<Vec<_>>(), ["Name", "Age"]);
    let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2025-01-10T11:00:00Z"}});
    assert_eq!(cells(&g, &obj, now()), vec![json!("w"), json!("60m")]);
}

#[test]
fn every_builtin_kind_has_consistent_rows() {
    let registry = crate::registry::Registry::with_builtins();
    for info in registry.iter() {
        let obj = json!({"metadata": {"name": "x"}});
        let cols = columns(&info.gvk);
        assert_eq!(cells(&info.gvk, &obj, now()).len(), cols.len(), "{}", info.gvk);
        assert!(cols.iter().any(|c| c.format == "name"), "{} has no name column", info.gvk);
    }
}
