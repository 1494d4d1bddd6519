//! `apps/v1` validation (`pkg/apis/apps/validation`).

use serde_json::Value;

use super::json::str_at;
use super::meta::{immutable_selector, label_selector, selector_is_empty, selector_matches};
use super::names::{go_label_selector, go_string_map, invalid_shown, percent};
use super::pod;
use super::{Errors, nonnegative};
use crate::status::FieldError;

/// `intstr.IntOrString` as `%#v` prints it.
fn go_int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{s:?}}}"),
        Some(Value::Number(n)) => format!("intstr.IntOrString{{Type:0, IntVal:{n}, StrVal:\"\"}}"),
        _ => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_owned(),
    }
}

/// `getIntOrPercentValue`: the number, or the percentage; 0 when malformed.
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.strip_suffix('%').and_then(|n| n.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

/// `ValidatePositiveIntOrPercent`.
fn positive_int_or_percent(v: Option<&Value>, path: &str, errs: &mut Errors) {
    match v {
        Some(Value::String(s)) => {
            for msg in percent(s) {
                errs.push(invalid_shown(path, &go_int_or_string(v), &msg));
            }
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            errs.push(FieldError::invalid(
                path,
                &Value::from(n.as_i64().unwrap_or(0)),
                "must be greater than or equal to 0",
            ));
        }
        _ => {}
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100_percent(v: Option<&Value>, path: &str, errs: &mut Errors) {
    if let Some(Value::String(s)) = v
        && s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()).is_some_and(|p| p > 100)
    {
        errs.push(invalid_shown(path, &go_int_or_string(v), "must not be greater than 100%"));
    }
}

/// `ValidatePodTemplateSpecForReplicaSet` and friends: the template must match the selector
/// and restart always.
fn workload_template(spec: &Value, kind: &str, errs: &mut Errors) {
    let Some(tpl) = spec.get("template").filter(|t| t.is_object()) else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    pod::template(tpl, "spec.template", errs);
    match str_at(tpl, "/spec/restartPolicy") {
        "Always" | "" => {}
        other => {
            errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &Value::from(other), &["Always"]))
        }
    }
    if tpl.pointer("/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// Selector present, valid, not empty, and matching the template labels.
fn selector_and_template_labels(spec: &Value, empty_name: &str, errs: &mut Errors) {
    let template_labels = spec.pointer("/template/metadata/labels");
    let Some(sel) = spec.get("selector").filter(|s| s.is_object()) else {
        errs.push(FieldError::required("spec.selector", ""));
        // A nil selector selects nothing, so the template cannot match either.
        errs.push(invalid_shown(
            "spec.template.metadata.labels",
            &go_string_map(template_labels),
            "`selector` does not match template `labels`",
        ));
        return;
    };
    label_selector(sel, "spec.selector", errs);
    if selector_is_empty(sel) {
        errs.push(invalid_shown(
            "spec.selector",
            &go_label_selector(Some(sel)),
            &format!("empty selector is invalid for {empty_name}"),
        ));
    } else if selector_matches(sel, template_labels) == Some(false) {
        errs.push(invalid_shown(
            "spec.template.metadata.labels",
            &go_string_map(template_labels),
            "`selector` does not match template `labels`",
        ));
    }
}

pub(crate) fn deployment(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    nonnegative(spec, "replicas", "spec", errs);
    selector_and_template_labels(spec, "deployment", errs);
    workload_template(spec, "ReplicaSet", errs);
    let strategy = spec.get("strategy").unwrap_or(&Value::Null);
    match str_at(strategy, "/type") {
        "Recreate" => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match strategy.get("rollingUpdate").filter(|r| r.is_object()) {
            None => errs
                .push(FieldError::required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")),
            Some(rolling) => {
                let path = "spec.strategy.rollingUpdate";
                let (unavailable, surge) = (rolling.get("maxUnavailable"), rolling.get("maxSurge"));
                positive_int_or_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
                positive_int_or_percent(surge, &format!("{path}.maxSurge"), errs);
                if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
                    errs.push(invalid_shown(
                        format!("{path}.maxUnavailable"),
                        &go_int_or_string(unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_more_than_100_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
            }
        },
        other => {
            errs.push(FieldError::not_supported("spec.strategy", &Value::from(other), &["Recreate", "RollingUpdate"]))
        }
    }
    nonnegative(spec, "minReadySeconds", "spec", errs);
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    if let Some(deadline) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        nonnegative(spec, "progressDeadlineSeconds", "spec", errs);
        let min_ready = spec.get("minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
        if deadline <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(deadline),
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(old) = old {
        immutable_selector(obj, old, errs);
    }
}

pub(crate) fn replica_set(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    // Upstream's message says "deployment" for ReplicaSets too.
    selector_and_template_labels(spec, "deployment", errs);
    workload_template(spec, "ReplicaSet", errs);
    if let Some(old) = old {
        immutable_selector(obj, old, errs);
    }
}

pub(crate) fn stateful_set(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match str_at(spec, "/podManagementPolicy") {
        "OrderedReady" | "Parallel" => {}
        "" => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        other => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            &Value::from(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    let rolling = strategy.get("rollingUpdate").filter(|r| r.is_object());
    match str_at(strategy, "/type") {
        "" => errs.push(FieldError::required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(r) = rolling {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    r,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(r) = rolling {
                nonnegative(r, "partition", "spec.updateStrategy.rollingUpdate", errs);
            }
        }
        _ => errs.push(FieldError::invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'")),
    }
    if let Some(policy) = spec.get("persistentVolumeClaimRetentionPolicy").filter(|p| p.is_object()) {
        for field in ["whenDeleted", "whenScaled"] {
            match str_at(policy, &format!("/{field}")) {
                "Retain" | "Delete" => {}
                other => errs.push(FieldError::not_supported(
                    format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                    &Value::from(other),
                    &["Retain", "Delete"],
                )),
            }
        }
    }
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    if let Some(ordinals) = spec.get("ordinals").filter(|o| o.is_object()) {
        nonnegative(ordinals, "start", "spec.ordinals", errs);
    }
    selector_and_template_labels(spec, "statefulset", errs);
    workload_template(spec, "StatefulSet", errs);

    if let Some(old) = old {
        let mutable = [
            "replicas",
            "template",
            "updateStrategy",
            "minReadySeconds",
            "ordinals",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
        ];
        let strip = |v: &Value| {
            let mut v = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                for key in mutable {
                    m.remove(key);
                }
            }
            v
        };
        if strip(obj) != strip(old) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

pub(crate) fn daemon_set(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let template_labels = spec.pointer("/template/metadata/labels");
    let sel = spec.get("selector").filter(|s| s.is_object());
    if let Some(sel) = sel {
        label_selector(sel, "spec.selector", errs);
    }
    // A missing selector selects nothing; an empty one selects everything.
    let matches = sel.map_or(Some(false), |s| selector_matches(s, template_labels));
    if matches == Some(false) {
        errs.push(invalid_shown(
            "spec.template.metadata.labels",
            &go_string_map(template_labels),
            "`selector` does not match template `labels`",
        ));
    }
    if let Some(sel) = sel
        && selector_is_empty(sel)
    {
        errs.push(invalid_shown(
            "spec.selector",
            &go_label_selector(Some(sel)),
            "empty selector is invalid for daemonset",
        ));
    }
    if let Some(tpl) = spec.get("template").filter(|t| t.is_object()) {
        pod::template(tpl, "spec.template", errs);
        match str_at(tpl, "/spec/restartPolicy") {
            "Always" | "" => {}
            other => errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                &Value::from(other),
                &["Always"],
            )),
        }
        if let Some(ads) = tpl.pointer("/spec/activeDeadlineSeconds").filter(|v| !v.is_null()) {
            errs.push(FieldError::invalid(
                "spec.template.spec.activeDeadlineSeconds",
                ads,
                "activeDeadlineSeconds in DaemonSet is not Supported",
            ));
        }
    } else {
        errs.push(FieldError::required("spec.template", ""));
    }
    nonnegative(spec, "minReadySeconds", "spec", errs);
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    match str_at(strategy, "/type") {
        "OnDelete" => {}
        "RollingUpdate" => match strategy.get("rollingUpdate").filter(|r| r.is_object()) {
            None => errs.push(FieldError::required("spec.updateStrategy.rollingUpdate", "")),
            Some(rolling) => {
                let path = "spec.updateStrategy.rollingUpdate";
                let (unavailable, surge) = (rolling.get("maxUnavailable"), rolling.get("maxSurge"));
                positive_int_or_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
                positive_int_or_percent(surge, &format!("{path}.maxSurge"), errs);
                not_more_than_100_percent(unavailable, &format!("{path}.maxUnavailable"), errs);
                not_more_than_100_percent(surge, &format!("{path}.maxSurge"), errs);
                match (int_or_percent_value(unavailable) != 0, int_or_percent_value(surge) != 0) {
                    (true, true) => errs.push(invalid_shown(
                        format!("{path}.maxSurge"),
                        &go_int_or_string(surge),
                        "may not be set when maxUnavailable is non-zero",
                    )),
                    (false, false) => errs
                        .push(FieldError::required(format!("{path}.maxUnavailable"), "cannot be 0 when maxSurge is 0")),
                    _ => {}
                }
            }
        },
        other => errs.push(FieldError::not_supported(
            "spec.updateStrategy",
            &Value::from(other),
            &["RollingUpdate", "OnDelete"],
        )),
    }
    if let Some(old) = old {
        immutable_selector(obj, old, errs);
    }
}

pub(crate) fn controller_revision(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    if obj.get("data").is_none_or(Value::is_null) {
        errs.push(FieldError::required("data", "data is mandatory"));
    }
    nonnegative(obj, "revision", "", errs);
    if let Some(old) = old
        && obj.get("data") != old.get("data")
    {
        errs.push(FieldError::invalid("data", obj.get("data").unwrap_or(&Value::Null), "field is immutable"));
    }
}
