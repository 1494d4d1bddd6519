//! The object layer between HTTP handlers and the store: what every create, update and
//! delete does to an object's metadata (uid, timestamps, generation, resourceVersion,
//! finalizers), defaulting and validation, and the per-kind rules upstream applies in its
//! registry strategies.
//!
//! Invariant: stored values never carry `metadata.resourceVersion`; it is always the
//! store's `mod_revision` and is filled in on read.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use berth_core::{
    ApiError, FieldError, GroupVersionKind, Registry, ResourceInfo, defaults,
    selector::{FieldSelector, LabelSelector},
    status::success_status,
    validation,
};
use berth_store::{DynStore, Error as StoreError, KeyValue, Revision};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use rand::Rng;

use crate::cache::{Cache, Entry, entries_of};
use crate::service_ranges::ServiceRanges;
use serde_json::{Map, Value, json};

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Options common to writes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

/// What a list request asks for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    /// Continue after this key (from a continue token).
    pub continue_key: Option<String>,
    /// The continue token's revision: the list goes on at it (None: at the latest one).
    pub continue_revision: Option<Revision>,
    pub revision: ListRevision,
}

/// `resourceVersion` and `resourceVersionMatch` of a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListRevision {
    /// `""`: the latest state (a consistent read).
    #[default]
    Latest,
    /// `"0"`: any state; served from the cache, which is the latest.
    Any,
    /// `N` (or `resourceVersionMatch=NotOlderThan`): a state at least as new as N.
    NotOlderThan(Revision),
    /// `resourceVersionMatch=Exact`: the state at N.
    Exact(Revision),
}

/// The objects a list returns (in key order), its revision and the key to continue after.
pub struct Selected {
    pub entries: Vec<Arc<Entry>>,
    pub revision: Revision,
    pub continue_key: Option<String>,
}

pub struct ListPage {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_key: Option<String>,
}

/// `DeleteOptions` that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

pub struct Objects {
    pub store: DynStore,
    /// The current objects of every resource read so far (see `cache.rs`).
    pub cache: Cache,
    pub registry: RwLock<Registry>,
    /// One lock per namespace that has ResourceQuotas, held across check and create.
    quota_locks: NamespaceLocks,
    /// One lock per namespace written to, held by a recount of its quotas' usage: two recounts
    /// at once could end with the older count written last.
    quota_recount_locks: NamespaceLocks,
    /// Where Services get cluster IPs and NodePorts from.
    pub service_ranges: ServiceRanges,
}

type NamespaceLocks = std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

fn namespace_lock(locks: &NamespaceLocks, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = match locks.lock() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    };
    Arc::clone(locks.entry(ns.to_owned()).or_default())
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn store_err(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(info, name),
        StoreError::NotFound(_) => ApiError::not_found(info, name),
        StoreError::Conflict { .. } => ApiError::conflict(info, name),
        StoreError::Compacted { requested, compacted } => {
            ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
        }
        other => {
            tracing::error!(error = %other, "store failure");
            ApiError::internal(other.to_string())
        }
    }
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object)
        && let Some(o) = obj.as_object_mut()
    {
        o.insert("metadata".into(), json!({}));
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable_meta(),
    }
}

