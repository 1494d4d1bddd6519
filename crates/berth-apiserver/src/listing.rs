//! JSON lists served from the stored bytes. Decoding every item into a `serde_json::Value`
//! tree and encoding it again dominated the time of a large list; here only the top level
//! and `metadata` of each stored object are split into raw JSON slices (serde_json's
//! `RawValue`), enough to set `apiVersion`, `kind` and `resourceVersion` and to match label
//! selectors and the metadata field selectors. Other field selectors need the whole object
//! and fall back to a full decode.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use berth_core::{ApiError, ResourceInfo};
use berth_store::{KeyValue, Revision};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::objects::{ListOptions, decode_value};

/// A JSON object's members in their stored order, values left as raw JSON.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Members<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(RawObject(members))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

impl<'a> RawObject<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

fn corrupt(info: &ResourceInfo, e: impl fmt::Display) -> ApiError {
    ApiError::internal(format!("stored object {} is corrupt: {e}", info.plural))
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `kv` as it is served (`apiVersion`, `kind` and `resourceVersion` set) if it
/// matches `opts`; returns whether it did.
pub fn append_item(
    info: &ResourceInfo,
    kv: &KeyValue,
    opts: &ListOptions,
    out: &mut Vec<u8>,
) -> Result<bool, ApiError> {
    let needs_whole_object = opts.fields.fields().any(|f| f != "metadata.name" && f != "metadata.namespace");
    if needs_whole_object {
        let obj = decode_value(info, &kv.value, kv.mod_revision)?;
        if !(opts.labels.matches_object(&obj) && opts.fields.matches_object(&obj)) {
            return Ok(false);
        }
        serde_json::to_writer(&mut *out, &obj).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(true);
    }
    let text = std::str::from_utf8(&kv.value).map_err(|e| corrupt(info, e))?;
    let top: RawObject<'_> = serde_json::from_str(text).map_err(|e| corrupt(info, e))?;
    let meta: RawObject<'_> = match top.get("metadata") {
        Some(m) => serde_json::from_str(m.get()).map_err(|e| corrupt(info, e))?,
        None => RawObject(Vec::new()),
    };
    if !opts.labels.is_empty() {
        let labels: BTreeMap<String, String> = match meta.get("labels") {
            Some(l) => serde_json::from_str(l.get()).map_err(|e| corrupt(info, e))?,
            None => BTreeMap::new(),
        };
        if !opts.labels.matches(&labels) {
            return Ok(false);
        }
    }
    if !opts.fields.is_empty() {
        let field = |name: &str| -> Result<String, ApiError> {
            match meta.get(name) {
                Some(v) => serde_json::from_str::<String>(v.get()).map_err(|e| corrupt(info, e)),
                None => Ok(String::new()),
            }
        };
        let obj = serde_json::json!({"metadata": {"name": field("name")?, "namespace": field("namespace")?}});
        if !opts.fields.matches_object(&obj) {
            return Ok(false);
        }
    }
    write_item(info, &top, &meta, kv.mod_revision, out);
    Ok(true)
}

fn write_item(info: &ResourceInfo, top: &RawObject<'_>, meta: &RawObject<'_>, rev: Revision, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"apiVersion\":");
    push_str(out, &info.gvk.api_version());
    out.extend_from_slice(b",\"kind\":");
    push_str(out, &info.gvk.kind);
    let mut wrote_meta = false;
    for (k, v) in &top.0 {
        match k.as_ref() {
            "apiVersion" | "kind" => continue,
            "metadata" => {
                write_metadata(meta, rev, out);
                wrote_meta = true;
            }
            _ => {
                out.push(b',');
                push_str(out, k);
                out.push(b':');
                out.extend_from_slice(v.get().as_bytes());
            }
        }
    }
    if !wrote_meta {
        write_metadata(meta, rev, out);
    }
    out.push(b'}');
}

fn write_metadata(meta: &RawObject<'_>, rev: Revision, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"metadata\":{");
    for (k, v) in meta.0.iter().filter(|(k, _)| k != "resourceVersion") {
        push_str(out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(format!("\"resourceVersion\":\"{rev}\"}}").as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_core::Registry;
    use serde_json::{Value, json};

    fn kv(value: &Value) -> KeyValue {
        KeyValue {
            key: "/registry/configmaps/default/a".into(),
            value: serde_json::to_vec(value).unwrap().into(),
            create_revision: 3,
            mod_revision: 7,
        }
    }

    fn info() -> ResourceInfo {
        Registry::with_builtins().get("", "v1", "configmaps").unwrap().clone()
    }

    #[test]
    fn raw_items_equal_the_decoded_objects() {
        let stored = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "labels": {"x": "1"}, "uid": "u"},
            "data": {"k": "v \"quoted\" \u{e9}"}});
        let mut out = Vec::new();
        assert!(append_item(&info(), &kv(&stored), &ListOptions::default(), &mut out).unwrap());
        let served: Value = serde_json::from_slice(&out).unwrap();
        let decoded = decode_value(&info(), &kv(&stored).value, 7).unwrap();
        assert_eq!(served, decoded);
        assert_eq!(served["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn selectors_filter_without_a_full_decode() {
        let stored = json!({"metadata": {"name": "a", "namespace": "default", "labels": {"x": "1"}}});
        let opts = |labels: &str, fields: &str| ListOptions {
            labels: berth_core::selector::LabelSelector::parse(labels).unwrap(),
            fields: berth_core::selector::FieldSelector::parse(fields).unwrap(),
            ..ListOptions::default()
        };
        let keeps = |o: ListOptions| append_item(&info(), &kv(&stored), &o, &mut Vec::new()).unwrap();
        assert!(keeps(opts("x=1", "metadata.name=a")));
        assert!(!keeps(opts("x=2", "")));
        assert!(!keeps(opts("", "metadata.namespace!=default")));
        assert!(keeps(opts("!y", "")));
    }
}
