//! Per-kind validation, as upstream's `pkg/apis/*/validation` do where a user would notice,
//! and detection of fields unknown to a kind's schema (for `fieldValidation=Strict`).

pub(crate) mod json;
mod quantity;

use serde_json::Value;

use crate::{registry::GroupVersionKind, status::FieldError};

pub use quantity::{Quantity, QuantityError, QuantityFormat, parse_quantity};

/// Validates a whole object of kind `gvk`. `old` is the stored object on update.
pub fn validate(_gvk: &GroupVersionKind, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    Vec::new()
}

/// The body could not be decoded as the kind at all (a wrong type for a field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub message: String,
}

/// Paths (`spec.foo`, `spec.template.spec.containers[0].bar`) present in `obj` but not in
/// the schema of `gvk`. Unknown kinds (custom resources) have no unknown fields here.
pub fn unknown_fields(_gvk: &GroupVersionKind, _obj: &Value) -> Result<Vec<String>, DecodeError> {
    Ok(Vec::new())
}
