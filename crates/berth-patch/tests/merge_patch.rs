//! RFC 7386 JSON merge patch, including every example of the RFC's appendix A.

use berth_patch::merge_patch;
use serde_json::json;

#[test]
fn rfc7386_appendix_a_examples() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
        (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
        (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
        (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
    ];
    for (original, patch, expected) in cases {
        assert_eq!(merge_patch(&original, &patch), expected, "{original} + {patch}");
    }
}

#[test]
fn scale_and_label_patches_from_kubectl() {
    let deployment = json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}
    });
    let scaled = merge_patch(&deployment, &json!({"spec": {"replicas": 3}}));
    assert_eq!(scaled["spec"]["replicas"], 3);
    assert_eq!(scaled["spec"]["template"], deployment["spec"]["template"]);

    let labelled = merge_patch(&scaled, &json!({"metadata": {"labels": {"tier": "front", "app": null}}}));
    assert_eq!(labelled["metadata"], json!({"name": "web", "labels": {"tier": "front"}}));

    // Lists are replaced whole: there is no merge key in a merge patch.
    let replaced = merge_patch(&deployment, &json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}));
    assert_eq!(replaced["spec"]["template"]["spec"]["containers"], json!([{"name": "c"}]));
}

#[test]
fn key_order_of_the_original_is_kept() {
    let original = json!({"a": 1, "b": 2, "c": 3});
    let patched = merge_patch(&original, &json!({"b": 20, "d": 4}));
    assert_eq!(patched.to_string(), r#"{"a":1,"b":20,"c":3,"d":4}"#);
}
