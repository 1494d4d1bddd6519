//! The watch cache: the current objects of each resource that has been read, in memory, so
//! that lists (and the reads every create makes: its namespace, quotas and limit ranges) never
//! wait for SQLite or the blocking pool.
//!
//! A resource is loaded on its first list (one range read of the store), then kept current by
//! the store's [`CommitObserver`] feed, which runs on the store's writer thread before a write
//! is acknowledged. Hence the invariant that makes every read from here consistent: **once a
//! write is acknowledged, the cache holds it**, so a list with `resourceVersion=""` served from
//! the cache sees every write acknowledged before the list began, with no round trip to the
//! store. `State::revision` is the store revision the cache has seen every commit up to.
//!
//! Each entry keeps the stored bytes (shared with the store's watch feed, never copied) and,
//! derived once per version on first use, where the served JSON differs from the stored bytes
//! (only `apiVersion`/`kind` and `metadata.resourceVersion`), its labels and the values of the
//! kind's field selectors, and its Table row. An empty cache holds nothing; a full one costs
//! about the stored bytes plus a little per object.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fmt,
    io::Write as _,
    ops::Bound,
    sync::{Arc, Mutex, OnceLock, PoisonError, RwLock},
    time::Duration,
};

use berth_core::{ApiError, ResourceInfo, selector::supported_fields};
use berth_store::{CommitObserver, DynStore, Event, EventKind, KeyValue, Revision};
use bytes::Bytes;
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::{objects::ListOptions, table::RowTemplate};

/// One object at one revision.
pub struct Entry {
    pub key: String,
    /// The stored JSON (no `resourceVersion`; `apiVersion` and `kind` as the client sent them).
    pub value: Bytes,
    pub mod_revision: Revision,
    meta: OnceLock<Result<Meta, String>>,
    row: OnceLock<Option<RowTemplate>>,
}

