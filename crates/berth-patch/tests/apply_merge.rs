//! Server-side apply's merge (no field ownership).
#![allow(clippy::unwrap_used)]

use berth_patch::{Error, apply_merge};
use serde_json::{Value, json};

fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "team": "a"}, "finalizers": ["x"]},
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "args": ["--old"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "terminationMessagePath": "/dev/termination-log"
                        },
                        {"name": "sidecar", "image": "sidecar:1"}
                    ],
                    "tolerations": [{"key": "a", "operator": "Exists"}]
                }
            }
        },
        "status": {"replicas": 3}
    })
}

#[test]
fn keyed_lists_merge_and_other_lists_are_replaced() {
    let applied = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "b"}, "finalizers": ["y"]},
        "spec": {"template": {"spec": {
            "containers": [
                {"name": "app", "image": "app:2", "args": ["--new"], "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]},
                {"name": "logger", "image": "logger:1"}
            ],
            "tolerations": [{"key": "b", "operator": "Exists"}]
        }}}
    });
    let merged = apply_merge("apps/v1", "Deployment", &live_deployment(), &applied).unwrap();

    assert_eq!(merged["metadata"]["labels"], json!({"app": "web", "team": "b"}));
    assert_eq!(merged["metadata"]["finalizers"], json!(["y"]), "set lists have no merge key here");
    assert_eq!(merged["spec"]["replicas"], 3);
    assert_eq!(merged["status"], json!({"replicas": 3}));
    assert_eq!(merged["spec"]["template"]["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
    assert_eq!(
        merged["spec"]["template"]["spec"]["containers"],
        json!([
            {
                "name": "app",
                "image": "app:2",
                "args": ["--new"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "terminationMessagePath": "/dev/termination-log"
            },
            {"name": "sidecar", "image": "sidecar:1"},
            {"name": "logger", "image": "logger:1"}
        ])
    );
}

#[test]
fn explicit_null_removes_and_nested_nulls_are_dropped() {
    let applied = json!({
        "metadata": {"labels": {"team": null}},
        "spec": {
            "replicas": null,
            "strategy": {"type": "Recreate", "rollingUpdate": null},
            "template": {"spec": {"containers": [{"name": "cache", "image": "redis", "command": null}]}}
        }
    });
    let merged = apply_merge("apps/v1", "Deployment", &live_deployment(), &applied).unwrap();
    assert_eq!(merged["metadata"]["labels"], json!({"app": "web"}));
    assert!(merged["spec"].get("replicas").is_none());
    assert_eq!(merged["spec"]["strategy"], json!({"type": "Recreate"}));
    let containers = merged["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 3);
    assert_eq!(containers[2], json!({"name": "cache", "image": "redis"}));
}

#[test]
fn creates_from_nothing() {
    let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": {"a": null}},
        "spec": {"ports": [{"port": 80, "name": null}]}});
    let merged = apply_merge("v1", "Service", &Value::Null, &applied).unwrap();
    assert_eq!(
        merged,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "annotations": {}}, "spec": {"ports": [{"port": 80}]}})
    );
}

#[test]
fn service_ports_are_matched_by_port() {
    let live = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}, {"port": 443}]}});
    let applied = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
    let merged = apply_merge("v1", "Service", &live, &applied).unwrap();
    assert_eq!(merged["spec"]["ports"], json!([{"port": 80, "targetPort": 9090, "nodePort": 30080}, {"port": 443}]));
}

#[test]
fn custom_resources_merge_maps_and_replace_lists() {
    let live = json!({"spec": {"items": [{"name": "a", "size": 1}, {"name": "b"}], "settings": {"x": 1}}});
    let applied = json!({"spec": {"items": [{"name": "a", "size": 2}], "settings": {"y": 2}}});
    let merged = apply_merge("example.com/v1", "Widget", &live, &applied).unwrap();
    assert_eq!(merged, json!({"spec": {"items": [{"name": "a", "size": 2}], "settings": {"x": 1, "y": 2}}}));
}

#[test]
fn no_directives_are_interpreted() {
    let live = json!({"data": {"a": "1"}});
    let applied = json!({"data": {"$patch": "replace", "b": "2"}});
    let merged = apply_merge("v1", "ConfigMap", &live, &applied).unwrap();
    assert_eq!(merged, json!({"data": {"a": "1", "$patch": "replace", "b": "2"}}));
}

#[test]
fn invalid_keyed_lists_are_rejected() {
    let cases = [
        (json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}), "has no \"name\""),
        (
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}}),
            "duplicate entries with name=\"a\"",
        ),
        (json!({"spec": {"template": {"spec": {"containers": ["app"]}}}}), "expected objects"),
        (json!([1]), "JSON object"),
    ];
    for (applied, fragment) in cases {
        match apply_merge("apps/v1", "Deployment", &live_deployment(), &applied) {
            Err(Error::Invalid(message)) => assert!(message.contains(fragment), "{message} lacks {fragment}"),
            Ok(value) => panic!("{applied} was accepted: {value}"),
        }
    }
    let not_an_object = apply_merge("v1", "ConfigMap", &json!("live"), &json!({}));
    assert!(matches!(not_an_object, Err(Error::Invalid(_))));
}
