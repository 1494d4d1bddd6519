//! Admission on create: LimitRange defaults and bounds for pods (upstream's `LimitRanger`),
//! and ResourceQuota enforcement with `status.used` kept current (upstream's
//! `ResourceQuota` admission, with usage computed from the stored objects).

use std::collections::BTreeMap;

use berth_core::{
    ApiError, ResourceInfo,
    validation::{Quantity, parse_quantity},
};
use serde_json::{Map, Value, json};

use crate::objects::{FieldValidation, ListOptions, Objects, WriteOptions, meta_str};

fn quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => parse_quantity(s).ok(),
        Value::Number(n) => parse_quantity(&n.to_string()).ok(),
        _ => None,
    }
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
}

async fn list_in(objects: &Objects, plural: &str, ns: &str) -> Result<Vec<Value>, ApiError> {
    let Some(info) = objects.lookup("", "v1", plural) else { return Ok(Vec::new()) };
    Ok(objects.list(&info, Some(ns), &ListOptions::default()).await?.items)
}

/// The LimitRanges of a namespace, for [`apply_limit_ranges`].
pub async fn limit_ranges(objects: &Objects, ns: &str) -> Result<Vec<Value>, ApiError> {
    list_in(objects, "limitranges", ns).await
}

/// Fills container `default` limits and `defaultRequest` requests from every
/// `type: Container` item of the namespace's LimitRanges into a pod that lacks them.
pub fn apply_limit_ranges(pod: &mut Value, ranges: &[Value]) {
    let items: Vec<&Value> = ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
        .collect();
    if items.is_empty() {
        return;
    }
    for key in ["containers", "initContainers"] {
        let Some(list) = pod.pointer_mut(&format!("/spec/{key}")).and_then(Value::as_array_mut) else { continue };
        for c in list {
            let Some(c) = c.as_object_mut() else { continue };
            let resources = c.entry("resources").or_insert_with(|| json!({}));
            let Some(resources) = resources.as_object_mut() else { continue };
            for item in &items {
                for (from, to) in [("default", "limits"), ("defaultRequest", "requests")] {
                    let Some(defaults) = item.get(from).and_then(Value::as_object) else { continue };
                    let target = resources.entry(to).or_insert_with(|| json!({}));
                    if let Some(target) = target.as_object_mut() {
                        for (res, q) in defaults {
                            target.entry(res.clone()).or_insert_with(|| q.clone());
                        }
                    }
                }
            }
            // A request defaulted above a limit the user set would be invalid; upstream
            // leaves such pods to validation, which reports it.
        }
    }
}