#[allow(clippy::panic)]
fn unreachable_meta() -> ! {
    // meta_mut is only called on JSON objects, which the handlers check first.
    panic!("object is not a JSON object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The parts of an object that count as its spec for `generation`.
fn spec_part(obj: &Value) -> Value {
    match obj.as_object() {
        Some(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => Value::Null,
    }
}

fn tracks_generation(obj: &Value) -> bool {
    obj.get("spec").is_some()
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_suffix() -> String {
    let mut rng = rand::rng();
    (0..5).map(|_| GENERATE_ALPHABET[rng.random_range(0..GENERATE_ALPHABET.len())] as char).collect()
}

impl Objects {
    pub fn new(store: DynStore, registry: Registry) -> Self {
        Self::with_service_ranges(store, registry, ServiceRanges::default())
    }

    pub fn with_service_ranges(store: DynStore, registry: Registry, service_ranges: ServiceRanges) -> Self {
        let cache = Cache::new(Arc::clone(&store));
        Self {
            store,
            cache,
            registry: RwLock::new(registry),
            quota_locks: Default::default(),
            quota_recount_locks: Default::default(),
            service_ranges,
        }
    }

    fn quota_lock(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        namespace_lock(&self.quota_locks, ns)
    }

    /// Held while the usage of the quotas in `ns` is recounted and written.
    pub(crate) fn quota_recount_lock(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        namespace_lock(&self.quota_recount_locks, ns)
    }

    pub fn registry(&self) -> Registry {
        match self.registry.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        match self.registry.write() {
            Ok(mut r) => f(&mut r),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        match self.registry.read() {
            Ok(r) => r.get(group, version, plural).cloned(),
            Err(poisoned) => poisoned.into_inner().get(group, version, plural).cloned(),
        }
    }

    /// Parses a stored value and fills in `resourceVersion`, `apiVersion` and `kind`.
    pub fn decode(&self, info: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
        decode_value(info, &kv.value, kv.mod_revision)
    }

    /// A key's current value: from the cache when the resource is held there, else the store.
    async fn read_key(&self, info: &ResourceInfo, key: &str, name: &str) -> Result<Option<KeyValue>, ApiError> {
        match self.cache.get(info, key) {
            Some(entry) => Ok(entry.map(|e| e.to_kv())),
            None => self.store.get(key).await.map_err(|e| store_err(info, name, e)),
        }
    }

    pub async fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = info.key(ns, name);
        match self.read_key(info, &key, name).await? {
            Some(kv) => self.decode(info, &kv),
            None => Err(ApiError::not_found(info, name)),
        }
    }

    pub async fn list(&self, info: &ResourceInfo, ns: Option<&str>, opts: &ListOptions) -> Result<ListPage, ApiError> {
        let selected = self.select(info, ns, opts).await?;
        let items = selected.entries.iter().map(|e| e.decode(info)).collect::<Result<Vec<_>, _>>()?;
        Ok(ListPage { items, revision: selected.revision, continue_key: selected.continue_key })
    }

    /// The entries a list returns, in key order, with its revision and continue key: from the
    /// cache, or for a revision the cache can no longer tell (a continue token's or an exact
    /// `resourceVersion` older than the resource's last change), from the store's history.
    pub async fn select(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Selected, ApiError> {
        let prefix = info.namespace_prefix(ns);
        self.cache.ensure(info).await.map_err(|e| store_err(info, "", e))?;
        let continuing = opts.continue_key.is_some();
        let at = match opts.revision {
            _ if continuing => opts.continue_revision,
            ListRevision::Exact(at) => Some(at),
            ListRevision::NotOlderThan(at) => {
                let current = self.cache.revision();
                if at > current {
                    return Err(ApiError::too_large_resource_version(at, current));
                }
                None
            }
            ListRevision::Latest | ListRevision::Any => None,
        };
        let start_after = opts.continue_key.as_deref();
        let snapshot = match self.cache.snapshot(info, &prefix, start_after, at) {
            Some(snapshot) => snapshot,
            None => {
                let at = at.unwrap_or_else(|| self.cache.revision());
                match self.store.list_at(&prefix, start_after, None, at).await {
                    Ok(page) => crate::cache::Snapshot { entries: entries_of(page.items), revision: page.revision },
                    Err(StoreError::Compacted { .. }) if continuing => {
                        let token = encode_continue(start_after.unwrap_or_default(), None);
                        return Err(ApiError::expired_continue(token));
                    }
                    Err(StoreError::FutureRevision { requested, current }) => {
                        return Err(ApiError::too_large_resource_version(requested, current));
                    }
                    Err(e) => return Err(store_err(info, "", e)),
                }
            }
        };
        // A name selector needs only the keys that end in it.
        let only_name = opts.fields.required_value("metadata.name").map(|n| format!("/{n}"));
        let mut entries = Vec::new();
        let mut rest = snapshot.entries.into_iter();
        for entry in rest.by_ref() {
            if only_name.as_deref().is_some_and(|n| !entry.key.ends_with(n)) {
                continue;
            }
            if entry.matches(info, opts)? {
                entries.push(entry);
                if opts.limit.is_some_and(|l| entries.len() >= l) {
                    break;
                }
            }
        }
        // More keys after a full page (matching or not) make a continue token, as upstream.
        let continue_key = match (opts.limit, entries.last()) {
            (Some(l), Some(last)) if entries.len() >= l && rest.next().is_some() => Some(last.key.clone()),
            _ => None,
        };
        Ok(Selected { entries, revision: snapshot.revision, continue_key })
    }

    async fn check_namespace(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| info.namespaced()) else { return Ok(()) };
        let ns_info = self.lookup("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
        // Namespaces are few and read by every create: always from the cache.
        self.cache.ensure(&ns_info).await.map_err(|e| store_err(&ns_info, ns, e))?;
        let nsobj = self.get(&ns_info, None, ns).await?;
        if nsobj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::forbidden(
                info,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            ));
        }
        Ok(())
    }

    /// Checks `apiVersion`/`kind` of a body against the URL's resource.
    pub fn check_type(&self, info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
        let Some(o) = obj.as_object_mut() else {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        };
        let want_av = info.gvk.api_version();
        match o.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("apiVersion".into(), json!(want_av));
            }
            Some(av) if av != want_av => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
            _ => {}
        }
        match o.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                o.insert("kind".into(), json!(info.gvk.kind));
            }
            Some(k) if k != info.gvk.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.gvk.kind
                )));
            }
            _ => {}
        }
        if o.get("metadata").is_some_and(|m| !m.is_object() && !m.is_null()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        Ok(())
    }

    /// Strict-field checks, defaults and validation shared by create and update, in
    /// upstream's order: decode (unknown fields), defaults, validation. `prepare` runs
    /// between decoding and defaulting (the create or update strategy).
    /// Returns warnings for `fieldValidation=Warn`.
    fn admit(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        prepare: impl FnOnce(&mut Value),
    ) -> Result<Vec<String>, ApiError> {
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        let mut warnings = Vec::new();
        if !info.custom {
            // A body that does not decode as the kind is rejected whatever fieldValidation says.
            let unknown = validation::unknown_fields(&info.gvk, obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {}",
                    info.gvk.kind, info.gvk.version, info.gvk.kind, e.message
                ))
            })?;
            if !unknown.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
                        return Err(ApiError::bad_request(format!(
                            "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                            info.gvk.kind,
                            info.gvk.version,
                            info.gvk.kind,
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => warnings.extend(unknown.iter().map(|f| format!("unknown field {f:?}"))),
                    FieldValidation::Ignore => {}
                }
            }
        }
        prepare(obj);
        defaults::apply(&info.gvk, obj);
        let errors = validation::validate(&info.gvk, obj, old);
        if !errors.is_empty() {
            return Err(ApiError::invalid(info, &name, errors));
        }
        Ok(warnings)
    }

    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        self.check_type(info, &mut obj)?;
        let meta = meta_mut(&mut obj);
        // Namespace from the URL; a different one in the body is an error.
        if info.namespaced() {
            let url_ns = ns.unwrap_or("default");
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(url_ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let has_name = meta.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if !has_name && let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            let name = format!("{prefix}{}", generate_suffix());
            meta.insert("name".into(), json!(name));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"] {
            meta.remove(k);
        }
        if tracks_generation(&obj) {
            meta_mut(&mut obj).insert("generation".into(), json!(1));
        } else {
            meta_mut(&mut obj).remove("generation");
        }
        let gvk = info.gvk.clone();
        let is_pod = info.gvk.group.is_empty() && info.gvk.kind == "Pod";
        let ns = meta_str(&obj, "namespace").map(str::to_owned);
        let limit_ranges = match (&ns, is_pod) {
            (Some(ns), true) => crate::admission::limit_ranges(self, ns).await?,
            _ => Vec::new(),
        };
        let warnings = self.admit(info, &mut obj, None, opts, |o| {
            crate::admission::apply_limit_ranges(o, &limit_ranges);
            defaults::prepare_for_create(&gvk, o);
        })?;
        let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
        self.check_namespace(info, ns.as_deref(), &name).await?;
        if is_pod {
            crate::admission::check_limit_ranges(info, &obj, &limit_ranges)?;
        }
        // Creates in a namespace with quotas are serialised so that concurrent creates
        // cannot each see the same usage and together exceed the quota.
        let _quota_guard = match ns.as_deref() {
            Some(ns) if crate::admission::affects_quota(info) && crate::admission::has_quotas(self, ns).await? => {
                let guard = self.quota_lock(ns).lock_owned().await;
                crate::admission::check_quota(self, info, &obj).await?;
                Some(guard)
            }
            _ => None,
        };
        self.allocate(info, &mut obj, None).await?;
        if opts.dry_run {
            return Ok((obj, warnings));
        }
        let key = info.key(ns.as_deref(), &name);
        let kv = self.store.create(&key, encode(&obj)?).await.map_err(|e| store_err(info, &name, e))?;
        set_rv(&mut obj, kv.mod_revision);
        Ok((obj, warnings))
    }

    /// Allocates cluster IPs and node ports for a Service being created, or what an updated
    /// Service (`old`) newly needs (a type change to NodePort, a new port); chosen values are
    /// checked against the ranges and the other Services.
    async fn allocate(&self, info: &ResourceInfo, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        if !(info.gvk.group.is_empty() && info.gvk.kind == "Service") {
            return Ok(());
        }
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        let namespace = meta_str(obj, "namespace").unwrap_or_default().to_owned();
        let svc_type = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
        let existing = self.list(info, None, &ListOptions::default()).await?;
        // Every other Service's allocations; this one's own (on update) are free to keep.
        let others: Vec<&Value> = existing
            .items
            .iter()
            .filter(|s| {
                !(meta_str(s, "name") == Some(name.as_str()) && meta_str(s, "namespace") == Some(namespace.as_str()))
            })
            .collect();
        let ranges = &self.service_ranges;
        let mut errors = Vec::new();
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).unwrap_or("");
        if svc_type != "ExternalName" {
            let want_ip = obj.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("").to_owned();
            let used: HashSet<String> = others
                .iter()
                .filter_map(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if want_ip.is_empty() {
                let ip = ranges
                    .allocate_ip(&used)
                    .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full".to_owned()))?;
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("clusterIP".into(), json!(ip.to_string()));
                    spec.insert("clusterIPs".into(), json!([ip.to_string()]));
                }
            } else if want_ip != "None" && want_ip != old_ip {
                if let Err(e) = ranges.check_chosen_ip(&want_ip, &used) {
                    errors.push(e);
                }
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("clusterIPs".into(), json!([want_ip]));
                }
            }
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
                spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
            }
        }
        if svc_type == "NodePort" || svc_type == "LoadBalancer" {
            let ports_of = |s: &Value| -> Vec<i64> {
                s.pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map(|ps| ps.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)).collect())
                    .unwrap_or_default()
            };
            let mut used: HashSet<i64> = others.iter().flat_map(|s| ports_of(s)).collect();
            let kept: HashSet<i64> = old.map(ports_of).unwrap_or_default().into_iter().collect();
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                // Chosen ports first, so that allocation does not hand one of them out.
                for (i, p) in ports.iter().enumerate() {
                    if let Some(n) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
                        if !kept.contains(&n)
                            && let Err(e) = ranges.check_chosen_port(i, n, &used)
                        {
                            errors.push(e);
                        }
                        used.insert(n);
                    }
                }
                for p in ports.iter_mut() {
                    if p.get("nodePort").and_then(Value::as_i64).is_none_or(|n| n == 0) {
                        let port = ranges.allocate_port(&used).ok_or_else(|| {
                            ApiError::internal("failed to allocate a nodePort: range is full".to_owned())
                        })?;
                        used.insert(port);
                        if let Some(po) = p.as_object_mut() {
                            po.insert("nodePort".into(), json!(port));
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(info, &name, errors));
        }
        Ok(())
    }

    /// Replaces an object (or one of its subresources). Returns the stored object and
    /// whether it had to be created (update of a missing object creates it for kinds
    /// that allow it, as `kubectl replace` and SSA expect).
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        self.check_type(info, &mut obj)?;
        if let Some(body_name) = meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if info.namespaced()
            && let (Some(body_ns), Some(url_ns)) = (meta_str(&obj, "namespace"), ns)
            && !body_ns.is_empty()
            && body_ns != url_ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // A resourceVersion in the body is the precondition; without one the update is
        // unconditional and a lost race is retried on the newer object, as upstream.
        self.guaranteed_update(info, ns, name, sub, opts, |_| Ok(obj.clone())).await
    }

    /// Builds the object an update stores from the old one and the request body.
    pub fn prepare_update(
        &self,
        info: &ResourceInfo,
        old: &Value,
        mut obj: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let name = meta_str(old, "name").unwrap_or_default().to_owned();
        if let Some(uid) = meta_str(&obj, "uid")
            && !uid.is_empty()
            && Some(uid) != meta_str(old, "uid")
        {
            return Err(ApiError::conflict_with(
                info,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(old, "uid").unwrap_or_default()
                ),
            ));
        }
        match sub {
            Some("status") => {
                // Only status changes through the status subresource.
                let status = obj.get("status").cloned();
                obj = old.clone();
                if let Some(o) = obj.as_object_mut() {
                    match status {
                        Some(s) => o.insert("status".into(), s),
                        None => o.remove("status"),
                    };
                }
            }
            Some("finalize") => {
                let spec_finalizers = obj.pointer("/spec/finalizers").cloned();
                obj = old.clone();
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    match spec_finalizers {
                        Some(f) => spec.insert("finalizers".into(), f),
                        None => spec.remove("finalizers"),
                    };
                }
            }
            Some(_) => {
                // Internal subresources (binding, scale) hand in a complete object.
            }
            None => {
                // The main resource does not change status for kinds with a status subresource.
                if info.has_status
                    && !(info.gvk.group.is_empty() && info.gvk.kind == "Namespace")
                    && let Some(o) = obj.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
            }
        }
        // Server-owned metadata carries over.
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        {
            let meta = meta_mut(&mut obj);
            for k in
                ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"]
            {
                match old_meta.get(k) {
                    Some(v) => meta.insert(k.into(), v.clone()),
                    None => meta.remove(k),
                };
            }
            if old_meta.get("generateName").is_some()
                && meta.get("generateName").is_none()
                && let Some(g) = old_meta.get("generateName")
            {
                meta.insert("generateName".into(), g.clone());
            }
            meta.remove("resourceVersion");
            meta.remove("managedFields");
            meta.remove("selfLink");
        }
        // A deleting object may only lose finalizers, not gain them.
        if old_meta.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
            let before: HashSet<String> = finalizers(old).into_iter().collect();
            let added: Vec<String> = finalizers(&obj).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    info,
                    &name,
                    vec![FieldError::forbidden(
                        "metadata.finalizers",
                        &format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                        ),
                    )],
                ));
            }
        }
        let warnings = if sub.is_none() {
            self.admit(info, &mut obj, Some(old), opts, |o| defaults::prepare_for_update(&info.gvk, o, old))?
        } else {
            Vec::new()
        };
        let old_gen = old.pointer("/metadata/generation").and_then(Value::as_i64);
        if tracks_generation(&obj) {
            let generation = match old_gen {
                Some(g) if spec_part(old) != spec_part(&obj) => g + 1,
                Some(g) => g,
                None => 1,
            };
            meta_mut(&mut obj).insert("generation".into(), json!(generation));
        }
        Ok((obj, warnings))
    }

    /// Stores an update computed from `old` (read at `old_rev`), or finishes a deletion when
    /// the object is deleting and has no finalizers left.
    pub async fn write_update(
        &self,
        info: &ResourceInfo,
        old: &Value,
        mut new: Value,
        old_rev: Revision,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = meta_str(old, "name").unwrap_or_default();
        let key = info.key(meta_str(old, "namespace"), name);
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        // A graceful deletion (pods) waits for its grace period: the node finishes it.
        let grace_pending =
            new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g > 0);
        if deleting && !grace_pending && finalizers(&new).is_empty() && !namespace_holds(info, &new) {
            if dry_run {
                return Ok(new);
            }
            let kv = self.store.delete(&key, Some(old_rev)).await.map_err(|e| store_err(info, name, e))?;
            set_rv(&mut new, kv.mod_revision);
            return Ok(new);
        }
        if !deleting {
            self.allocate(info, &mut new, Some(old)).await?;
        }
        let mut old_cmp = old.clone();
        strip_rv(&mut old_cmp);
        if old_cmp == new {
            // No-op updates do not bump the revision, as upstream.
            set_rv(&mut new, old_rev);
            return Ok(new);
        }
        if dry_run {
            set_rv(&mut new, old_rev);
            return Ok(new);
        }
        let kv = self.store.update(&key, encode(&new)?, Some(old_rev)).await.map_err(|e| store_err(info, name, e))?;
        set_rv(&mut new, kv.mod_revision);
        Ok(new)
    }

    /// Read-modify-write with retries on conflict, for updates, patches and subresources.
    pub async fn guaranteed_update<F>(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        opts: &WriteOptions,
        mut mutate: F,
    ) -> Result<(Value, Vec<String>), ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        let key = info.key(ns, name);
        // Retried until it commits, as upstream's GuaranteedUpdate: under many concurrent
        // writers to one key a fixed number of attempts can run out, and a patch without a
        // resourceVersion must not fail with 409 for it. Each lost race means another write to
        // this key committed, so the loop always makes progress.
        loop {
            let old_kv = self.read_key(info, &key, name).await?;
            let Some(old_kv) = old_kv else { return Err(ApiError::not_found(info, name)) };
            let old = self.decode(info, &old_kv)?;
            let mut candidate = mutate(&old)?;
            self.check_type(info, &mut candidate)?;
            // A resourceVersion in the patch is a precondition.
            if let Some(rv) = meta_str(&candidate, "resourceVersion").filter(|rv| !rv.is_empty())
                && parse_rv(rv)? != old_kv.mod_revision
            {
                return Err(ApiError::conflict(info, name));
            }
            let (new, warnings) = self.prepare_update(info, &old, candidate, sub, opts)?;
            match self.write_update(info, &old, new, old_kv.mod_revision, opts.dry_run).await {
                Err(e) if is_conflict(&e) => continue,
                other => return other.map(|v| (v, warnings)),
            }
        }
    }

    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let key = info.key(ns, name);
        for _ in 0..16 {
            let Some(kv) = self.read_key(info, &key, name).await? else {
                return Err(ApiError::not_found(info, name));
            };
            let old = self.decode(info, &kv)?;
            if let Some(uid) = &opts.precondition_uid
                && Some(uid.as_str()) != meta_str(&old, "uid")
            {
                return Err(ApiError::conflict_with(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid").unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_rv
                && parse_rv(rv)? != kv.mod_revision
            {
                return Err(ApiError::conflict_with(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let mut new = old.clone();
            strip_rv(&mut new);
            let already_deleting = old.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
            let mut graceful = false;
            let mut fins = finalizers(&old);
            match opts.propagation.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into());
                    fins.retain(|f| f != "orphan");
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => {
                    fins.push("orphan".into());
                    fins.retain(|f| f != "foregroundDeletion");
                }
                Some("Background") => fins.retain(|f| f != "orphan" && f != "foregroundDeletion"),
                _ => {}
            }
            if info.gvk.group.is_empty() && info.gvk.kind == "Pod" {
                // A pod on a node terminates gracefully; the node deletes it when done.
                let scheduled = old.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
                let terminal =
                    matches!(old.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded") | Some("Failed"));
                let grace = opts
                    .grace_period
                    .or_else(|| old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                    .unwrap_or(30);
                if scheduled && !terminal && grace > 0 {
                    graceful = true;
                    let meta = meta_mut(&mut new);
                    let current = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                    if !already_deleting || current.is_some_and(|c| grace < c) {
                        let at = Utc::now() + chrono::Duration::seconds(grace);
                        meta.insert("deletionTimestamp".into(), json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)));
                        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                }
            }
            let is_namespace = info.gvk.group.is_empty() && info.gvk.kind == "Namespace";
            if is_namespace {
                graceful = true;
                if let Some(o) = new.as_object_mut() {
                    o.insert("status".into(), json!({"phase": "Terminating"}));
                }
            }
            if !fins.is_empty() || graceful {
                let meta = meta_mut(&mut new);
                if !already_deleting && meta.get("deletionTimestamp").is_none() {
                    meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                if fins.is_empty() {
                    meta.remove("finalizers");
                } else {
                    meta.insert("finalizers".into(), json!(fins));
                }
                if opts.dry_run {
                    return Ok(new);
                }
                match self.write_update(info, &old, new, kv.mod_revision, false).await {
                    Err(e) if is_conflict(&e) => continue,
                    other => return other,
                }
            }
            if opts.dry_run {
                return Ok(old);
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(deleted) => {
                    let mut last = old;
                    set_rv(&mut last, deleted.mod_revision);
                    return Ok(last);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(info, name, e)),
            }
        }
        Err(ApiError::conflict(info, name))
    }

    /// Deletes every object matching `opts` in a collection.
    pub async fn delete_collection(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let page = self.list(info, ns, list).await?;
        let mut deleted = Vec::new();
        for item in page.items {
            let name = meta_str(&item, "name").unwrap_or_default().to_owned();
            let item_ns = meta_str(&item, "namespace").map(str::to_owned);
            match self.delete(info, item_ns.as_deref(), &name, opts).await {
                Ok(v) => deleted.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Creates the namespaces and objects every cluster starts with.
    pub async fn bootstrap(&self, api_port: u16) -> Result<(), ApiError> {
        let opts = WriteOptions { dry_run: false, field_validation: FieldValidation::Ignore };
        let ns_info = self.lookup("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
        // The creates run concurrently so that the store commits them together: on a first
        // start every durable commit is a disk flush before the API can answer.
        let namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"].map(|ns| {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let (ns_info, opts) = (&ns_info, &opts);
            async move {
                match self.create(ns_info, None, obj, opts).await {
                    Err(e) if e.reason != "AlreadyExists" => Err(e),
                    _ => Ok(()),
                }
            }
        });
        futures::future::try_join_all(namespaces).await?;
        let svc_info = self.lookup("", "v1", "services").ok_or_else(|| ApiError::internal("services missing"))?;
        let kubernetes = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": self.service_ranges.kubernetes_ip().to_string(),
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}]}});
        // Cluster DNS answers on this address itself (berth-dns), so the Service has no selector.
        let dns = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "BerthDNS"}},
            "spec": {"clusterIP": self.service_ranges.dns_ip().to_string(),
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}});
        let services =
            [("default", "kubernetes", kubernetes), ("kube-system", "kube-dns", dns)].map(|(ns, name, svc)| {
                let (svc_info, opts) = (&svc_info, &opts);
                async move {
                    match self.get(svc_info, Some(ns), name).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.code == 404 => match self.create(svc_info, Some(ns), svc, opts).await {
                            Ok(_) => Ok(()),
                            // Another range than the data dir was first started with: the address is
                            // someone else's or out of range; the Service is then allocated freely.
                            Err(e) if e.reason == "Invalid" => {
                                tracing::warn!(service = name, error = %e, "cannot keep the conventional cluster IP");
                                Ok(())
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
            });
        futures::future::try_join_all(services).await?;
        Ok(())
    }

    /// Registers the served versions of a CustomResourceDefinition object.
    pub fn register_crd(&self, crd: &Value) {
        let Some(spec) = crd.get("spec") else { return };
        let group = spec.get("group").and_then(Value::as_str).unwrap_or_default().to_owned();
        let names = spec.get("names").cloned().unwrap_or(Value::Null);
        let plural = names.get("plural").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        if group.is_empty() || plural.is_empty() || kind.is_empty() {
            return;
        }
        let singular =
            names.get("singular").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| kind.to_lowercase());
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let short_names = strings(names.get("shortNames"));
        let categories = strings(names.get("categories"));
        let scope = if spec.get("scope").and_then(Value::as_str) == Some("Cluster") {
            berth_core::Scope::Cluster
        } else {
            berth_core::Scope::Namespaced
        };
        let deleting = crd.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        self.with_registry(|r| {
            r.remove_custom(&group, &plural);
            if deleting {
                return;
            }
            for v in spec.get("versions").and_then(Value::as_array).into_iter().flatten() {
                if v.get("served").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                let Some(version) = v.get("name").and_then(Value::as_str) else { continue };
                r.insert(ResourceInfo {
                    gvk: GroupVersionKind::new(&group, version, &kind),
                    plural: plural.clone(),
                    singular: singular.clone(),
                    scope,
                    short_names: short_names.clone(),
                    categories: categories.clone(),
                    has_status: v.pointer("/subresources/status").is_some(),
                    has_scale: v.pointer("/subresources/scale").is_some(),
                    custom: true,
                    read_only: false,
                    printer_columns: printer_columns(v),
                });
            }
        });
    }

    pub fn unregister_crd(&self, crd: &Value) {
        let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default().to_owned();
        let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default().to_owned();
        self.with_registry(|r| r.remove_custom(&group, &plural));
    }
}

