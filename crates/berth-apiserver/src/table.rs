//! `meta.k8s.io/v1` Table responses built from berth-core's per-kind columns.

use berth_core::{ResourceInfo, table};
use chrono::Utc;
use serde_json::{Value, json};

fn partial_metadata(obj: &Value) -> Value {
    let mut meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    table::columns(&info.gvk)
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

pub fn row(info: &ResourceInfo, obj: &Value, include_object: bool) -> Value {
    let cells = table::cells(&info.gvk, obj, Utc::now());
    let object = if include_object { obj.clone() } else { partial_metadata(obj) };
    json!({"cells": cells, "object": object})
}

/// A Table of `items` at list revision `rv`.
pub fn table(info: &ResourceInfo, items: &[Value], rv: &str, cont: Option<&str>, include_object: bool) -> Value {
    let rows: Vec<Value> = items.iter().map(|o| row(info, o, include_object)).collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": column_definitions(info), "rows": rows})
}
