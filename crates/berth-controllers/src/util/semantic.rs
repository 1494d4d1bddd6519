//! Semantic equality of API values, as `apiequality.Semantic.DeepEqual` treats them: a missing
//! field, `null`, an empty list and an empty map are all the same.

use serde::Serialize;
use serde_json::Value;

/// Serialises `value` and drops nulls, empty lists and empty maps, recursively.
pub fn normalized<T: Serialize>(value: &T) -> Value {
    let v = serde_json::to_value(value).unwrap_or(Value::Null);
    prune(v, false).unwrap_or(Value::Null)
}

fn prune(v: Value, omit_zero: bool) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(false) if omit_zero => None,
        Value::Number(n) if omit_zero && n.as_f64() == Some(0.0) => None,
        Value::String(s) if omit_zero && s.is_empty() => None,
        Value::Array(items) => {
            let items: Vec<Value> = items.into_iter().map(|i| prune(i, omit_zero).unwrap_or(Value::Null)).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(map) => {
            let map: serde_json::Map<String, Value> =
                map.into_iter().filter_map(|(k, v)| prune(v, omit_zero).map(|v| (k, v))).collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        other => Some(other),
    }
}

/// Whether two values are semantically equal.
pub fn equal<T: Serialize>(a: &T, b: &T) -> bool {
    normalized(a) == normalized(b)
}

/// Equality for status structs, whose Go fields are `omitempty`: zero, false and "" also count
/// as absent, so a status the server echoes back without its zero counters still compares equal.
pub fn status_equal<T: Serialize>(a: &T, b: &T) -> bool {
    let a = prune(serde_json::to_value(a).unwrap_or(Value::Null), true);
    let b = prune(serde_json::to_value(b).unwrap_or(Value::Null), true);
    a == b
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn empty_and_missing_are_equal_but_values_are_not() {
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some(Default::default()), ..Default::default() }),
            spec: Some(PodSpec {
                containers: vec![Container { name: "c".into(), args: Some(vec![]), ..Default::default() }],
                ..Default::default()
            }),
        };
        let mut b = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container { name: "c".into(), ..Default::default() }],
                ..Default::default()
            }),
        };
        assert!(equal(&a, &b));
        b.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
        assert!(!equal(&a, &b));
    }

    #[test]
    fn status_equality_treats_zero_as_absent() {
        use k8s_openapi::api::apps::v1::ReplicaSetStatus;
        let a = ReplicaSetStatus { replicas: 0, ready_replicas: Some(0), ..Default::default() };
        let b = ReplicaSetStatus::default();
        assert!(status_equal(&a, &b));
        let c = ReplicaSetStatus { ready_replicas: Some(1), ..Default::default() };
        assert!(!status_equal(&a, &c));
    }
}