/// A CRD version's `additionalPrinterColumns`.
fn printer_columns(version: &Value) -> Vec<berth_core::PrinterColumn> {
    let text = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| berth_core::PrinterColumn {
            name: text(c, "name"),
            kind: text(c, "type"),
            format: text(c, "format"),
            description: text(c, "description"),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: text(c, "jsonPath"),
        })
        .collect()
}

/// A namespace is only removed once its `spec.finalizers` are empty too.
fn namespace_holds(info: &ResourceInfo, obj: &Value) -> bool {
    info.gvk.group.is_empty()
        && info.gvk.kind == "Namespace"
        && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

pub fn decode_value(info: &ResourceInfo, bytes: &Bytes, rev: Revision) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", info.plural)))?;
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(info.gvk.api_version()));
        o.insert("kind".into(), json!(info.gvk.kind));
    }
    set_rv(&mut obj, rev);
    Ok(obj)
}

fn is_conflict(e: &ApiError) -> bool {
    e.code == 409 && e.reason == "Conflict"
}

pub fn set_rv(obj: &mut Value, rev: Revision) {
    if obj.is_object() {
        meta_mut(obj).insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

fn strip_rv(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

fn encode(obj: &Value) -> Result<Bytes, ApiError> {
    let mut stored = obj.clone();
    strip_rv(&mut stored);
    serde_json::to_vec(&stored).map(Bytes::from).map_err(|e| ApiError::internal(e.to_string()))
}

/// A continue token: the key to continue after and the revision the list was read at (None:
/// continue at the latest revision, as the token of an expired one says).
pub fn encode_continue(key: &str, revision: Option<Revision>) -> String {
    use base64::Engine;
    let token = json!({"v": "berth1", "rv": revision.unwrap_or(-1), "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

pub fn decode_continue(token: &str) -> Result<(String, Option<Revision>), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: malformed token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let key = v.get("start").and_then(Value::as_str).map(str::to_owned).ok_or_else(bad)?;
    let revision = match v.get("rv") {
        None => None,
        Some(rv) => Some(rv.as_i64().ok_or_else(bad)?).filter(|rv| *rv > 0),
    };
    Ok((key, revision))
}

pub fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>().ok().filter(|r| *r >= 0).ok_or_else(|| {
        ApiError::bad_request(format!("invalid resource version {rv:?}: must be a non-negative integer"))
    })
}

/// The success body of a delete that removed the object at once, for kinds that answer
/// with a Status.
pub fn deleted_status(info: &ResourceInfo, obj: &Value) -> Value {
    success_status(json!({
        "name": meta_str(obj, "name"),
        "group": info.gvk.group,
        "kind": info.plural,
        "uid": meta_str(obj, "uid"),
    }))
}

pub type SharedObjects = Arc<Objects>;
