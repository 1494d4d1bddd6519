//! CustomResourceDefinitions: registering their resources when they are written, marking
//! them Established, and removing their objects when they are deleted.

use axum::response::Response;
use berth_core::{ApiError, ResourceInfo};
use http::StatusCode;
use serde_json::{Value, json};

use crate::{
    handlers::{Shared, json_response},
    objects::{DeleteOptions, FieldValidation, ListOptions, WriteOptions, meta_str, now_rfc3339},
    subresources::set_condition,
};

/// Registers the CRD's resources and records `Established` in its status.
pub async fn established(state: &Shared, crd: &Value) {
    state.objects.register_crd(crd);
    let Some(name) = meta_str(crd, "name").map(str::to_owned) else { return };
    let Some(info) = state.objects.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions") else { return };
    let opts = WriteOptions { dry_run: false, field_validation: FieldValidation::Ignore };
    let result = state
        .objects
        .guaranteed_update(&info, None, &name, Some("status"), &opts, |old| {
            let mut obj = old.clone();
            let now = now_rfc3339();
            let names = old.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
            let storage: Vec<Value> = old
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect();
            let already = old
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
            if already && old.pointer("/status/acceptedNames") == Some(&names) {
                return Ok(obj);
            }
            obj["status"] = json!({"acceptedNames": names, "storedVersions": storage, "conditions": []});
            for ty in ["NamesAccepted", "Established"] {
                let reason = if ty == "Established" { "InitialNamesAccepted" } else { "NoConflicts" };
                set_condition(
                    &mut obj,
                    json!({"type": ty, "status": "True", "reason": reason, "message": "", "lastTransitionTime": now}),
                );
            }
            Ok(obj)
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(crd = %name, error = %e, "could not mark CustomResourceDefinition established");
    }
}

/// Deletes a CRD together with every object of its kind.
pub async fn delete(
    state: &Shared,
    info: &ResourceInfo,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Response, ApiError> {
    let crd = state.objects.get(info, None, name).await?;
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default().to_owned();
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default().to_owned();
    let versions: Vec<String> = state.objects.registry().versions(&group);
    if let Some(v) = versions.first()
        && let Some(cr_info) = state.objects.lookup(&group, v, &plural)
    {
        let del = DeleteOptions { propagation: Some("Background".into()), ..DeleteOptions::default() };
        state.objects.delete_collection(&cr_info, None, &ListOptions::default(), &del).await?;
    }
    let deleted = state.objects.delete(info, None, name, opts).await?;
    state.objects.unregister_crd(&crd);
    Ok(json_response(StatusCode::OK, &deleted))
}

/// Registers every stored CRD (at start-up).
pub async fn load_all(state: &Shared) -> Result<(), ApiError> {
    let Some(info) = state.objects.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
        return Ok(());
    };
    let page = state.objects.list(&info, None, &ListOptions::default()).await?;
    for crd in &page.items {
        state.objects.register_crd(crd);
    }
    Ok(())
}
