//! The application half of apimachinery's `strategicpatch` tests, restated against a test type
//! shaped like upstream's `MergeItem`. Each case applies a patch to an object and compares the
//! whole result, list order included.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::apply;
use crate::schema::{FieldDef, Strategy, TypeDef};

const fn field(name: &'static str, strategy: Strategy, retain_keys: bool, merge_key: Option<&'static str>) -> FieldDef {
    FieldDef { name, strategy, retain_keys, merge_key, ty: None }
}

const fn typed(
    name: &'static str,
    strategy: Strategy,
    retain_keys: bool,
    merge_key: Option<&'static str>,
    ty: &'static TypeDef,
) -> FieldDef {
    FieldDef { name, strategy, retain_keys, merge_key, ty: Some(ty) }
}

static ITEM: TypeDef = TypeDef {
    name: "Item",
    fields: &[
        typed("mergingList", Strategy::Merge, false, Some("name"), &ITEM),
        typed("nonMergingList", Strategy::Default, false, None, &ITEM),
        field("mergingIntList", Strategy::Merge, false, None),
        typed("mergeItemPtr", Strategy::Merge, false, Some("name"), &ITEM),
        field("replacingItem", Strategy::Replace, false, None),
        typed("retainKeysMap", Strategy::Default, true, None, &RETAIN_KEYS_ITEM),
        typed("retainKeysMergingList", Strategy::Merge, true, Some("name"), &ITEM),
    ],
};

static RETAIN_KEYS_ITEM: TypeDef = TypeDef {
    name: "RetainKeysItem",
    fields: &[
        field("mergingIntList", Strategy::Merge, false, None),
        typed("mergingList", Strategy::Merge, false, Some("name"), &ITEM),
    ],
};

struct Case {
    name: &'static str,
    original: Value,
    patch: Value,
    expected: Value,
}

fn case(name: &'static str, original: Value, patch: Value, expected: Value) -> Case {
    Case { name, original, patch, expected }
}

fn check(cases: Vec<Case>) {
    for case in cases {
        match apply(&case.original, &case.patch, Some(&ITEM)) {
            Ok(result) => assert_eq!(result, case.expected, "case {:?}", case.name),
            Err(error) => panic!("case {:?} failed: {error}", case.name),
        }
    }
}

fn check_error(name: &str, original: Value, patch: Value, fragment: &str) {
    match apply(&original, &patch, Some(&ITEM)) {
        Ok(result) => panic!("case {name:?}: expected an error containing {fragment:?}, got {result}"),
        Err(error) => assert!(error.to_string().contains(fragment), "case {name:?}: {error} lacks {fragment:?}"),
    }
}

#[test]
fn directives_and_scalar_union_from_custom_cases() {
    check(vec![
        case(
            "unique scalars when merging lists",
            json!({"mergingIntList": [1, 2]}),
            json!({"mergingIntList": [2, 3]}),
            json!({"mergingIntList": [1, 2, 3]}),
        ),
        case(
            "delete map from nested map",
            json!({"simpleMap": {"key1": 1, "key2": 1}}),
            json!({"simpleMap": {"$patch": "delete"}}),
            json!({"simpleMap": {}}),
        ),
        case(
            "delete all items from merging list",
            json!({"mergingList": [{"name": 1}, {"name": 2}]}),
            json!({"mergingList": [{"$patch": "replace"}]}),
            json!({"mergingList": []}),
        ),
        case(
            "merge empty merging lists",
            json!({"mergingList": []}),
            json!({"mergingList": []}),
            json!({"mergingList": []}),
        ),
        case("delete all keys from map", json!({"name": 1, "value": 1}), json!({"$patch": "replace"}), json!({})),
        case(
            "add key and delete all keys from map",
            json!({"name": 1, "value": 1}),
            json!({"other": "a", "$patch": "replace"}),
            json!({"other": "a"}),
        ),
        case(
            "delete all duplicate entries in a merging list",
            json!({"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}),
            json!({"mergingList": [{"name": 2, "value": "a"}]}),
        ),
        case(
            "replace a list of maps with $patch replace and new elements",
            json!({"mergingList": [{"name": 1, "value": "a"}, {"name": 2}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"$patch": "replace"}, {"name": 4}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 4}]}),
        ),
    ]);
}

