//! JSON merge patch (RFC 7386) and the merge used by server-side apply.

use serde_json::Value;

use crate::Error;
use crate::schema::{Strategy, TypeDef};
use crate::value::{Object, set_field, values_equal, without_nulls};

type Schema = Option<&'static TypeDef>;

/// RFC 7386 section 2, on owned values so that unchanged subtrees are moved, not copied.
pub(crate) fn merge_patch(target: Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Value::Object(object) => object,
        _ => Object::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            target.shift_remove(name);
            continue;
        }
        let current = target.get_mut(name).map(std::mem::take).unwrap_or(Value::Null);
        set_field(&mut target, name, merge_patch(current, value));
    }
    Value::Object(target)
}

/// Merges an applied configuration into the live object.
pub(crate) fn apply(live: &Value, applied: &Value, schema: Schema) -> Result<Value, Error> {
    let Value::Object(applied) = applied else {
        return Err(Error::Invalid("an applied configuration must be a JSON object".to_owned()));
    };
    let live = match live {
        Value::Object(live) => live.clone(),
        Value::Null => Object::new(),
        _ => return Err(Error::Invalid("the live object must be a JSON object".to_owned())),
    };
    apply_object(live, applied, schema).map(Value::Object)
}

fn apply_object(mut live: Object, applied: &Object, schema: Schema) -> Result<Object, Error> {
    for (name, value) in applied {
        if value.is_null() {
            live.shift_remove(name);
            continue;
        }
        let field = schema.and_then(|ty| ty.field(name));
        let ty = field.and_then(|field| field.ty);
        let merge_key = field.filter(|field| field.strategy == Strategy::Merge).and_then(|field| field.merge_key);
        let current = live.get_mut(name).map(std::mem::take);
        let next = match (current, value, merge_key) {
            (Some(Value::Object(current)), Value::Object(value), _) => Value::Object(apply_object(current, value, ty)?),
            (current, Value::Array(items), Some(key)) => {
                let current = match current {
                    Some(Value::Array(current)) => current,
                    _ => Vec::new(),
                };
                Value::Array(apply_keyed_list(current, items, name, key, ty)?)
            }
            (_, value, _) => without_nulls(value.clone()),
        };
        set_field(&mut live, name, next);
    }
    Ok(live)
}

/// Elements are matched by `key` and merged; applied elements the live list lacks are appended.
fn apply_keyed_list(
    mut live: Vec<Value>,
    applied: &[Value],
    name: &str,
    key: &str,
    ty: Schema,
) -> Result<Vec<Value>, Error> {
    let mut seen: Vec<&Value> = Vec::with_capacity(applied.len());
    for item in applied {
        let Value::Object(element) = item else {
            return Err(Error::Invalid(format!("{name}: expected objects keyed by {key:?}, found {item}")));
        };
        let Some(wanted) = element.get(key).filter(|value| !value.is_null()) else {
            return Err(Error::Invalid(format!("{name}: element {item} has no {key:?}")));
        };
        if seen.iter().any(|other| values_equal(other, wanted)) {
            return Err(Error::Invalid(format!("{name}: duplicate entries with {key}={wanted}")));
        }
        seen.push(wanted);
        match live.iter().position(|existing| existing.get(key).is_some_and(|value| values_equal(value, wanted))) {
            Some(index) => {
                if let Value::Object(existing) = &mut live[index] {
                    let base = std::mem::take(existing);
                    *existing = apply_object(base, element, ty)?;
                }
            }
            None => live.push(without_nulls(item.clone())),
        }
    }
    Ok(live)
}