/// Checks a pod's containers against LimitRange `min`/`max` (403 as upstream).
pub fn check_limit_ranges(info: &ResourceInfo, pod: &Value, ranges: &[Value]) -> Result<(), ApiError> {
    let name = meta_str(pod, "name").unwrap_or_default();
    for item in ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
    {
        for c in containers(pod) {
            for (bound, field, word) in [("max", "limits", "maximum"), ("min", "requests", "minimum")] {
                let Some(bounds) = item.get(bound).and_then(Value::as_object) else { continue };
                for (res, b) in bounds {
                    let (Some(b), Some(v)) =
                        (quantity(b), c.pointer(&format!("/resources/{field}/{res}")).and_then(quantity))
                    else {
                        continue;
                    };
                    let over = if bound == "max" { v.cmp_value(&b).is_gt() } else { v.cmp_value(&b).is_lt() };
                    if over {
                        let kind = if bound == "max" { "limit" } else { "request" };
                        return Err(ApiError::forbidden(
                            info,
                            name,
                            &format!(
                                "{word} {res} usage per Container is {}, but {kind} is {}",
                                b.canonical(),
                                v.canonical()
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn pod_is_terminal(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded") | Some("Failed"))
}

/// A pod's compute usage for a quota resource name (`requests.cpu`, `cpu`, `limits.memory`):
/// the sum over its containers, or the largest init container if that is more.
fn pod_compute(pod: &Value, resource: &str) -> Option<Quantity> {
    let (field, res) = match resource.split_once('.') {
        Some(("requests", r)) => ("requests", r),
        Some(("limits", r)) => ("limits", r),
        None if matches!(resource, "cpu" | "memory" | "ephemeral-storage") => ("requests", resource),
        _ => return None,
    };
    let get = |c: &Value| c.pointer(&format!("/resources/{field}/{res}")).and_then(quantity);
    let mut sum = Quantity::zero();
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        if let Some(q) = get(c) {
            sum = sum.add(&q)?;
        }
    }
    for c in pod.pointer("/spec/initContainers").and_then(Value::as_array).into_iter().flatten() {
        if let Some(q) = get(c)
            && q.cmp_value(&sum).is_gt()
        {
            sum = q;
        }
    }
    Some(sum)
}

/// Which stored objects a quota resource name counts, as (group, plural).
fn counted(resource: &str) -> Option<(String, String)> {
    match resource {
        "pods" | "services" | "secrets" | "configmaps" | "persistentvolumeclaims" | "resourcequotas" => {
            Some((String::new(), resource.to_owned()))
        }
        "services.nodeports" | "services.loadbalancers" => None,
        _ => {
            let r = resource.strip_prefix("count/")?;
            match r.split_once('.') {
                Some((plural, group)) => Some((group.to_owned(), plural.to_owned())),
                None => Some((String::new(), r.to_owned())),
            }
        }
    }
}

/// The usage of each resource in `hard` within `ns`, plus what `new` (of resource `info`)
/// adds if it is created.
async fn usage(
    objects: &Objects,
    ns: &str,
    hard: &Map<String, Value>,
    info: &ResourceInfo,
    new: Option<&Value>,
) -> Result<(BTreeMap<String, Quantity>, BTreeMap<String, Quantity>), ApiError> {
    let mut used = BTreeMap::new();
    let mut requested = BTreeMap::new();
    let mut pods: Option<Vec<Value>> = None;
    for resource in hard.keys() {
        if let Some((group, plural)) = counted(resource) {
            let version = objects.registry().versions(&group).first().cloned().unwrap_or_else(|| "v1".into());
            let n = match objects.lookup(&group, &version, &plural) {
                Some(ri) => {
                    let items = objects.list(&ri, Some(ns), &ListOptions::default()).await?.items;
                    items.iter().filter(|o| !(plural == "pods" && group.is_empty() && pod_is_terminal(o))).count()
                }
                None => 0,
            };
            used.insert(resource.clone(), parse_quantity(&n.to_string()).unwrap_or_else(|_| Quantity::zero()));
            if info.gvk.group == group && info.plural == plural && new.is_some() {
                requested.insert(resource.clone(), parse_quantity("1").unwrap_or_else(|_| Quantity::zero()));
            }
        } else if pod_compute(&json!({}), resource).is_some() {
            if pods.is_none() {
                pods = Some(list_in(objects, "pods", ns).await?);
            }
            let mut sum = Quantity::zero();
            for p in pods.iter().flatten().filter(|p| !pod_is_terminal(p)) {
                if let Some(q) = pod_compute(p, resource) {
                    sum = sum.add(&q).unwrap_or(sum);
                }
            }
            used.insert(resource.clone(), sum);
            if let Some(pod) = new.filter(|_| info.gvk.group.is_empty() && info.plural == "pods")
                && let Some(q) = pod_compute(pod, resource)
            {
                requested.insert(resource.clone(), q);
            }
        }
    }
    Ok((used, requested))
}

fn render(map: &BTreeMap<String, Quantity>, keys: &[String]) -> String {
    keys.iter().filter_map(|k| map.get(k).map(|q| format!("{k}={}", q.canonical()))).collect::<Vec<_>>().join(",")
}

/// Whether `ns` has any ResourceQuota.
pub async fn has_quotas(objects: &Objects, ns: &str) -> Result<bool, ApiError> {
    Ok(!list_in(objects, "resourcequotas", ns).await?.is_empty())
}

/// Rejects a create that would exceed a ResourceQuota of its namespace, with upstream's
/// message: `exceeded quota: <name>, requested: ..., used: ..., limited: ...`.
pub async fn check_quota(objects: &Objects, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let Some(ns) = meta_str(obj, "namespace").filter(|_| info.namespaced()) else { return Ok(()) };
    let quotas = list_in(objects, "resourcequotas", ns).await?;
    let name = meta_str(obj, "name").unwrap_or_default();
    for quota in &quotas {
        let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object) else { continue };
        let qname = meta_str(quota, "name").unwrap_or_default();
        // Pods must state what a quota on their compute resources tracks.
        if info.gvk.group.is_empty() && info.plural == "pods" {
            let mut missing: Vec<String> = Vec::new();
            for resource in hard.keys() {
                let Some((field, res)) = resource.split_once('.') else { continue };
                if !matches!(field, "requests" | "limits") || !matches!(res, "cpu" | "memory") {
                    continue;
                }
                let lacking: Vec<String> = obj
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| c.pointer(&format!("/resources/{field}/{res}")).is_none())
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                if !lacking.is_empty() {
                    missing.push(format!("must specify {resource} for: {}", lacking.join(",")));
                }
            }
            if !missing.is_empty() {
                return Err(ApiError::forbidden(info, name, &format!("failed quota: {qname}: {}", missing.join("; "))));
            }
        }
        let (used, requested) = usage(objects, ns, hard, info, Some(obj)).await?;
        let mut exceeded: Vec<String> = Vec::new();
        for (resource, req) in &requested {
            let (Some(limit), Some(u)) = (hard.get(resource).and_then(quantity), used.get(resource)) else { continue };
            if let Some(total) = u.add(req)
                && total.cmp_value(&limit).is_gt()
            {
                exceeded.push(resource.clone());
            }
        }
        if !exceeded.is_empty() {
            let limited: BTreeMap<String, Quantity> =
                exceeded.iter().filter_map(|r| hard.get(r).and_then(quantity).map(|q| (r.clone(), q))).collect();
            return Err(ApiError::forbidden(
                info,
                name,
                &format!(
                    "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    render(&requested, &exceeded),
                    render(&used, &exceeded),
                    render(&limited, &exceeded)
                ),
            ));
        }
    }
    Ok(())
}

/// Recomputes `status.hard` and `status.used` of every quota in `ns` (after writes that
/// change usage, and when a quota itself is written). One recount at a time per namespace,
/// each counting after it holds the lock: run side by side, a recount that counted before a
/// write could store its stale count after the recount that followed the write (in CI a
/// quota's `used` never reached the 4 pods there were). Serialised, the last to run counts after
/// every write so far.
pub async fn refresh_quotas(objects: &Objects, ns: &str) {
    let lock = objects.quota_recount_lock(ns);
    let _recounting = lock.lock().await;
    let Some(qinfo) = objects.lookup("", "v1", "resourcequotas") else { return };
    let Ok(quotas) = list_in(objects, "resourcequotas", ns).await else { return };
    let opts = WriteOptions { dry_run: false, field_validation: FieldValidation::Ignore };
    for quota in quotas {
        let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object).cloned() else { continue };
        let Ok((used, _)) = usage(objects, ns, &hard, &qinfo, None).await else { continue };
        let used: Map<String, Value> = used.into_iter().map(|(k, q)| (k, json!(q.canonical()))).collect();
        let status = json!({"hard": hard, "used": used});
        if quota.get("status") == Some(&status) {
            continue;
        }
        let name = meta_str(&quota, "name").unwrap_or_default().to_owned();
        let result = objects
            .guaranteed_update(&qinfo, Some(ns), &name, Some("status"), &opts, |old| {
                let mut q = old.clone();
                q["status"] = status.clone();
                Ok(q)
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(quota = %name, error = %e, "could not update quota status");
        }
    }
}

/// Whether writes of this resource change what quotas count.
pub fn affects_quota(info: &ResourceInfo) -> bool {
    info.namespaced() && !(info.gvk.group.is_empty() && info.plural == "events")
}
