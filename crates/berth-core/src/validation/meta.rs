//! ObjectMeta, labels, annotations and label selectors (apimachinery `api/validation` and
//! `apis/meta/v1/validation`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::names::{
    dns1035_label, dns1123_label, dns1123_subdomain, go_label_selector, invalid_shown, label_value, path_segment_name,
    qualified_name, too_long,
};
use super::{Errors, child};
use crate::selector::LabelSelector;
use crate::status::FieldError;
use crate::validation::json::str_at;

/// How a kind's `metadata.name` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

impl NameRule {
    fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Dns1035 => dns1035_label(name),
            NameRule::PathSegment => path_segment_name(name),
        }
    }

    /// `generateName` is a prefix: a trailing dash is fine (`maskTrailingDash`).
    fn check_prefix(self, prefix: &str) -> Vec<String> {
        let masked = match prefix.strip_suffix('-') {
            Some(head) if !head.is_empty() => format!("{head}a"),
            _ => prefix.to_owned(),
        };
        self.check(&masked)
    }
}

const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `ValidateObjectMetaAccessor`. `namespaced` is `None` when the scope is not known here
/// (custom resources); the API server then owns the namespace rules.
pub(crate) fn object_meta(obj: &Value, namespaced: Option<bool>, rule: NameRule, errs: &mut Errors) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let generate_name = str_at(meta, "/generateName");
    if !generate_name.is_empty() {
        for msg in rule.check_prefix(generate_name) {
            errs.push(FieldError::invalid("metadata.generateName", &Value::from(generate_name), &msg));
        }
    }
    let name = str_at(meta, "/name");
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required("metadata.name", "name or generateName is required"));
        }
    } else {
        for msg in rule.check(name) {
            errs.push(FieldError::invalid("metadata.name", &Value::from(name), &msg));
        }
    }
    let namespace = str_at(meta, "/namespace");
    if namespaced == Some(true) {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in dns1123_label(namespace) {
                errs.push(FieldError::invalid("metadata.namespace", &Value::from(namespace), &msg));
            }
        }
    }
    if meta.get("generation").and_then(Value::as_i64).is_some_and(|g| g < 0) {
        errs.push(FieldError::invalid(
            "metadata.generation",
            &meta["generation"],
            "must be greater than or equal to 0",
        ));
    }
    labels(meta.get("labels"), "metadata.labels", errs);
    annotations(meta.get("annotations"), "metadata.annotations", errs);
    finalizers(meta.get("finalizers"), errs);
    owner_references(meta.get("ownerReferences"), errs);
}

/// `ValidateObjectMetaUpdate`: identity fields cannot change.
pub(crate) fn object_meta_update(obj: &Value, old: &Value, errs: &mut Errors) {
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let new_value = obj.pointer(&format!("/metadata/{field}")).unwrap_or(&Value::Null);
        let old_value = old.pointer(&format!("/metadata/{field}")).unwrap_or(&Value::Null);
        // An update that leaves the field out keeps the stored value.
        if new_value.is_null() || new_value == old_value {
            continue;
        }
        errs.push(FieldError::invalid(format!("metadata.{field}"), new_value, "field is immutable"));
    }
}

/// `ValidateLabels`.
pub(crate) fn labels(map: Option<&Value>, path: &str, errs: &mut Errors) {
    let Some(map) = map.and_then(Value::as_object) else { return };
    for (k, v) in map {
        for msg in qualified_name(k) {
            errs.push(FieldError::invalid(path, &Value::from(k.as_str()), &msg));
        }
        if let Some(v) = v.as_str() {
            for msg in label_value(v) {
                errs.push(FieldError::invalid(path, &Value::from(v), &msg));
            }
        }
    }
}

pub(crate) fn annotations(map: Option<&Value>, path: &str, errs: &mut Errors) {
    let Some(map) = map.and_then(Value::as_object) else { return };
    let mut total = 0;
    for (k, v) in map {
        for msg in qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, &Value::from(k.as_str()), &msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

fn finalizers(list: Option<&Value>, errs: &mut Errors) {
    let Some(list) = list.and_then(Value::as_array) else { return };
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for name in &names {
        for msg in qualified_name(name) {
            errs.push(FieldError::invalid("metadata.finalizers", &Value::from(*name), &msg));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            "metadata.finalizers",
            &Value::from(names.iter().map(|s| Value::from(*s)).collect::<Vec<_>>()),
            "finalizers orphan and foregroundDeletion cannot be both set",
        ));
    }
}

fn owner_references(list: Option<&Value>, errs: &mut Errors) {
    let Some(list) = list.and_then(Value::as_array) else { return };
    let path = "metadata.ownerReferences";
    let mut controllers = Vec::new();
    for r in list {
        let version = str_at(r, "/apiVersion").rsplit('/').next().unwrap_or_default();
        let checks = [
            ("apiVersion", version, "version must not be empty"),
            ("kind", str_at(r, "/kind"), "kind must not be empty"),
            ("name", str_at(r, "/name"), "name must not be empty"),
            ("uid", str_at(r, "/uid"), "uid must not be empty"),
        ];
        for (field, value, msg) in checks {
            if value.is_empty() {
                errs.push(FieldError::invalid(child(path, field), r.get(field).unwrap_or(&Value::from("")), msg));
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers.push(str_at(r, "/name").to_owned());
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            path,
            &Value::from(controllers[0].as_str()),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {} and {}",
                controllers[0], controllers[1]
            ),
        ));
    }
}

/// `ValidateLabelSelector`.
pub(crate) fn label_selector(sel: &Value, path: &str, errs: &mut Errors) {
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            let values = e.get("values").and_then(Value::as_array).map_or(0, Vec::len);
            match str_at(e, "/operator") {
                "In" | "NotIn" => {
                    if values == 0 {
                        errs.push(FieldError::required(
                            child(&p, "values"),
                            "must be specified when `operator` is 'In' or 'NotIn'",
                        ));
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if values > 0 {
                        errs.push(FieldError::forbidden(
                            child(&p, "values"),
                            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                        ));
                    }
                }
                other => errs.push(FieldError::invalid(
                    child(&p, "operator"),
                    &Value::from(other),
                    "not a valid selector operator",
                )),
            }
            let key = str_at(e, "/key");
            for msg in qualified_name(key) {
                errs.push(FieldError::invalid(child(&p, "key"), &Value::from(key), &msg));
            }
        }
    }
    labels(sel.get("matchLabels"), &format!("{path}.matchLabels"), errs);
}

/// Whether a `metav1.LabelSelector` selects `labels` (`None` when the selector is malformed).
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> Option<bool> {
    let selector = LabelSelector::from_label_selector(sel).ok()?;
    let labels: BTreeMap<String, String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
        .unwrap_or_default();
    Some(selector.matches(&labels))
}

/// Whether a selector is empty (selects everything).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
        && sel.get("matchExpressions").and_then(Value::as_array).is_none_or(|a| a.is_empty())
}

/// `ValidateImmutableField` for a label selector.
pub(crate) fn immutable_selector(obj: &Value, old: &Value, errs: &mut Errors) {
    let new_sel = obj.pointer("/spec/selector");
    let old_sel = old.pointer("/spec/selector");
    if new_sel != old_sel {
        errs.push(invalid_shown("spec.selector", &go_label_selector(new_sel), "field is immutable"));
    }
}