#[test]
fn retain_keys_without_directive_behaves_like_merge() {
    check(vec![
        case(
            "retainKeys map can add a field when no retainKeys directive present",
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"value": "bar"}}),
            json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
        ),
        case(
            "retainKeys map can change a field when no retainKeys directive present",
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {"value": "b"}}),
            json!({"retainKeysMap": {"name": "foo", "value": "b"}}),
        ),
        case(
            "retainKeys map can delete a field when no retainKeys directive present",
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {"value": null}}),
            json!({"retainKeysMap": {"name": "foo"}}),
        ),
        case(
            "retainKeys map merge an empty map",
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {}}),
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
        ),
        case(
            "retainKeys list can add a field when no retainKeys directive present",
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}]}),
            json!({"retainKeysMergingList": [{"name": "foo", "value": "a"}]}),
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
        ),
        case(
            "retainKeys list can change a field when no retainKeys directive present",
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
            json!({"retainKeysMergingList": [{"name": "foo", "value": "b"}]}),
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "b"}]}),
        ),
        case(
            "retainKeys list can delete a field when no retainKeys directive present",
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
            json!({"retainKeysMergingList": [{"name": "foo", "value": null}]}),
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo"}]}),
        ),
    ]);
}

#[test]
fn patch_order_is_kept_without_set_element_order() {
    check(vec![
        case(
            "preserve the order from the patch in a merging list",
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "other": "x"}]}),
            json!({"mergingList": [
                {"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "value": "b", "other": "x"}
            ]}),
        ),
        case(
            "preserve the order from the patch in a merging list 2",
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"name": 2, "value": "b"}, {"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
        ),
        case(
            "preserve the order from the patch in a merging int list",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"mergingIntList": [3, 1, 2]}),
            json!({"mergingIntList": [3, 1, 2]}),
        ),
        case(
            "preserve the order from the patch in a merging int list 2",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"mergingIntList": [3, 1]}),
            json!({"mergingIntList": [2, 3, 1]}),
        ),
    ]);
}

#[test]
fn set_element_order_may_name_items_missing_from_the_list() {
    check(vec![
        case(
            "$setElementOrder contains item that is not present in the list to be merged",
            json!({"mergingList": [{"name": 1}, {"name": 3}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
            }),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        ),
        case(
            "$setElementOrder contains item that is not present in the int list to be merged",
            json!({"mergingIntList": [1, 3]}),
            json!({"$setElementOrder/mergingIntList": [3, 2, 1]}),
            json!({"mergingIntList": [3, 1]}),
        ),
    ]);
}

#[test]
fn set_element_order_must_agree_with_the_patch_list() {
    check_error(
        "should check if order in $setElementOrder and patch list match",
        json!({"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]}),
        json!({
            "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
            "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
        }),
        "doesn't match",
    );
    check_error(
        "int list order mismatch",
        json!({"mergingIntList": [1, 3, 2]}),
        json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
        "doesn't match",
    );
}

#[test]
fn delete_from_primitive_list() {
    check(vec![
        case(
            "$deleteFromPrimitiveList of nonexistent item in primitive list should not add the item to the list",
            json!({"mergingIntList": [1, 2]}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2]}),
        ),
        case(
            "$deleteFromPrimitiveList on empty primitive list should not add the item to the list",
            json!({"mergingIntList": null}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": null}),
        ),
        case(
            "$deleteFromPrimitiveList on nonexistent primitive list should not add the primitive list",
            json!({"foo": ["bar"]}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"foo": ["bar"]}),
        ),
        case(
            "$deleteFromPrimitiveList should delete item from a list with merge patch strategy",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [2]}),
            json!({"mergingIntList": [1, 3]}),
        ),
        case(
            "$deleteFromPrimitiveList should delete item from a list without merge patch strategy",
            json!({"nonMergingIntList": [1, 2, 3]}),
            json!({"$deleteFromPrimitiveList/nonMergingIntList": [2]}),
            json!({"nonMergingIntList": [1, 3]}),
        ),
        case(
            "delete items in lists of scalars",
            json!({"mergingIntList": [1, 2, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2, 4]}),
        ),
        case(
            "delete all duplicate items in lists of scalars",
            json!({"mergingIntList": [1, 2, 3, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2, 4]}),
        ),
        case(
            "add and delete items in lists of scalars",
            json!({"mergingIntList": [1, 2, 3]}),
            json!({
                "$setElementOrder/mergingIntList": [1, 2, 4],
                "$deleteFromPrimitiveList/mergingIntList": [3],
                "mergingIntList": [4]
            }),
            json!({"mergingIntList": [1, 2, 4]}),
        ),
    ]);
}

