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
    if !info.printer_columns.is_empty() {
        return crd_column_definitions(info);
    }
    table::columns(&info.gvk)
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

pub fn row(info: &ResourceInfo, obj: &Value, include_object: bool) -> Value {
    let cells =
        if info.printer_columns.is_empty() { table::cells(&info.gvk, obj, Utc::now()) } else { crd_cells(info, obj) };
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

/// A CRD's own columns: Name, then its `additionalPrinterColumns` (upstream's CRD table
/// convertor).
fn crd_column_definitions(info: &ResourceInfo) -> Vec<Value> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    out.extend(info.printer_columns.iter().map(|c| {
        json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    out
}

fn crd_cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
    for c in &info.printer_columns {
        let value = json_path(obj, &c.json_path);
        let cell = match (c.kind.as_str(), value) {
            (_, None) => Value::Null,
            ("date", Some(Value::String(ts))) => json!(table::age(Some(ts), Utc::now())),
            (_, Some(v)) => v.clone(),
        };
        cells.push(cell);
    }
    cells
}

/// The value at a simple JSONPath (`.a.b`, `.a[0].b`, `{.a.b}`); full JSONPath is not
/// supported, and a path outside this subset prints as empty.
fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            current = current.get(field)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = index.trim_end_matches(']').parse().ok()?;
            current = current.get(n)?;
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_json_paths() {
        let obj = json!({"status": {"url": "http://x", "ports": [{"port": 80}]}});
        assert_eq!(json_path(&obj, ".status.url"), Some(&json!("http://x")));
        assert_eq!(json_path(&obj, "{.status.ports[0].port}"), Some(&json!(80)));
        assert_eq!(json_path(&obj, ".status.missing"), None);
    }
}
