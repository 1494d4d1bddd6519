//! Small helpers on `serde_json` values shared by the patch implementations.

use serde_json::{Map, Number, Value};

pub(crate) type Object = Map<String, Value>;

/// Deep equality where numbers compare by value, so `80` and `80.0` are one merge key.
pub(crate) fn values_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => numbers_equal(left, right),
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(left, right)| values_equal(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, value)| right.get(key).is_some_and(|other| values_equal(value, other)))
        }
        _ => left == right,
    }
}

fn numbers_equal(left: &Number, right: &Number) -> bool {
    if let (Some(left), Some(right)) = (left.as_i64(), right.as_i64()) {
        return left == right;
    }
    if let (Some(left), Some(right)) = (left.as_u64(), right.as_u64()) {
        return left == right;
    }
    match (left.as_f64(), right.as_f64()) {
        (Some(left), Some(right)) => left == right,
        _ => false,
    }
}

/// Sets `name`, keeping the key's position when it already exists.
pub(crate) fn set_field(object: &mut Object, name: &str, value: Value) {
    match object.get_mut(name) {
        Some(slot) => *slot = value,
        None => {
            object.insert(name.to_owned(), value);
        }
    }
}

/// Drops every object member whose value is null, at any depth. Null list elements stay:
/// only a member set to null means "absent".
pub(crate) fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key, without_nulls(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(values_equal(&json!(80), &json!(80.0)));
        assert!(values_equal(&json!({"a": [1, 2]}), &json!({"a": [1.0, 2]})));
        assert!(!values_equal(&json!(80), &json!("80")));
        assert!(!values_equal(&json!([1, 2]), &json!([2, 1])));
    }

    #[test]
    fn nulls_are_dropped_from_objects_but_not_lists() {
        assert_eq!(
            without_nulls(json!({"a": null, "b": {"c": null, "d": 1}, "e": [null, {"f": null}]})),
            json!({"b": {"d": 1}, "e": [null, {}]})
        );
    }
}