#[test]
fn maps_and_nulls_from_create_cases() {
    check(vec![
        case("nil original, two-way", json!({}), json!({"name": 1, "value": 1}), json!({"name": 1, "value": 1})),
        case(
            "nil original, three-way",
            json!({"name": 1, "other": "a"}),
            json!({"value": 1}),
            json!({"name": 1, "value": 1, "other": "a"}),
        ),
        case(
            "add field and delete field from map",
            json!({"name": 1, "other": "a"}),
            json!({"name": null, "value": 1}),
            json!({"value": 1, "other": "a"}),
        ),
        case(
            "delete field from nested map with conflict",
            json!({"simpleMap": {"key1": "a", "key2": 1, "other": "a"}}),
            json!({"simpleMap": {"key1": 1, "key2": null}}),
            json!({"simpleMap": {"key1": 1, "other": "a"}}),
        ),
        case(
            "delete all fields from map",
            json!({"name": 1, "value": 1, "other": "a"}),
            json!({"name": null, "value": null}),
            json!({"other": "a"}),
        ),
        case(
            "add field and delete all fields from map with conflict",
            json!({"name": 1, "value": 1, "other": "b"}),
            json!({"name": null, "value": null, "other": "a"}),
            json!({"other": "a"}),
        ),
        case(
            "replace list of scalars with conflict",
            json!({"nonMergingIntList": [1, 4]}),
            json!({"nonMergingIntList": [2, 3]}),
            json!({"nonMergingIntList": [2, 3]}),
        ),
        case(
            "delete all maps from merging list with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "other": "b"}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "$patch": "delete"}]}),
            json!({"mergingList": []}),
        ),
        case(
            "delete all maps from empty merging list",
            json!({"mergingList": []}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "$patch": "delete"}]}),
            json!({"mergingList": []}),
        ),
        case(
            "defined null values should propagate overwrite current fields",
            json!({"name": "a", "other": "a"}),
            json!({"name": 1, "value": 1, "other": null}),
            json!({"name": 1, "value": 1}),
        ),
        case(
            "defined null values should propagate removing original fields",
            json!({"name": "original-name", "value": "original-value", "other": "current-other"}),
            json!({"name": "modified-name", "value": null}),
            json!({"name": "modified-name", "other": "current-other"}),
        ),
        case(
            "retainKeys map with no change should not be present",
            json!({"name": "a", "other": "c", "retainKeysMap": {"name": "foo"}}),
            json!({"value": "b"}),
            json!({"name": "a", "value": "b", "other": "c", "retainKeysMap": {"name": "foo"}}),
        ),
        case(
            "replace RawExtension field and merge list",
            json!({
                "name": "my-object", "value": "some-value", "other": "current-other",
                "mergingList": [{"name": 1}, {"name": 3}],
                "replacingItem": {"Some": "Generic", "Yaml": "Inside", "The": "RawExtension", "Field": "Period"}
            }),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 2}],
                "replacingItem": {"Newly": "Modified", "Yaml": "Inside", "The": "RawExtension"}
            }),
            json!({
                "name": "my-object", "value": "some-value", "other": "current-other",
                "mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                "replacingItem": {"Newly": "Modified", "Yaml": "Inside", "The": "RawExtension"}
            }),
        ),
    ]);
}

#[test]
fn nulls_in_new_values_are_discarded() {
    check(vec![
        case(
            "no diff even if modified null",
            json!({"name": "foo"}),
            json!({"complex_nullable": {"key": null}}),
            json!({"name": "foo", "complex_nullable": {}}),
        ),
        case(
            "discard nulls in nested and adds not nulls",
            json!({}),
            json!({"complex_nullable": {"key": {"keynotnull": "value", "keynull": null}}}),
            json!({"complex_nullable": {"key": {"keynotnull": "value"}}}),
        ),
        case(
            "null values in original are preserved",
            json!({"complex": {"key": null}, "thing": null}),
            json!({"nested": {"value": 5}}),
            json!({"complex": {"key": null}, "nested": {"value": 5}, "thing": null}),
        ),
        case(
            "filter nulls from nested slices",
            json!({}),
            json!({"complex_nullable": [{"inner_one": {"key_one": "foo", "key_two": null}}]}),
            json!({"complex_nullable": [{"inner_one": {"key_one": "foo"}}]}),
        ),
        case(
            "not filter nulls from non-associative slice",
            json!({}),
            json!({"complex_nullable": ["key1", null, "key2"]}),
            json!({"complex_nullable": ["key1", null, "key2"]}),
        ),
        case(
            "removed only",
            json!({"name": "foo", "scalar": true, "complex": {"nested": true}, "array": [1, 2, 3]}),
            json!({"complex": null, "scalar": null}),
            json!({"array": [1, 2, 3], "name": "foo"}),
        ),
    ]);
}