/// What lists need of an entry, derived from its bytes once.
struct Meta {
    /// The served object after its `{"apiVersion":..,"kind":..` and before its final `}`.
    pieces: Box<[Piece]>,
    /// Sorted by key (a slice: a map would cost a tree node per object).
    labels: Box<[(Box<str>, Box<str>)]>,
    /// `metadata.name`, `metadata.namespace` and the kind's selectable fields that are not
    /// empty, with their values.
    fields: Box<[(&'static str, Box<str>)]>,
}

/// A part of a served object: mostly ranges of the stored bytes.
enum Piece {
    Raw(u32, u32),
    Lit(&'static [u8]),
    Owned(Box<[u8]>),
    /// `"resourceVersion":"<mod_revision>"`.
    Rv,
}

impl Entry {
    pub fn new(key: String, value: Bytes, mod_revision: Revision) -> Entry {
        Entry { key, value, mod_revision, meta: OnceLock::new(), row: OnceLock::new() }
    }

    fn from_kv(kv: KeyValue) -> Entry {
        Entry::new(kv.key, kv.value, kv.mod_revision)
    }

    pub fn to_kv(&self) -> KeyValue {
        // The API never reads create_revision.
        KeyValue {
            key: self.key.clone(),
            value: self.value.clone(),
            create_revision: 0,
            mod_revision: self.mod_revision,
        }
    }

    fn meta(&self, info: &ResourceInfo) -> Result<&Meta, ApiError> {
        self.meta
            .get_or_init(|| derive(info, &self.value).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", info.plural)))
    }

    /// Whether the entry matches the list's label and field selectors.
    pub fn matches(&self, info: &ResourceInfo, opts: &ListOptions) -> Result<bool, ApiError> {
        if opts.labels.is_empty() && opts.fields.is_empty() {
            return Ok(true);
        }
        let meta = self.meta(info)?;
        let label = |key: &str| {
            let found = meta.labels.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok();
            found.map(|i| meta.labels[i].1.as_ref())
        };
        if !opts.labels.matches_with(label) {
            return Ok(false);
        }
        let indexed = supported_fields(&info.gvk.kind);
        let known = opts.fields.matches_with(|field| match meta.fields.iter().find(|(name, _)| *name == field) {
            Some((_, value)) => Some(value.as_ref()),
            None if matches!(field, "metadata.name" | "metadata.namespace") || indexed.contains(&field) => Some(""),
            None => None,
        });
        match known {
            Some(matched) => Ok(matched),
            // A field this kind does not index: decode the whole object.
            None => Ok(opts.fields.matches_object(&self.decode(info)?)),
        }
    }

    /// Appends the object as a list serves it.
    pub fn write_json(&self, info: &ResourceInfo, head: &[u8], out: &mut Vec<u8>) -> Result<(), ApiError> {
        let meta = self.meta(info)?;
        out.extend_from_slice(head);
        for piece in meta.pieces.iter() {
            match piece {
                Piece::Raw(start, end) => out.extend_from_slice(&self.value[*start as usize..*end as usize]),
                Piece::Lit(text) => out.extend_from_slice(text),
                Piece::Owned(bytes) => out.extend_from_slice(bytes),
                // Writing into a Vec cannot fail.
                Piece::Rv => {
                    let _ = write!(out, "\"resourceVersion\":\"{}\"", self.mod_revision);
                }
            }
        }
        out.push(b'}');
        Ok(())
    }

    pub fn decode(&self, info: &ResourceInfo) -> Result<serde_json::Value, ApiError> {
        crate::objects::decode_value(info, &self.value, self.mod_revision)
    }

    /// Appends the object's Table row (`includeObject=Metadata`), printed once per version
    /// for builtin kinds; time-dependent cells other than ages are printed each time.
    pub fn write_row(&self, info: &ResourceInfo, out: &mut Vec<u8>) -> Result<(), ApiError> {
        let template = if info.custom {
            None
        } else {
            self.row.get_or_init(|| self.decode(info).ok().and_then(|obj| RowTemplate::new(info, &obj))).as_ref()
        };
        match template {
            Some(template) => template.write(chrono::Utc::now(), out),
            None => crate::table::write_row(info, &self.decode(info)?, false, out),
        }
        Ok(())
    }
}

/// The head every served item starts with: `{"apiVersion":"..","kind":".."`.
pub fn item_head(info: &ResourceInfo) -> Vec<u8> {
    let mut head = b"{\"apiVersion\":".to_vec();
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut head, &info.gvk.api_version());
    head.extend_from_slice(b",\"kind\":");
    let _ = serde_json::to_writer(&mut head, &info.gvk.kind);
    head
}

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

/// The value of a dotted field path as field selectors compare it.
fn raw_field(top: &RawObject<'_>, path: &str) -> String {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else { return String::new() };
    let Some(mut value) = top.get(first) else { return String::new() };
    for part in parts {
        let Ok(object) = serde_json::from_str::<RawObject<'_>>(value.get()) else { return String::new() };
        match object.get(part) {
            Some(v) => value = v,
            None => return String::new(),
        }
    }
    serde_json::from_str::<serde_json::Value>(value.get())
        .map(|v| berth_core::selector::scalar_text(&v))
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
enum DeriveError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Utf8(#[from] std::str::Utf8Error),
}

fn derive(info: &ResourceInfo, value: &[u8]) -> Result<Meta, DeriveError> {
    let text = std::str::from_utf8(value)?;
    let top: RawObject<'_> = serde_json::from_str(text)?;
    let meta: RawObject<'_> = match top.get("metadata") {
        Some(m) => serde_json::from_str(m.get())?,
        None => RawObject(Vec::new()),
    };
    let labels: BTreeMap<String, String> = match meta.get("labels") {
        Some(l) => serde_json::from_str(l.get())?,
        None => BTreeMap::new(),
    };
    let meta_string = |name: &str| -> Result<Box<str>, DeriveError> {
        Ok(match meta.get(name) {
            Some(v) => serde_json::from_str::<String>(v.get())?.into_boxed_str(),
            None => Box::default(),
        })
    };
    let mut fields = vec![("metadata.name", meta_string("name")?), ("metadata.namespace", meta_string("namespace")?)];
    for field in supported_fields(&info.gvk.kind) {
        fields.push((field, raw_field(&top, field).into_boxed_str()));
    }
    fields.retain(|(_, value)| !value.is_empty());
    let pieces = if meta.get("resourceVersion").is_some() {
        // Not written by this server (stored values never carry it): served without it.
        vec![Piece::Owned(owned_members(&top, &meta).into_boxed_slice()), Piece::Rv, Piece::Lit(b"}")]
    } else {
        raw_pieces(text, &top, meta.0.is_empty())
    };
    // A BTreeMap iterates in key order.
    let labels = labels.into_iter().map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str())).collect();
    Ok(Meta { pieces: merge(pieces).into_boxed_slice(), labels, fields: fields.into_boxed_slice() })
}

/// The served members up to the end of `metadata`'s members, copied (the rare case where the
/// stored metadata has a `resourceVersion` to leave out); `metadata` moves to the end.
fn owned_members(top: &RawObject<'_>, meta: &RawObject<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in top.0.iter().filter(|(k, _)| !matches!(k.as_ref(), "apiVersion" | "kind" | "metadata")) {
        out.push(b',');
        let _ = serde_json::to_writer(&mut out, key.as_ref());
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.extend_from_slice(b",\"metadata\":{");
    for (key, value) in meta.0.iter().filter(|(k, _)| k != "resourceVersion") {
        let _ = serde_json::to_writer(&mut out, key.as_ref());
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
        out.push(b',');
    }
    out
}

/// The served members as ranges of `text`: every top-level member but `apiVersion` and
/// `kind`, with `"resourceVersion"` added at the end of `metadata`.
fn raw_pieces(text: &str, top: &RawObject<'_>, meta_empty: bool) -> Vec<Piece> {
    let base = text.as_ptr() as usize;
    let offset = |s: &str| (s.as_ptr() as usize - base) as u32;
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut wrote_meta = false;
    for (key, value) in &top.0 {
        if key == "apiVersion" || key == "kind" {
            continue;
        }
        let (start, end) = (offset(value.get()), offset(value.get()) + value.get().len() as u32);
        match key {
            // `"key":` ends right before the value when nothing was escaped in the key.
            Cow::Borrowed(k) if offset(k) >= 2 && offset(k) as usize + k.len() + 2 == start as usize => {
                let key_start = offset(k) - 1;
                if bytes[key_start as usize - 1] == b',' {
                    pieces.push(Piece::Raw(key_start - 1, key_start));
                } else {
                    pieces.push(Piece::Lit(b","));
                }
                pieces.push(Piece::Raw(key_start, start));
            }
            _ => {
                let mut head = b",".to_vec();
                let _ = serde_json::to_writer(&mut head, key.as_ref());
                head.push(b':');
                pieces.push(Piece::Owned(head.into_boxed_slice()));
            }
        }
        if key == "metadata" {
            wrote_meta = true;
            pieces.push(Piece::Raw(start, end - 1));
            if !meta_empty {
                pieces.push(Piece::Lit(b","));
            }
            pieces.push(Piece::Rv);
            pieces.push(Piece::Raw(end - 1, end));
        } else {
            pieces.push(Piece::Raw(start, end));
        }
    }
    if !wrote_meta {
        pieces.extend([Piece::Lit(b",\"metadata\":{"), Piece::Rv, Piece::Lit(b"}")]);
    }
    pieces
}

/// Joins ranges that touch, so a typical object is served in a few copies.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        if let (Some(Piece::Raw(_, end)), Piece::Raw(start, next_end)) = (out.last_mut(), &piece)
            && *end == *start
        {
            *end = *next_end;
            continue;
        }
        out.push(piece);
    }
    out
}

