//! Formatting helpers shared by the printers, each mirroring an apimachinery or printers helper.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::validation::json::{list_at, str_at};
use crate::validation::parse_quantity;

pub(crate) fn parse_time(ts: Option<&str>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
pub(crate) fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else { return "<none>".to_owned() };
    let mut pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.sort();
    pairs.join(",")
}

/// A `metav1.LabelSelector` as `labels.Selector.String()`: requirements sorted by key, or
/// `None` when the selector is malformed.
pub(crate) fn selector_string(selector: Option<&Value>) -> Option<String> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else { return Some(String::new()) };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str()?)));
        }
    }
    for expr in list_at(selector, "/matchExpressions") {
        let key = str_at(expr, "/key");
        let mut values: Vec<&str> = list_at(expr, "/values").iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let text = match str_at(expr, "/operator") {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.to_owned(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key.to_owned(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(reqs.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty, `<error>` when bad.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Some(s) if s.is_empty() => "<none>".to_owned(),
        Some(s) => s,
        None => "<error>".to_owned(),
    }
}

/// Container names and images joined with commas (`layoutContainerCells`).
pub(crate) fn layout_containers(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `helper.GetAccessModesAsString`: fixed order, duplicates dropped.
pub(crate) fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(mode, _)| has(mode))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// A quantity's canonical string, or the raw text when it does not parse; absent is `0`.
pub(crate) fn quantity(map: Option<&Map<String, Value>>, key: &str) -> String {
    match map.and_then(|m| m.get(key)) {
        Some(Value::String(s)) => parse_quantity(s).map(|q| q.canonical()).unwrap_or_else(|_| s.clone()),
        Some(Value::Number(n)) => {
            let s = n.to_string();
            parse_quantity(&s).map(|q| q.canonical()).unwrap_or(s)
        }
        _ => "0".to_owned(),
    }
}

/// Joins up to three items and says how many more there were (`listWithMoreString`).
pub(crate) fn list_with_more(items: &[String], total: usize, empty: &str) -> String {
    const MAX: usize = 3;
    let shown = &items[..items.len().min(MAX)];
    let joined = shown.join(",");
    if total > MAX {
        format!("{joined} + {} more...", total - MAX)
    } else if joined.is_empty() {
        empty.to_owned()
    } else {
        joined
    }
}
