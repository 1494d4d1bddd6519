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
    write_row_object(obj, include_object, rows);
}

/// The rest of a row after its cells.
fn write_row_object(obj: &Value, include_object: bool, rows: &mut Vec<u8>) {
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

/// A builtin kind's row (`includeObject=Metadata`) printed once, with its age cells left as
/// holes filled in when served: the cells that change with time are, for most objects, only
/// the age of `metadata.creationTimestamp`.
pub struct RowTemplate {
    bytes: Box<[u8]>,
    /// Offsets in `bytes` where the age goes.
    holes: Box<[u32]>,
    created: Option<Box<str>>,
}

impl RowTemplate {
    /// `None` when a cell other than the age changes with time (a restart's "ago", a job's
    /// running duration): such rows are printed on every list.
    pub fn new(info: &ResourceInfo, obj: &Value) -> Option<RowTemplate> {
        let now = Utc::now();
        // Far enough apart that every age printed differs.
        let later = now + chrono::Duration::days(800);
        let created = obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str);
        let (age_now, age_later) = (json!(table::age(created, now)), json!(table::age(created, later)));
        let (cells_now, cells_later) = (cells(info, obj), table::cells(&info.gvk, obj, later));
        let mut bytes = b"{\"cells\":[".to_vec();
        let mut holes = Vec::new();
        for (i, (cell, cell_later)) in cells_now.iter().zip(&cells_later).enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            if cell == cell_later {
                let _ = serde_json::to_writer(&mut bytes, cell);
            } else if *cell == age_now && *cell_later == age_later {
                holes.push(u32::try_from(bytes.len()).ok()?);
            } else {
                return None;
            }
        }
        bytes.push(b']');
        write_row_object(obj, false, &mut bytes);
        Some(RowTemplate {
            bytes: bytes.into_boxed_slice(),
            holes: holes.into_boxed_slice(),
            created: created.map(Box::from),
        })
    }

    /// Appends the row as at `now` (comma-separated from the rows before it).
    pub fn write(&self, now: chrono::DateTime<Utc>, rows: &mut Vec<u8>) {
        if !rows.is_empty() {
            rows.push(b',');
        }
        let mut from = 0;
        if !self.holes.is_empty() {
            let age = json!(table::age(self.created.as_deref(), now)).to_string();
            for &hole in self.holes.iter() {
                rows.extend_from_slice(&self.bytes[from..hole as usize]);
                rows.extend_from_slice(age.as_bytes());
                from = hole as usize;
            }
        }
        rows.extend_from_slice(&self.bytes[from..]);
    }
}

/// A Table of `items` at list revision `rv`, encoded.
pub fn table(info: &ResourceInfo, items: &[Value], rv: &str, cont: Option<&str>, include_object: bool) -> Vec<u8> {
    let mut rows = Vec::new();
    for obj in items {
        write_row(info, obj, include_object, &mut rows);
    }
    table_of_rows(info, &rows, rv, cont)
}

/// A Table around rows already encoded by [`write_row`] or [`RowTemplate::write`], so a
/// list of thousands of objects never holds them all decoded, nor a tree of every row.
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
    fn row_templates_print_the_rows() {
        let info = berth_core::Registry::with_builtins().get("", "v1", "pods").expect("pods").clone();
        // Printed as "20h" for a while, whatever second the test runs at.
        let created =
            (Utc::now() - chrono::Duration::minutes(20 * 60 + 10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "creationTimestamp": created, "resourceVersion": "5"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n"}, "status": {"phase": "Running"}});
        let template = RowTemplate::new(&info, &pod).expect("only the age changes with time");
        let (mut cached, mut printed) = (Vec::new(), Vec::new());
        template.write(Utc::now(), &mut cached);
        write_row(&info, &pod, false, &mut printed);
        let cached: Value = serde_json::from_slice(&cached).expect("json");
        assert_eq!(cached, serde_json::from_slice::<Value>(&printed).expect("json"));
        assert_eq!(cached["cells"][4], json!("20h"));
        // Later, the age moves on.
        let mut later = Vec::new();
        template.write(Utc::now() + chrono::Duration::seconds(3600), &mut later);
        assert_eq!(serde_json::from_slice::<Value>(&later).expect("json")["cells"][4], json!("21h"));
        // A restart printed with its "ago" changes with time on its own: no template.
        let mut restarted = pod.clone();
        restarted["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 2, "ready": true,
            "lastState": {"terminated": {"finishedAt": created, "exitCode": 1}}}]);
        assert!(RowTemplate::new(&info, &restarted).is_none());
    }

    #[test]
    fn simple_json_paths() {
        let obj = json!({"status": {"url": "http://x", "ports": [{"port": 80}]}});
        assert_eq!(json_path(&obj, ".status.url"), Some(&json!("http://x")));
        assert_eq!(json_path(&obj, "{.status.ports[0].port}"), Some(&json!(80)));
        assert_eq!(json_path(&obj, ".status.missing"), None);
    }
}