/// Every resource the cache holds, kept current by the store's commit feed.
pub struct Cache {
    store: DynStore,
    shared: Arc<Shared>,
    /// One load at a time per resource; later readers wait for it.
    loads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct Shared {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// Every commit up to this revision has been applied.
    revision: Revision,
    /// By key prefix (`ResourceInfo::key_prefix`).
    resources: HashMap<String, Resource>,
}

enum Resource {
    /// Being read from the store: commits meanwhile wait here.
    Loading(Vec<Event>),
    Ready(Items),
}

struct Items {
    entries: BTreeMap<String, Arc<Entry>>,
    /// No entry changed after this revision (so the current entries are also the state at
    /// any revision from here to `State::revision`).
    changed_at: Revision,
}

impl Items {
    fn apply(&mut self, event: &Event) {
        match event.kind {
            EventKind::Put => {
                let entry = Entry::new(event.key.clone(), event.value.clone(), event.revision);
                self.entries.insert(event.key.clone(), Arc::new(entry));
            }
            EventKind::Delete => {
                self.entries.remove(&event.key);
            }
        }
        self.changed_at = self.changed_at.max(event.revision);
    }
}

/// `/registry/<group>/<plural>/` of a key.
fn resource_prefix(key: &str) -> &str {
    match key.match_indices('/').nth(3) {
        Some((i, _)) => &key[..=i],
        None => key,
    }
}

impl CommitObserver for Shared {
    fn committed(&self, events: &[Event], revision: Revision) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if !state.resources.is_empty() {
            for event in events {
                match state.resources.get_mut(resource_prefix(&event.key)) {
                    Some(Resource::Ready(items)) => items.apply(event),
                    Some(Resource::Loading(pending)) => pending.push(event.clone()),
                    None => {}
                }
            }
        }
        state.revision = state.revision.max(revision);
    }
}

