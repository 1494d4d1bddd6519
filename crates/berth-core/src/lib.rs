//! The rules of Berth's API, with no IO: which resources exist ([`registry`]), how errors
//! look on the wire ([`status`]), how selectors match ([`selector`]), what defaults and
//! validation apply to each kind ([`defaults`], [`validation`]) and how `kubectl get`
//! prints them ([`table`]).
//!
//! Objects are handled as `serde_json::Value` throughout, the way the API server stores
//! and serves them; typed `k8s-openapi` structs are used where a kind's schema matters.

pub mod defaults;
pub mod registry;
pub mod selector;
pub mod status;
pub mod table;
pub mod validation;

pub use registry::{GroupVersionKind, PrinterColumn, Registry, ResourceInfo, Scope};
pub use status::{ApiError, FieldError};
