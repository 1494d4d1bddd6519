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

fn cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    if info.printer_columns.is_empty() { table::cells(&info.gvk, obj, Utc::now()) } else { crd_cells(info, obj) }
}

pub fn row(info: &ResourceInfo, obj: &Value, include_object: bool) -> Value {
    let cells = cells(info, obj);
    let object = if include_object { obj.clone() } else { partial_metadata(obj) };
    json!({"cells": cells, "object": object})
}

/// Appends `obj`'s row, encoded, to `rows` (comma-separated from the rows before it).
pub fn write_row(info: &ResourceInfo, obj: &Value, include_object: bool, rows: &mut Vec<u8>) {
    if !rows.is_empty() {
        rows.push(b',');
    }
    // Written piece by piece, as `row` would build it, without copying the object's metadata.
    // Writing a Value into a Vec cannot fail.
    rows.extend_from_slice(b"{\"cells\":");
    let _ = serde_json::to_writer(&mut *rows, &cells(info, obj));
    rows.extend_from_slice(b",\"object\":");
    if include_object {
        let _ = serde_json::to_writer(&mut *rows, obj);
    } else {
        rows.extend_from_slice(b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{");
        let meta = obj.get("metadata").and_then(Value::as_object).into_iter().flatten();
        for (i, (k, v)) in meta.filter(|(k, _)| *k != "managedFields").enumerate() {
            if i > 0 {
                rows.push(b',');
            }
            let _ = serde_json::to_writer(&mut *rows, k);
            rows.push(b':');
            let _ = serde_json::to_writer(&mut *rows, v);
        }
        rows.extend_from_slice(b"}}");
    }
    rows.push(b'}');
}

/// A Table of `items` at list revision `rv`, encoded.
pub fn table(info: &ResourceInfo, items: &[Value], rv: &str, cont: Option<&str>, include_object: bool) -> Vec<u8> {
    let mut rows = Vec::new();
    for obj in items {
        write_row(info, obj, include_object, &mut rows);
    }
    table_of_rows(info, &rows, rv, cont)
}

/// A Table around rows already encoded by [`write_row`]. Lists encode each row as its
/// object is read (`Objects::list_each`), so a list of thousands of objects never holds
/// them all decoded, nor a second tree of every row.
pub fn table_of_rows(info: &ResourceInfo, rows: &[u8], rv: &str, cont: Option<&str>) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let head = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": column_definitions(info)});
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    // `head` is an object: its closing brace gives way to the rows.
    out.pop();
    out.reserve(rows.len() + 12);
    out.extend_from_slice(b",\"rows\":[");
    out.extend_from_slice(rows);
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
    fn written_rows_are_the_rows() {
        let info = berth_core::Registry::with_builtins().get("", "v1", "pods").expect("pods").clone();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"}, "managedFields": [{"manager": "x"}],
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        for include in [false, true] {
            let mut rows = Vec::new();
            write_row(&info, &pod, include, &mut rows);
            write_row(&info, &pod, include, &mut rows);
            let written: Value = serde_json::from_slice(&[b"[", rows.as_slice(), b"]"].concat()).expect("json");
            let one = row(&info, &pod, include);
            assert_eq!(written, json!([one, one]));
        }
    }

    #[test]
    fn simple_json_paths() {
        let obj = json!({"status": {"url": "http://x", "ports": [{"port": 80}]}});
        assert_eq!(json_path(&obj, ".status.url"), Some(&json!("http://x")));
        assert_eq!(json_path(&obj, "{.status.ports[0].port}"), Some(&json!(80)));
        assert_eq!(json_path(&obj, ".status.missing"), None);
    }
}