/// Entries of one list, at one revision.
pub struct Snapshot {
    pub entries: Vec<Arc<Entry>>,
    pub revision: Revision,
}

impl Cache {
    /// A cache fed by `store`'s commits from now on (nothing is loaded yet).
    pub fn new(store: DynStore) -> Cache {
        let shared = Arc::new(Shared { state: RwLock::new(State::default()) });
        let revision = store.observe(Arc::clone(&shared) as Arc<dyn CommitObserver>);
        shared.state.write().unwrap_or_else(PoisonError::into_inner).revision = revision;
        Cache { store, shared, loads: Mutex::new(HashMap::new()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_ready(&self, prefix: &str) -> bool {
        matches!(self.read().resources.get(prefix), Some(Resource::Ready(_)))
    }

    /// Loads `info`'s objects unless they are held already.
    pub async fn ensure(&self, info: &ResourceInfo) -> Result<(), berth_store::Error> {
        let prefix = info.key_prefix();
        if self.is_ready(&prefix) {
            return Ok(());
        }
        let lock = {
            let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(loads.entry(prefix.clone()).or_default())
        };
        let _loading = lock.lock().await;
        if self.is_ready(&prefix) {
            return Ok(());
        }
        self.write().resources.insert(prefix.clone(), Resource::Loading(Vec::new()));
        let page = match self.store.list(&prefix, None, None).await {
            Ok(page) => page,
            Err(e) => {
                self.write().resources.remove(&prefix);
                return Err(e);
            }
        };
        let mut items = Items {
            entries: page.items.into_iter().map(|kv| (kv.key.clone(), Arc::new(Entry::from_kv(kv)))).collect(),
            changed_at: page.revision,
        };
        // The read may be a few commits ahead of the feed (a commit is visible to readers just
        // before it is published); once the feed has caught up, the pending commits after the
        // read complete it.
        loop {
            {
                let mut state = self.write();
                if state.revision >= page.revision {
                    if let Some(Resource::Loading(pending)) = state.resources.remove(&prefix) {
                        for event in pending.iter().filter(|e| e.revision > page.revision) {
                            items.apply(event);
                        }
                    }
                    state.resources.insert(prefix, Resource::Ready(items));
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The held entry at `key`: `None` when the resource is not loaded (ask the store).
    pub fn get(&self, info: &ResourceInfo, key: &str) -> Option<Option<Arc<Entry>>> {
        match self.read().resources.get(&info.key_prefix()) {
            Some(Resource::Ready(items)) => Some(items.entries.get(key).cloned()),
            _ => None,
        }
    }

    /// The entries under `prefix` after `start_after`, at `at` (None: the latest). `None`
    /// when the cache cannot tell that revision (the resource changed since), or the
    /// resource is not loaded.
    pub fn snapshot(
        &self,
        info: &ResourceInfo,
        prefix: &str,
        start_after: Option<&str>,
        at: Option<Revision>,
    ) -> Option<Snapshot> {
        let state = self.read();
        let Some(Resource::Ready(items)) = state.resources.get(&info.key_prefix()) else { return None };
        let revision = match at {
            None => state.revision,
            Some(at) if at >= items.changed_at && at <= state.revision => at,
            Some(_) => return None,
        };
        let lower = match start_after {
            Some(key) if key >= prefix => Bound::Excluded(key),
            _ => Bound::Included(prefix),
        };
        let entries = items
            .entries
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, entry)| Arc::clone(entry))
            .collect();
        Some(Snapshot { entries, revision })
    }

    /// The store's revision every held resource is current to.
    pub fn revision(&self) -> Revision {
        self.read().revision
    }

    /// Objects and stored bytes held, for tests and memory figures.
    pub fn stats(&self) -> (usize, usize) {
        let state = self.read();
        state
            .resources
            .values()
            .filter_map(|r| match r {
                Resource::Ready(items) => Some(items),
                Resource::Loading(_) => None,
            })
            .flat_map(|items| items.entries.values())
            .fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.value.len()))
    }
}

/// Entries from a store read (when the cache cannot serve a revision).
pub fn entries_of(items: Vec<KeyValue>) -> Vec<Arc<Entry>> {
    items.into_iter().map(|kv| Arc::new(Entry::from_kv(kv))).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_core::Registry;
    use serde_json::{Value, json};

    fn info(plural: &str) -> ResourceInfo {
        Registry::with_builtins().get("", "v1", plural).unwrap().clone()
    }

    fn served(info: &ResourceInfo, stored: &[u8]) -> Value {
        let entry = Entry::new("/k".into(), Bytes::copy_from_slice(stored), 7);
        let mut out = Vec::new();
        entry.write_json(info, &item_head(info), &mut out).unwrap();
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn served_items_equal_the_decoded_objects() {
        let cm = info("configmaps");
        for stored in [
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "default", "labels": {"x": "1"}, "uid": "u"},
                "data": {"k": "v \"quoted\" \u{e9}"}}),
            json!({"data": {"k": "v"}, "kind": "ConfigMap", "metadata": {}, "apiVersion": "v1", "immutable": true}),
            json!({"data": {"k": "v"}}),
            json!({"metadata": {"name": "a"}, "we\"ird": 1}),
            json!({"metadata": {"name": "a", "resourceVersion": "3"}}),
        ] {
            let bytes = serde_json::to_vec(&stored).unwrap();
            let expected = crate::objects::decode_value(&cm, &Bytes::from(bytes.clone()), 7).unwrap();
            assert_eq!(served(&cm, &bytes), expected, "{stored}");
        }
        // Whitespace in stored bytes (not written by this server) is served as it is.
        let spaced = br#"{ "kind" : "ConfigMap", "metadata" : { "name" : "a" } , "data" : {"k":"v"} }"#;
        let expected = crate::objects::decode_value(&cm, &Bytes::from_static(spaced), 7).unwrap();
        assert_eq!(served(&cm, spaced), expected);
    }

    #[test]
    fn selectors_match_from_derived_fields() {
        let pods = info("pods");
        let stored = json!({"metadata": {"name": "p", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        let entry = Entry::new("/k".into(), Bytes::from(serde_json::to_vec(&stored).unwrap()), 3);
        let opts = |labels: &str, fields: &str| ListOptions {
            labels: berth_core::selector::LabelSelector::parse(labels).unwrap(),
            fields: berth_core::selector::FieldSelector::parse(fields).unwrap(),
            ..ListOptions::default()
        };
        assert!(entry.matches(&pods, &opts("app=web", "spec.nodeName=n1,status.phase=Running")).unwrap());
        assert!(entry.matches(&pods, &opts("", "spec.hostNetwork=true,metadata.namespace=d")).unwrap());
        assert!(!entry.matches(&pods, &opts("app=db", "")).unwrap());
        assert!(!entry.matches(&pods, &opts("", "status.podIP!=")).unwrap());
        assert!(entry.matches(&pods, &opts("", "spec.schedulerName=")).unwrap());
        // A field pods do not index is read from the whole object.
        assert!(entry.matches(&pods, &opts("", "spec.nodeName=n1,status.phase!=Failed")).unwrap());
    }

    #[test]
    fn resource_prefixes() {
        assert_eq!(resource_prefix("/registry/core/pods/default/a"), "/registry/core/pods/");
        assert_eq!(resource_prefix("/registry/apps/deployments/ns/web"), "/registry/apps/deployments/");
        assert_eq!(resource_prefix("/registry/core/namespaces/demo"), "/registry/core/namespaces/");
    }
}