#[test]
fn merging_lists_of_maps() {
    check(vec![
        case(
            "merge lists of maps",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]
            }),
            json!({"mergingList": [
                {"name": 4, "value": 4}, {"name": 1, "other": "a"},
                {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}
            ]}),
        ),
        case(
            "merge lists of maps with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 3, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 2, "value": 2}, {"name": 3, "value": 3}]
            }),
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}
            ]}),
        ),
        case(
            "add field to map in merging list with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 3, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": 1}, {"name": 2, "value": 2}]
            }),
            json!({"mergingList": [
                {"name": 1, "value": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 3, "value": 2, "other": "b"}
            ]}),
        ),
        case(
            "replace map field value in merging list with conflict",
            json!({"mergingList": [{"name": 1, "value": 3, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": "a"}]
            }),
            json!({"mergingList": [
                {"name": 1, "value": "a", "other": "a"}, {"name": 2, "value": 2, "other": "b"}
            ]}),
        ),
        case(
            "delete field from map in merging list with conflict",
            json!({"mergingList": [{"name": 1, "value": "a", "other": "a"}, {"name": 2, "value": 2}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": null}]
            }),
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}]}),
        ),
        case(
            "delete missing field from map in merging list with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": null}, {"name": 2, "value": 2}]
            }),
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        ),
        case(
            "replace non merging list nested in merging list with deletion conflict",
            json!({"mergingList": [
                {"name": 1, "other": "a", "nonMergingList": [{"name": 2, "value": 2}]}, {"name": 2, "other": "b"}
            ]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "nonMergingList": [{"name": 1, "value": 1}]}]
            }),
            json!({"mergingList": [
                {"name": 1, "other": "a", "nonMergingList": [{"name": 1, "value": 1}]}, {"name": 2, "other": "b"}
            ]}),
        ),
        case(
            "add field to map in merging list nested in merging list with value conflict",
            json!({"mergingList": [
                {"name": 1, "other": "a", "mergingList": [
                    {"name": 1, "value": "a", "other": "c"}, {"name": 2, "value": "b", "other": "d"}
                ]},
                {"name": 2, "other": "b"}
            ]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{
                    "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                    "name": 1,
                    "mergingList": [{"name": 1, "value": 1}, {"name": 2, "value": 2}]
                }]
            }),
            json!({"mergingList": [
                {"name": 1, "other": "a", "mergingList": [
                    {"name": 1, "value": 1, "other": "c"}, {"name": 2, "value": 2, "other": "d"}
                ]},
                {"name": 2, "other": "b"}
            ]}),
        ),
        case(
            "add field to map in merging list nested in merging list with deletion conflict, reordered",
            json!({"mergingList": [
                {"name": 1, "other": "a", "mergingList": [{"name": 2, "value": 2, "other": "d"}]},
                {"name": 2, "other": "b"}
            ]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{
                    "$setElementOrder/mergingList": [{"name": 2}, {"name": 1}],
                    "name": 1,
                    "mergingList": [{"name": 1, "value": 1}]
                }]
            }),
            json!({"mergingList": [
                {"name": 1, "other": "a", "mergingList": [
                    {"name": 2, "value": 2, "other": "d"}, {"name": 1, "value": 1}
                ]},
                {"name": 2, "other": "b"}
            ]}),
        ),
        case(
            "add map to merging list by pointer",
            json!({"mergeItemPtr": [{"name": 1, "other": "a"}, {"name": 3}]}),
            json!({"$setElementOrder/mergeItemPtr": [{"name": 1}, {"name": 2}], "mergeItemPtr": [{"name": 2}]}),
            json!({"mergeItemPtr": [{"name": 1, "other": "a"}, {"name": 2}, {"name": 3}]}),
        ),
        case(
            "add map to merging list by pointer with conflict",
            json!({"mergeItemPtr": [{"name": 3}]}),
            json!({
                "$setElementOrder/mergeItemPtr": [{"name": 1}, {"name": 2}],
                "mergeItemPtr": [{"name": 1}, {"name": 2}]
            }),
            json!({"mergeItemPtr": [{"name": 1}, {"name": 2}, {"name": 3}]}),
        ),
        case(
            "delete and reorder in one list, reorder in another",
            json!({
                "mergingList": [{"name": "a", "value": "a"}, {"name": "b", "value": "b"}],
                "mergeItemPtr": [{"name": "c", "value": "c"}, {"name": "d", "value": "d"}]
            }),
            json!({
                "$setElementOrder/mergingList": [{"name": "b"}],
                "$setElementOrder/mergeItemPtr": [{"name": "d"}, {"name": "c"}],
                "mergingList": [{"$patch": "delete", "name": "a"}]
            }),
            json!({
                "mergingList": [{"name": "b", "value": "b"}],
                "mergeItemPtr": [{"name": "d", "value": "d"}, {"name": "c", "value": "c"}]
            }),
        ),
    ]);
}

