//! Strategic merge patches against the built-in kinds, through the public API.
#![allow(clippy::unwrap_used)]

use berth_patch::{Error, strategic_merge, supports_strategic};
use serde_json::{Value, json};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"}
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx:1.25",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always"
                }
            }
        },
        "status": {"observedGeneration": 1}
    })
}

fn patch_deployment(patch: Value) -> Value {
    strategic_merge("apps/v1", "Deployment", &deployment(), &patch).unwrap()
}

#[test]
fn kubectl_apply_patch_from_the_wire_contract() {
    let last_applied = "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}\n";
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "$setElementOrder/ports": [{"containerPort": 8080}],
                "env": [{"$patch": "delete", "name": "B"}],
                "image": "nginx:1.26",
                "name": "nginx",
                "ports": [{"containerPort": 8080}, {"$patch": "delete", "containerPort": 80}]
            }]
        }}}
    });
    let patched = patch_deployment(patch);

    let mut expected = deployment();
    expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(last_applied);
    expected["spec"]["template"]["spec"]["containers"] = json!([{
        "name": "nginx",
        "image": "nginx:1.26",
        "env": [{"name": "A", "value": "1"}],
        "ports": [{"containerPort": 8080}],
        "imagePullPolicy": "IfNotPresent"
    }]);
    assert_eq!(patched, expected);
    // No directive reaches the stored object.
    assert!(!patched.to_string().contains('$'), "{patched}");
}

#[test]
fn set_element_order_reorders_containers_and_keeps_server_only_ones() {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "a"}, {"name": "sidecar", "image": "s"}, {"name": "b", "image": "b"}]}
    });
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "c"}]
    }});
    pod = strategic_merge("v1", "Pod", &pod, &patch).unwrap();
    let names: Vec<&str> =
        pod["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    // The server-only sidecar stood before b on the server, so it stays before b.
    assert_eq!(names, ["sidecar", "b", "a", "c"]);
}

#[test]
fn deployment_strategy_retain_keys_clears_rolling_update() {
    let patched = patch_deployment(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
    assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(patched["spec"]["replicas"], 2);
}

#[test]
fn pod_volume_source_switch_with_retain_keys() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "app", "image": "app"}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "config", "configMap": {"name": "cfg"}}]
        }
    });
    let patch = json!({"spec": {
        "$setElementOrder/volumes": [{"name": "data"}, {"name": "config"}],
        "volumes": [{"$retainKeys": ["hostPath", "name"], "name": "data", "hostPath": {"path": "/srv"}}]
    }});
    let patched = strategic_merge("v1", "Pod", &pod, &patch).unwrap();
    assert_eq!(
        patched["spec"]["volumes"],
        json!([{"name": "data", "hostPath": {"path": "/srv"}}, {"name": "config", "configMap": {"name": "cfg"}}])
    );
}

#[test]
fn rollout_restart_annotates_the_pod_template() {
    let patched = patch_deployment(json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
    }}}}}));
    assert_eq!(
        patched["spec"]["template"]["metadata"],
        json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}})
    );
    assert_eq!(patched["spec"]["template"]["spec"], deployment()["spec"]["template"]["spec"]);
}

#[test]
fn service_ports_merge_by_port() {
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}, {"port": 443, "targetPort": 8443}]}
    });
    let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}, {"port": 8125, "protocol": "UDP"}]}});
    let patched = strategic_merge("v1", "Service", &service, &patch).unwrap();
    assert_eq!(
        patched["spec"]["ports"],
        json!([
            {"port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"port": 443, "targetPort": 9443},
            {"port": 8125, "protocol": "UDP"}
        ])
    );
}

#[test]
fn finalizers_are_a_set() {
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "finalizers": ["a.example/one", "b.example/two"]},
        "data": {"k": "v"}
    });
    let added = strategic_merge(
        "v1",
        "ConfigMap",
        &config_map,
        &json!({"metadata": {"finalizers": ["b.example/two", "c.example/three"]}}),
    )
    .unwrap();
    assert_eq!(added["metadata"]["finalizers"], json!(["a.example/one", "b.example/two", "c.example/three"]));

    let removed = strategic_merge(
        "v1",
        "ConfigMap",
        &added,
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/one", "missing"]}}),
    )
    .unwrap();
    assert_eq!(removed["metadata"]["finalizers"], json!(["b.example/two", "c.example/three"]));

    // Deleting from a list the object does not have adds nothing.
    let untouched = strategic_merge(
        "v1",
        "Secret",
        &json!({"metadata": {"name": "s"}}),
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
    )
    .unwrap();
    assert_eq!(untouched, json!({"metadata": {"name": "s"}}));
}

#[test]
fn owner_references_merge_by_uid() {
    let replica_set = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "ownerReferences": [{"uid": "u1", "kind": "Deployment", "name": "web", "controller": true}]}
    });
    let patch = json!({"metadata": {"ownerReferences": [
        {"uid": "u1", "blockOwnerDeletion": true},
        {"uid": "u2", "kind": "Thing", "name": "t"}
    ]}});
    let patched = strategic_merge("apps/v1", "ReplicaSet", &replica_set, &patch).unwrap();
    assert_eq!(
        patched["metadata"]["ownerReferences"],
        json!([
            {"uid": "u1", "kind": "Deployment", "name": "web", "controller": true, "blockOwnerDeletion": true},
            {"uid": "u2", "kind": "Thing", "name": "t"}
        ])
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "status": {"conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "True"}
        ]}
    });
    let patch = json!({"status": {"conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
    let patched = strategic_merge("apps/v1", "Deployment", &live, &patch).unwrap();
    assert_eq!(
        patched["status"]["conditions"],
        json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True"}
        ])
    );
}

