//! API errors and their `metav1.Status` wire form, with upstream's reasons and messages
//! (apimachinery `pkg/api/errors/errors.go`).

use serde_json::{Value, json};

use crate::registry::ResourceInfo;

/// One invalid field, as a `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueDuplicate`,
    /// `FieldValueForbidden`, `FieldValueTooLong`.
    pub reason: &'static str,
    /// JSON path such as `spec.template.spec.containers[0].name`.
    pub field: String,
    /// Full text, e.g. `Invalid value: "Web": a lowercase RFC 1123 ...`.
    pub message: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Self { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {shown}: {detail}") }
    }

    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() { "Required value".to_owned() } else { format!("Required value: {detail}") };
        Self { reason: "FieldValueRequired", field: field.into(), message }
    }

    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {}", quoted.join(", ")),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {detail}") }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self { reason: "FieldValueDuplicate", field: field.into(), message: format!("Duplicate value: {value}") }
    }

    /// Upstream's `field: message` rendering used inside `Invalid` messages.
    pub fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// An error the API returns to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed, as `list_continue`, to keep every `Result<_, ApiError>` small.
    pub details: Option<Box<Value>>,
    /// `metadata.continue` of the Status (an expired continue token's inconsistent successor).
    pub list_continue: Option<Box<str>>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self { code, reason, message, details: details.map(Box::new), list_continue: None }
    }

    /// A list continued from a revision that has been compacted (410), carrying `token`, which
    /// continues from the same key at the latest revision (upstream's wording).
    pub fn expired_continue(token: String) -> Self {
        let mut e = Self::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new \
             list without the continue parameter, or use the continue token in this response to retrieve the \
             remainder of the results. Continuing with the provided token results in an inconsistent list - objects \
             that were created, modified, or deleted between the time the first chunk was returned and now may show \
             up in the list.",
        );
        e.list_continue = Some(token.into_boxed_str());
        e
    }

    /// A list or get asking for a revision the server has not reached (504, as upstream).
    pub fn too_large_resource_version(requested: i64, current: i64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
            Some(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                        "retryAfterSeconds": 1})),
        )
    }

    fn resource_details(info: &ResourceInfo, name: &str) -> Value {
        json!({"name": name, "group": info.gvk.group, "kind": info.plural})
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", info.qualified_plural()),
            Some(Self::resource_details(info, name)),
        )
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", info.qualified_plural()),
            Some(Self::resource_details(info, name)),
        )
    }

    pub fn conflict(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                info.qualified_plural()
            ),
            Some(Self::resource_details(info, name)),
        )
    }

    pub fn conflict_with(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} {name:?}: {why}", info.qualified_plural()),
            Some(Self::resource_details(info, name)),
        )
    }

    /// 422 Invalid. `kind` is the Kind (`Deployment`), not the plural, as upstream does.
    pub fn invalid(info: &ResourceInfo, name: &str, errors: Vec<FieldError>) -> Self {
        Self::invalid_kind(&info.gvk.group, &info.gvk.kind, &info.qualified_kind(), name, errors)
    }

    pub fn invalid_kind(group: &str, kind: &str, qualified_kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let rendered: Vec<String> = errors.iter().map(FieldError::render).collect();
        let summary = if rendered.len() == 1 { rendered[0].clone() } else { format!("[{}]", rendered.join(", ")) };
        let causes: Vec<Value> =
            errors.iter().map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field})).collect();
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} {name:?} is invalid: {summary}"),
            Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into(), None)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got {content_type:?}"
            ),
            None,
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into(), None)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".to_owned(), None)
    }

    pub fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} {name:?} is forbidden: {why}", info.qualified_plural()),
            Some(Self::resource_details(info, name)),
        )
    }

    /// 403 for a request that names no particular object.
    pub fn forbidden_message(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message.into(), None)
    }

    pub fn request_entity_too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"), None)
    }

    pub fn route_not_found(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"), None)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()), None)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message.into(), None)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(obj)) = (&self.details, s.as_object_mut()) {
            obj.insert("details".to_owned(), Value::clone(details));
        }
        if let Some(token) = &self.list_continue {
            s["metadata"] = json!({"continue": &**token});
        }
        s
    }
}

/// A `Status` reporting success, as returned by some deletes.
pub fn success_status(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn messages_match_upstream() {
        let r = Registry::with_builtins();
        let d = r.get("apps", "v1", "deployments").expect("deployments");
        assert_eq!(ApiError::not_found(d, "web").message, "deployments.apps \"web\" not found");
        let p = r.get("", "v1", "pods").expect("pods");
        assert_eq!(ApiError::already_exists(p, "x").message, "pods \"x\" already exists");
        let e = ApiError::invalid(
            d,
            "web",
            vec![FieldError::invalid("spec.replicas", &json!(-1), "must be greater than or equal to 0")],
        );
        assert_eq!(
            e.message,
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(e.to_status()["details"]["causes"][0]["field"], "spec.replicas");
    }
}