#[test]
fn deleting_maps_keeps_server_only_items_in_place() {
    check(vec![
        case(
            "delete map from merging list",
            json!({"mergingList": [{"name": 1}, {"name": 2, "other": "b"}]}),
            json!({"$setElementOrder/mergingList": [{"name": 2}], "mergingList": [{"name": 1, "$patch": "delete"}]}),
            json!({"mergingList": [{"name": 2, "other": "b"}]}),
        ),
        case(
            "delete missing map from merging list with conflict",
            json!({"mergingList": [{"name": 3, "other": "a"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}],
                "mergingList": [{"name": 2}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 2}, {"name": 3, "other": "a"}]}),
        ),
        case(
            "add map and delete map from merging list",
            json!({"mergingList": [{"name": 1}, {"name": 2, "other": "b"}, {"name": 4, "other": "c"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 2, "other": "b"}, {"name": 4, "other": "c"}, {"name": 3}]}),
        ),
        case(
            "add map and delete map from merging list with conflict",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "other": "c"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                "mergingList": [{"name": 2}, {"name": 3}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 4, "other": "c"}, {"name": 2}, {"name": 3}]}),
        ),
    ]);
}

#[test]
fn set_element_order_for_lists_of_maps() {
    let current = || {
        json!({"mergingList": [
            {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}
        ]})
    };
    check(vec![
        case(
            "add an item in a list and preserve order",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 3}, {"name": 1}, {"name": 2}],
                "mergingList": [{"name": 3, "value": 3}]
            }),
            json!({"mergingList": [
                {"name": 3, "value": 3}, {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}
            ]}),
        ),
        case(
            "add multiple items in a list and preserve order",
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 4}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]
            }),
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 4, "value": 4},
                {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}
            ]}),
        ),
        case(
            "delete an item in a list and preserve order",
            current(),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 1}],
                "mergingList": [{"name": 3, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}]}),
        ),
        case(
            "change an item in a list and preserve order",
            current(),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}, {"name": 1}],
                "mergingList": [{"name": 3, "value": "x"}]
            }),
            json!({"mergingList": [
                {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": "x"}, {"name": 1, "other": "a"}
            ]}),
        ),
        case(
            "add and delete an item in a list and preserve order",
            current(),
            json!({
                "$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
                "mergingList": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}]
            }),
            json!({"mergingList": [
                {"name": 4, "value": 4}, {"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}
            ]}),
        ),
        case(
            "set elements order in a list with server-only items",
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 3, "value": 3}, {"name": 4, "value": 4},
                {"name": 2, "value": 2}, {"name": 9}
            ]}),
            json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}]}),
            json!({"mergingList": [
                {"name": 4, "value": 4}, {"name": 2, "value": 2}, {"name": 3, "value": 3},
                {"name": 1, "other": "a"}, {"name": 9}
            ]}),
        ),
        case(
            "set elements order in a list with server-only items 2",
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 9},
                {"name": 3, "value": 3}, {"name": 4, "value": 4}
            ]}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]}),
            json!({"mergingList": [
                {"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 9},
                {"name": 4, "value": 4}, {"name": 3, "value": 3}
            ]}),
        ),
        case(
            "set elements order in a list with server-only items 3",
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 7}, {"name": 9}, {"name": 8},
                {"name": 3, "value": 3}, {"name": 4, "value": 4}
            ]}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]}),
            json!({"mergingList": [
                {"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 7}, {"name": 9}, {"name": 8},
                {"name": 4, "value": 4}, {"name": 3, "value": 3}
            ]}),
        ),
        case(
            "behavior of set element order for a merging list with duplicate",
            json!({"mergingList": [
                {"name": 1}, {"name": 2, "value": "dup1"}, {"name": 3}, {"name": 2, "value": "dup2"}, {"name": 4}
            ]}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}, {"name": 2}]}),
            json!({"mergingList": [
                {"name": 2, "value": "dup1"}, {"name": 2, "value": "dup2"}, {"name": 1}, {"name": 4}, {"name": 3}
            ]}),
        ),
    ]);
}

