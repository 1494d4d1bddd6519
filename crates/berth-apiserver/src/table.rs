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

/// A Table of `items` at list revision `rv`, encoded. Rows are written one at a time
/// rather than gathered into one tree first: a list of thousands of objects is encoded
/// once, with no second copy of every row.
pub fn table(info: &ResourceInfo, items: &[Value], rv: &str, cont: Option<&str>, include_object: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let head = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": column_definitions(info)});
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    // `head` is an object: its closing brace gives way to the rows.
    out.pop();
    out.extend_from_slice(b",\"rows\":[");
    for (i, obj) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &row(info, obj, include_object));
    }
    out.extend_from_slice(b"]}");
    out
}
