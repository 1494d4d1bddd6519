//! Patch semantics on `serde_json::Value`.
//!
//! - [`strategic_merge`]: Kubernetes' strategic merge patch. No crate implements it, so it
//!   is written here, following the rules of apimachinery's `pkg/util/strategicpatch`.
//! - [`merge_patch`]: RFC 7386 JSON merge patch.
//! - [`apply_merge`]: the merge used by server-side apply without field ownership.
//!
//! The patch metadata (strategies, merge keys) of the built-in kinds lives in [`schema`].

use serde_json::Value;

mod merge;
pub mod schema;
mod strategic;
mod value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
}

/// Applies a strategic merge patch for an object of `kind` in `api_version` (`apps/v1`).
///
/// Kinds outside the built-in table (see [`supports_strategic`]) are patched without schema:
/// objects merge recursively and lists are replaced. The API server answers 415 for those
/// instead of calling this.
pub fn strategic_merge(api_version: &str, kind: &str, original: &Value, patch: &Value) -> Result<Value, Error> {
    strategic::apply(original, patch, schema::root_type(api_version, kind))
}

/// Whether `strategic_merge` knows the schema of this kind (false for custom resources).
pub fn supports_strategic(api_version: &str, kind: &str) -> bool {
    schema::root_type(api_version, kind).is_some()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    merge::merge_patch(original.clone(), patch)
}

/// Server-side apply's merge: `applied` merged into `live`, lists with merge keys merged
/// by key, other lists replaced.
pub fn apply_merge(api_version: &str, kind: &str, live: &Value, applied: &Value) -> Result<Value, Error> {
    merge::apply(live, applied, schema::root_type(api_version, kind))
}