#[test]
fn set_element_order_for_lists_of_primitives() {
    let ints = |values: Value| json!({"mergingIntList": values});
    check(vec![
        case(
            "merge lists of scalars",
            ints(json!([1, 2, 4])),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3]}),
            ints(json!([1, 2, 3, 4])),
        ),
        case(
            "add an item in a list of primitives and preserve order",
            ints(json!([1, 4, 2])),
            json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
            ints(json!([3, 1, 4, 2])),
        ),
        case(
            "delete an item in a list of primitives and preserve order",
            ints(json!([1, 2, 3])),
            json!({"$setElementOrder/mergingIntList": [2, 1], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            ints(json!([2, 1])),
        ),
        case(
            "add multiple items in a int list and preserve order",
            ints(json!([1, 2])),
            json!({"$setElementOrder/mergingIntList": [1, 4, 2, 3], "mergingIntList": [4, 3]}),
            ints(json!([1, 4, 2, 3])),
        ),
        case(
            "add and delete an item in a int list and preserve order",
            ints(json!([1, 2, 3])),
            json!({
                "$setElementOrder/mergingIntList": [4, 2, 1],
                "mergingIntList": [4],
                "$deleteFromPrimitiveList/mergingIntList": [3]
            }),
            ints(json!([4, 2, 1])),
        ),
        case(
            "set elements order in a int list with server-only items",
            ints(json!([1, 3, 4, 2, 9])),
            json!({"$setElementOrder/mergingIntList": [4, 2, 3, 1]}),
            ints(json!([4, 2, 3, 1, 9])),
        ),
        case(
            "set elements order in a int list with server-only items 2",
            ints(json!([1, 2, 9, 3, 4])),
            json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3]}),
            ints(json!([2, 1, 9, 4, 3])),
        ),
        case(
            "set elements order in a int list with server-only items 3",
            ints(json!([1, 2, 7, 9, 8, 3, 4])),
            json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3]}),
            ints(json!([2, 1, 7, 9, 8, 4, 3])),
        ),
        case(
            "behavior of set element order for a merging int list with duplicate",
            ints(json!([1, 2, 3, 2, 4])),
            json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3, 2]}),
            ints(json!([2, 2, 1, 4, 3])),
        ),
    ]);
}

