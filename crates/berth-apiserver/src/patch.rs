//! PATCH: JSON patch, JSON merge patch, strategic merge patch and server-side apply,
//! applied as a read-modify-write that retries on conflicts.

use berth_core::{ApiError, FieldError, ResourceInfo};
use http::{HeaderMap, header};
use serde_json::Value;

use crate::{
    handlers::{AppState, Query, decode_yaml},
    objects::{FieldValidation, WriteOptions},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match ct.as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn invalid_patch(info: &ResourceInfo, name: &str, detail: String) -> ApiError {
    ApiError::invalid(
        info,
        name,
        vec![FieldError { reason: "FieldValueInvalid", field: "patch".into(), message: detail }],
    )
}

/// Applies a patch of the body's type to `old`.
pub fn apply_patch(
    info: &ResourceInfo,
    name: &str,
    pt: PatchType,
    old: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    match pt {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| invalid_patch(info, name, e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => Ok(berth_patch::merge_patch(old, patch)),
        PatchType::Strategic => berth_patch::strategic_merge(&info.gvk.api_version(), &info.gvk.kind, old, patch)
            .map_err(|e| invalid_patch(info, name, e.to_string())),
        PatchType::Apply => berth_patch::apply_merge(&info.gvk.api_version(), &info.gvk.kind, old, patch)
            .map_err(|e| invalid_patch(info, name, e.to_string())),
    }
}

/// Unknown-field checks of a patch are reported as `Invalid` on the `patch` field, as
/// upstream does, rather than as BadRequest.
fn patch_write_options(opts: &WriteOptions) -> WriteOptions {
    opts.clone()
}

fn rewrap_strict(info: &ResourceInfo, name: &str, e: ApiError) -> ApiError {
    if e.code == 400 && e.message.contains("strict decoding error") {
        let detail = e.message.split("strict decoding error: ").nth(1).unwrap_or(&e.message).to_owned();
        return invalid_patch(info, name, detail);
    }
    e
}

/// PATCH of an object or subresource. Returns the result, warnings, and whether the
/// object was created (server-side apply of a missing object).
#[allow(clippy::too_many_arguments)]
pub async fn patch(
    state: &AppState,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    q: &Query,
    opts: &WriteOptions,
) -> Result<(Value, Vec<String>, bool), ApiError> {
    let pt = patch_type(headers)?;
    if pt == PatchType::Strategic
        && (info.custom || !berth_patch::supports_strategic(&info.gvk.api_version(), &info.gvk.kind))
    {
        return Err(ApiError::unsupported_media_type("application/strategic-merge-patch+json"));
    }
    let patch_doc: Value = if pt == PatchType::Apply {
        decode_yaml(body)?
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch body: {e}")))?
    };
    if pt == PatchType::Apply && q.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    if pt != PatchType::Json && !patch_doc.is_object() {
        return Err(ApiError::bad_request("the patch body must be a JSON object"));
    }
    let objects = &state.objects;
    let wopts = patch_write_options(opts);
    if pt == PatchType::Apply && sub.is_none() {
        match objects.get(info, ns, name).await {
            Err(e) if e.code == 404 => {
                let mut obj = patch_doc.clone();
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("name".into(), Value::String(name.to_owned()));
                }
                let create_opts = WriteOptions {
                    dry_run: opts.dry_run,
                    field_validation: if opts.field_validation == FieldValidation::Strict {
                        FieldValidation::Strict
                    } else {
                        opts.field_validation
                    },
                };
                let (created, warnings) = objects.create(info, ns, obj, &create_opts).await?;
                return Ok((created, warnings, true));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    let (obj, warnings) = objects
        .guaranteed_update(info, ns, name, sub, &wopts, |old| apply_patch(info, name, pt, old, &patch_doc))
        .await
        .map_err(|e| rewrap_strict(info, name, e))?;
    Ok((obj, warnings, false))
}
