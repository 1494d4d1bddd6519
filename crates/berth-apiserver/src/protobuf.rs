//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which typed
//! client-go clients (e.g. `kubectl create namespace`) send with no JSON fallback.

use berth_core::ApiError;
use serde_json::Value;

/// The 4-byte magic that starts every Kubernetes protobuf envelope.
pub const MAGIC: &[u8] = b"k8s\0";

pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    if !body.starts_with(MAGIC) {
        return Err(ApiError::bad_request("protobuf body does not start with the k8s envelope magic"));
    }
    Err(ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf"))
}