#[test]
fn retain_keys_directive_on_maps() {
    let retained = |value: Value| json!({"retainKeysMap": value});
    check(vec![
        case(
            "retainKeys map should clear defaulted field",
            retained(json!({"value": "foo"})),
            retained(json!({"$retainKeys": ["other"], "other": "bar"})),
            retained(json!({"other": "bar"})),
        ),
        case(
            "retainKeys map should clear defaulted field with conflict (discriminated union)",
            retained(json!({"name": "type1", "value": "foo"})),
            retained(json!({"$retainKeys": ["name", "other"], "name": "type2", "other": "bar"})),
            retained(json!({"name": "type2", "other": "bar"})),
        ),
        case(
            "retainKeys map adds a field and clear a field",
            retained(json!({"name": "foo", "other": "a"})),
            retained(json!({"$retainKeys": ["name", "value"], "value": "bar"})),
            retained(json!({"name": "foo", "value": "bar"})),
        ),
        case(
            "retainKeys map deletes a field and clears a field",
            retained(json!({"name": "foo", "value": "bar", "other": "a"})),
            retained(json!({"$retainKeys": ["name"], "value": null})),
            retained(json!({"name": "foo"})),
        ),
        case(
            "retainKeys map clears a field",
            retained(json!({"name": "foo", "value": "bar", "other": "a"})),
            retained(json!({"$retainKeys": ["name", "value"]})),
            retained(json!({"name": "foo", "value": "bar"})),
        ),
        case(
            "retainKeys map adds a field in a nested map",
            retained(json!({"name": "foo", "value": "bar", "simpleMap": {"key1": "a", "key3": "c"}})),
            retained(json!({"$retainKeys": ["name", "simpleMap", "value"], "simpleMap": {"key2": "b"}})),
            retained(json!({"name": "foo", "value": "bar", "simpleMap": {"key1": "a", "key2": "b", "key3": "c"}})),
        ),
        case(
            "retainKeys map delete nested non-merging list with conflict",
            retained(json!({"name": "foo", "nonMergingList": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})),
            retained(json!({"$retainKeys": ["name", "value"], "value": "bar", "nonMergingList": null})),
            retained(json!({"name": "foo", "value": "bar"})),
        ),
        case(
            "retainKeys map nested merging int list with no change",
            retained(json!({"name": "foo", "mergingIntList": [1, 2, 3]})),
            retained(json!({
                "$retainKeys": ["mergingIntList", "name", "value"],
                "$setElementOrder/mergingIntList": [1, 2],
                "value": "bar"
            })),
            retained(json!({"name": "foo", "value": "bar", "mergingIntList": [1, 2, 3]})),
        ),
        case(
            "retainKeys map adds an item in nested merging int list",
            retained(json!({"name": "foo", "mergingIntList": [1, 2, 3]})),
            retained(json!({
                "$setElementOrder/mergingIntList": [1, 2, 4],
                "$retainKeys": ["mergingIntList", "name"],
                "mergingIntList": [4]
            })),
            retained(json!({"name": "foo", "mergingIntList": [1, 2, 4, 3]})),
        ),
        case(
            "retainKeys map adds an item and deletes an item in nested merging int list",
            retained(json!({"name": "foo", "mergingIntList": [1, 2, 3, 4]})),
            retained(json!({
                "$retainKeys": ["mergingIntList", "name"],
                "mergingIntList": [5],
                "$deleteFromPrimitiveList/mergingIntList": [2],
                "$setElementOrder/mergingIntList": [1, 3, 5]
            })),
            retained(json!({"name": "foo", "mergingIntList": [1, 3, 5, 4]})),
        ),
        case(
            "retainKeys map adds an item in nested merging list",
            retained(json!({"name": "foo", "mergingList": [{"name": "a"}, {"name": "b"}, {"name": "x"}]})),
            retained(json!({
                "$retainKeys": ["mergingList", "name"],
                "$setElementOrder/mergingList": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                "mergingList": [{"name": "c"}]
            })),
            retained(json!({"name": "foo", "mergingList": [
                {"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "x"}
            ]})),
        ),
        case(
            "retainKeys map deletes an item in nested merging list",
            retained(json!({"name": "foo", "mergingList": [{"name": "a"}, {"name": "b"}, {"name": "x"}]})),
            retained(json!({
                "$retainKeys": ["mergingList", "name"],
                "$setElementOrder/mergingList": [{"name": "a"}],
                "mergingList": [{"name": "b", "$patch": "delete"}]
            })),
            retained(json!({"name": "foo", "mergingList": [{"name": "a"}, {"name": "x"}]})),
        ),
    ]);
}

#[test]
fn retain_keys_directive_on_list_elements() {
    let list = |value: Value| json!({"retainKeysMergingList": value});
    let order = json!([{"name": "bar"}, {"name": "foo"}]);
    check(vec![
        case(
            "retainKeys list of maps clears a field",
            list(json!([{"name": "bar"}, {"name": "foo", "value": "a", "other": "x"}])),
            json!({
                "$setElementOrder/retainKeysMergingList": order,
                "retainKeysMergingList": [{"$retainKeys": ["name", "value"], "name": "foo"}]
            }),
            list(json!([{"name": "bar"}, {"name": "foo", "value": "a"}])),
        ),
        case(
            "retainKeys list of maps changes a field and clear a field with conflict",
            list(json!([{"name": "bar"}, {"name": "foo", "value": "modified", "other": "x"}])),
            json!({
                "$setElementOrder/retainKeysMergingList": order,
                "retainKeysMergingList": [{"$retainKeys": ["name", "value"], "name": "foo", "value": "new"}]
            }),
            list(json!([{"name": "bar"}, {"name": "foo", "value": "new"}])),
        ),
        case(
            "retainKeys list of maps adds a field and clear a field",
            list(json!([{"name": "bar"}, {"name": "foo", "other": "x"}])),
            json!({
                "$setElementOrder/retainKeysMergingList": order,
                "retainKeysMergingList": [{"$retainKeys": ["name", "value"], "name": "foo", "value": "a"}]
            }),
            list(json!([{"name": "bar"}, {"name": "foo", "value": "a"}])),
        ),
        case(
            "retainKeys list of maps deletes a field and clear a field",
            list(json!([{"name": "bar"}, {"name": "foo", "value": "a", "other": "x"}])),
            json!({
                "$setElementOrder/retainKeysMergingList": order,
                "retainKeysMergingList": [{"$retainKeys": ["name"], "name": "foo", "value": null}]
            }),
            list(json!([{"name": "bar"}, {"name": "foo"}])),
        ),
    ]);
}

#[test]
fn new_values_are_stored_without_directives() {
    check(vec![
        case(
            "directives inside a value added wholesale",
            json!({}),
            json!({
                "mergingList": [{"name": 1, "$setElementOrder/mergingList": [{"name": 2}]}, {"name": 2, "$patch": "delete"}],
                "simpleMap": {"$patch": "replace", "a": "b"},
                "gone": {"$patch": "delete"}
            }),
            json!({"mergingList": [{"name": 1}], "simpleMap": {"a": "b"}}),
        ),
        case(
            "a new list is put in $setElementOrder order",
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"other": {
                "$setElementOrder/list": [2, 1],
                "list": [2, 1]
            }}}),
            json!({"retainKeysMap": {"name": "foo", "other": {"list": [2, 1]}}}),
        ),
        case(
            "a value whose type changes is replaced",
            json!({"mergingList": [{"name": 1}, {"name": 1}]}),
            json!({"mergingList": {}}),
            json!({"mergingList": {}}),
        ),
        case(
            "an explicit merge directive on a map is a plain merge",
            json!({"simpleMap": {"a": 1}}),
            json!({"simpleMap": {"$patch": "merge", "b": 2}}),
            json!({"simpleMap": {"a": 1, "b": 2}}),
        ),
        case(
            "replace strategy replaces the whole value",
            json!({"replacingItem": {"a": 1, "b": 2}}),
            json!({"replacingItem": {"b": 3}}),
            json!({"replacingItem": {"b": 3}}),
        ),
    ]);
}