#[test]
fn lists_without_strategy_are_replaced() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "app", "image": "app", "args": ["--a", "--b"]}],
            "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}]
        }
    });
    let patch = json!({"spec": {
        "tolerations": [{"key": "k3", "operator": "Exists"}],
        "containers": [{"name": "app", "args": ["--c"]}]
    }});
    let patched = strategic_merge("v1", "Pod", &pod, &patch).unwrap();
    assert_eq!(patched["spec"]["tolerations"], json!([{"key": "k3", "operator": "Exists"}]));
    assert_eq!(patched["spec"]["containers"], json!([{"name": "app", "image": "app", "args": ["--c"]}]));
}

#[test]
fn cron_job_template_containers_merge_by_name() {
    let cron_job = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure",
            "containers": [{"name": "job", "image": "busybox", "env": [{"name": "X", "value": "1"}]}]
        }}}}}
    });
    let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "job", "env": [{"name": "Y", "value": "2"}]}]
    }}}}}});
    let patched = strategic_merge("batch/v1", "CronJob", &cron_job, &patch).unwrap();
    assert_eq!(
        patched["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "job", "image": "busybox", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}])
    );
}

/// A new element without `$setElementOrder` lands ahead of the server's elements, as upstream.
#[test]
fn stateful_set_and_job_templates_merge_containers() {
    for (api_version, kind) in [("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"), ("batch/v1", "Job")] {
        let object = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}});
        let patched = strategic_merge(api_version, kind, &object, &patch).unwrap();
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "2"}, {"name": "a", "image": "1"}]),
            "{kind}"
        );
    }
}

#[test]
fn config_map_data_is_a_plain_map() {
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}});
    let patch = json!({"metadata": {"labels": {"b": "2", "a": null}}, "data": {"y": null, "z": "3"}});
    let patched = strategic_merge("v1", "ConfigMap", &config_map, &patch).unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({"b": "2"}));
    assert_eq!(patched["data"], json!({"x": "1", "z": "3"}));
}

#[test]
fn node_addresses_and_pod_cidrs() {
    let node = json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
        "spec": {"podCIDRs": ["10.0.0.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.1.1"}, {"type": "Hostname", "address": "n"}]}
    });
    let patch = json!({
        "spec": {"podCIDRs": ["fd00::/64"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.1.2"}]}
    });
    let patched = strategic_merge("v1", "Node", &node, &patch).unwrap();
    // Without $setElementOrder, upstream puts values the server lacks ahead of the server's own.
    assert_eq!(patched["spec"]["podCIDRs"], json!(["fd00::/64", "10.0.0.0/24"]));
    assert_eq!(
        patched["status"]["addresses"],
        json!([{"type": "InternalIP", "address": "10.1.1.2"}, {"type": "Hostname", "address": "n"}])
    );
}

#[test]
fn unknown_kinds_are_patched_without_schema() {
    let widget = json!({"spec": {"items": [{"name": "a", "size": 1}], "nested": {"x": 1}}});
    let patch = json!({"spec": {"items": [{"name": "a", "size": 2}], "nested": {"y": 2}}});
    let patched = strategic_merge("example.com/v1", "Widget", &widget, &patch).unwrap();
    assert_eq!(patched, json!({"spec": {"items": [{"name": "a", "size": 2}], "nested": {"x": 1, "y": 2}}}));
}

#[test]
fn supports_exactly_the_built_in_table() {
    let supported = [
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "Endpoints"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("v1", "Namespace"),
        ("v1", "Node"),
        ("v1", "Event"),
        ("v1", "ResourceQuota"),
        ("v1", "LimitRange"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "PersistentVolume"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("networking.k8s.io/v1", "Ingress"),
        ("networking.k8s.io/v1", "IngressClass"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("coordination.k8s.io/v1", "Lease"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ];
    for (api_version, kind) in supported {
        assert!(supports_strategic(api_version, kind), "{api_version} {kind}");
    }
    for (api_version, kind) in
        [("example.com/v1", "Widget"), ("apps/v1", "Pod"), ("v1", "Deployment"), ("events.k8s.io/v1", "Event")]
    {
        assert!(!supports_strategic(api_version, kind), "{api_version} {kind}");
    }
}

#[test]
fn malformed_patches_are_invalid() {
    let cases = [
        (json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}), "merge key"),
        (
            json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "$patch": "frobnicate"}]}}}}),
            "$patch",
        ),
        (json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}), "$retainKeys"),
        (
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "nginx"}],
                "containers": [{"name": "nginx", "image": "x"}, {"name": "b", "image": "y"}]
            }}}}),
            "doesn't match",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ];
    for (patch, fragment) in cases {
        match strategic_merge("apps/v1", "Deployment", &deployment(), &patch) {
            Err(Error::Invalid(message)) => assert!(message.contains(fragment), "{message} lacks {fragment}"),
            Ok(value) => panic!("patch {patch} was accepted: {value}"),
        }
    }
}