#[test]
fn malformed_patches_are_rejected() {
    check_error(
        "missing merge key should error out",
        json!({"mergingList": [{"name": 1, "value": "a"}]}),
        json!({"mergingList": [{"value": "b"}]}),
        "does not contain declared merge key",
    );
    check_error(
        "delete directive without merge key",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": [{"$patch": "delete"}]}),
        "does not contain declared merge key",
    );
    check_error("unknown map directive", json!({}), json!({"simpleMap": {"$patch": "remove"}}), "unknown patch type");
    check_error(
        "unknown list element directive",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": [{"name": 1, "$patch": "drop"}]}),
        "unknown patch type",
    );
    check_error(
        "merge directive in a list",
        json!({"mergingList": [{"name": 1}]}),
        json!({"mergingList": [{"$patch": "merge"}]}),
        "merging lists cannot yet be specified",
    );
    check_error(
        "retainKeys not a list",
        json!({"retainKeysMap": {"name": "a"}}),
        json!({"retainKeysMap": {"$retainKeys": "name"}}),
        "invalid patch format of $retainKeys",
    );
    check_error(
        "retainKeys missing a patched field",
        json!({"retainKeysMap": {"name": "a"}}),
        json!({"retainKeysMap": {"$retainKeys": ["name"], "value": "b"}}),
        "invalid patch format of $retainKeys",
    );
    check_error(
        "setElementOrder not a list",
        json!({"mergingList": [{"name": 1}]}),
        json!({"$setElementOrder/mergingList": {"name": 1}}),
        "must be a list",
    );
    check_error(
        "setElementOrder without a field",
        json!({"mergingList": [{"name": 1}]}),
        json!({"$setElementOrder": [{"name": 1}]}),
        "invalid patch format",
    );
    check_error(
        "deleteFromPrimitiveList on a list of maps",
        json!({"mergingList": [{"name": 1}]}),
        json!({"$deleteFromPrimitiveList/mergingList": [{"name": 1}]}),
        "list of objects",
    );
    check_error("lists of lists", json!({"mergingIntList": [[1]]}), json!({"mergingIntList": [[2]]}), "lists of lists");
    check_error(
        "mixed element types",
        json!({"mergingIntList": [1]}),
        json!({"mergingIntList": ["two"]}),
        "not identical",
    );
    check_error(
        "merge-keyed list of scalars",
        json!({"mergingList": ["a"]}),
        json!({"mergingList": ["b"]}),
        "merge key",
    );
    check_error("patch is not an object", json!({}), json!([1]), "must be a JSON object");
    check_error("original is not an object", json!("text"), json!({}), "must be a JSON object");
}

#[test]
fn dedupe_matches_upstream_order() {
    let mut items = vec![json!("a"), json!("a"), json!("b"), json!("c")];
    let len = super::dedupe_in_place(&mut items);
    assert_eq!(&items[..len], &[json!("a"), json!("c"), json!("b")]);
    let mut empty: Vec<Value> = Vec::new();
    assert_eq!(super::dedupe_in_place(&mut empty), 0);
}
