//! Applying a strategic merge patch the way the API server does
//! (apimachinery `strategicpatch.StrategicMergeMapPatch`: parallel lists merged, nulls for
//! missing keys ignored).
//!
//! Two deliberate differences from upstream: a value taken from the patch wholesale (its key is
//! missing from the object, or its type changed) is cleaned as if merged into nothing, so
//! directives never leak into the stored object and `{"$patch":"replace",...}` keeps its
//! contents; and `$patch: merge` on an object is accepted as the no-op it names.

use serde_json::Value;

use crate::Error;
use crate::schema::{Strategy, TypeDef};
use crate::value::{Object, set_field, values_equal};

type Schema = Option<&'static TypeDef>;

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

fn missing_merge_key(element: &Object, key: &str) -> Error {
    invalid(format!("{} does not contain declared merge key: {key}", Value::Object(element.clone())))
}

/// The patch metadata of one field; unknown fields behave as untagged, schemaless fields.
#[derive(Clone, Copy)]
struct FieldMeta {
    strategy: Strategy,
    merge_key: Option<&'static str>,
    ty: Schema,
}

impl FieldMeta {
    fn of(schema: Schema, name: &str) -> Self {
        match schema.and_then(|ty| ty.field(name)) {
            Some(field) => FieldMeta { strategy: field.strategy, merge_key: field.merge_key, ty: field.ty },
            None => FieldMeta { strategy: Strategy::Default, merge_key: None, ty: None },
        }
    }
}

enum Directive {
    Merge,
    Replace,
    Delete,
}

fn directive_of(object: &Object) -> Result<Option<Directive>, Error> {
    match object.get(PATCH_DIRECTIVE) {
        None => Ok(None),
        Some(Value::String(value)) if value == "merge" => Ok(Some(Directive::Merge)),
        Some(Value::String(value)) if value == "replace" => Ok(Some(Directive::Replace)),
        Some(Value::String(value)) if value == "delete" => Ok(Some(Directive::Delete)),
        Some(other) => Err(invalid(format!(
            "unknown patch type {other} in {}; $patch must be \"merge\", \"replace\" or \"delete\"",
            Value::Object(object.clone())
        ))),
    }
}

fn is_delete_element(value: &Value) -> bool {
    value.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

fn has_directive(value: &Value) -> bool {
    value.as_object().is_some_and(|object| object.contains_key(PATCH_DIRECTIVE))
}

/// `"$setElementOrder/containers"` → `"containers"`.
fn directive_target<'a>(key: &'a str, prefix: &str) -> Result<&'a str, Error> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix && !field.is_empty() => Ok(field),
        _ => Err(invalid(format!("invalid patch format: {key:?} must have the form \"{prefix}/<field>\""))),
    }
}

/// Applies `patch` to `original` with the patch metadata of `schema` (`None`: schemaless).
pub(crate) fn apply(original: &Value, patch: &Value, schema: Schema) -> Result<Value, Error> {
    let Value::Object(original) = original else {
        return Err(invalid("the object to patch must be a JSON object"));
    };
    let Value::Object(patch) = patch else {
        return Err(invalid("a strategic merge patch must be a JSON object"));
    };
    merge_map(original.clone(), patch.clone(), schema).map(Value::Object)
}

fn merge_map(mut original: Object, mut patch: Object, schema: Schema) -> Result<Object, Error> {
    match directive_of(&patch)? {
        Some(Directive::Delete) => return Ok(Object::new()),
        Some(Directive::Replace) => {
            patch.shift_remove(PATCH_DIRECTIVE);
            return merge_map(Object::new(), patch, schema);
        }
        Some(Directive::Merge) => {
            patch.shift_remove(PATCH_DIRECTIVE);
        }
        None => {}
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_element_orders(&mut original, &mut patch, schema)?;

    for (key, value) in patch {
        let (name, delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (directive_target(&key, DELETE_FROM_PRIMITIVE_LIST)?.to_owned(), true)
        } else {
            (key, false)
        };
        if value.is_null() {
            original.shift_remove(&name);
            continue;
        }
        let meta = FieldMeta::of(schema, &name);
        let current = original.get_mut(&name).map(std::mem::take);
        let existed = current.is_some();
        let next = match (current, value) {
            (Some(Value::Object(current)), Value::Object(value)) => {
                let base = if meta.strategy == Strategy::Replace { Object::new() } else { current };
                Some(Value::Object(merge_map(base, value, meta.ty)?))
            }
            (Some(Value::Array(current)), Value::Array(value)) => {
                Some(Value::Array(merge_list_field(current, value, &name, meta, delete_list)?.merged))
            }
            // A deletion list never creates or replaces anything.
            (current, _) if delete_list => current,
            (_, value) => take_value(value, meta.ty)?,
        };
        match next {
            Some(value) => set_field(&mut original, &name, value),
            None if existed => {
                original.shift_remove(&name);
            }
            None => {}
        }
    }
    Ok(original)
}

/// A value taken from the patch as it is (no counterpart in the object), with directives and
/// null members dropped. `None` when the value asks to be deleted.
fn take_value(value: Value, ty: Schema) -> Result<Option<Value>, Error> {
    match value {
        Value::Object(object) => {
            if let Some(Directive::Delete) = directive_of(&object)? {
                return Ok(None);
            }
            Ok(Some(Value::Object(merge_map(Object::new(), object, ty)?)))
        }
        Value::Array(items) => Ok(Some(Value::Array(take_list(items, ty)?))),
        other => Ok(Some(other)),
    }
}

/// Elements carrying a `$patch` directive are instructions, not data, and are dropped.
fn take_list(items: Vec<Value>, ty: Schema) -> Result<Vec<Value>, Error> {
    let mut taken = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Object(object) => {
                if directive_of(&object)?.is_none() {
                    taken.push(Value::Object(merge_map(Object::new(), object, ty)?));
                }
            }
            Value::Array(inner) => taken.push(Value::Array(take_list(inner, None)?)),
            other => taken.push(other),
        }
    }
    Ok(taken)
}

/// Result of merging a list. `view` is the live list as upstream's ordering step sees it
/// afterwards: upstream deletes and appends in place within the live list's backing array,
/// and `$setElementOrder` then orders server-only elements against that array.
struct ListMerge {
    merged: Vec<Value>,
    view: Vec<Value>,
}

fn merge_list_field(
    current: Vec<Value>,
    patch: Vec<Value>,
    name: &str,
    meta: FieldMeta,
    delete_list: bool,
) -> Result<ListMerge, Error> {
    // A deletion list deletes whatever the field's strategy.
    if meta.strategy == Strategy::Merge || delete_list {
        merge_list(current, patch, name, meta, delete_list)
    } else {
        Ok(ListMerge { merged: take_list(patch, meta.ty)?, view: current })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Null,
    Bool,
    Number,
    String,
    Object,
}

/// The common type of the elements of `lists`; `None` when they have no elements.
fn element_kind(name: &str, lists: [&[Value]; 2]) -> Result<Option<ElementKind>, Error> {
    let mut found = None;
    for value in lists.into_iter().flatten() {
        let kind = match value {
            Value::Null => ElementKind::Null,
            Value::Bool(_) => ElementKind::Bool,
            Value::Number(_) => ElementKind::Number,
            Value::String(_) => ElementKind::String,
            Value::Object(_) => ElementKind::Object,
            Value::Array(_) => return Err(invalid(format!("{name}: lists of lists are not supported"))),
        };
        match found {
            None => found = Some(kind),
            Some(previous) if previous != kind => {
                return Err(invalid(format!("{name}: list element types are not identical")));
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

fn merge_list(
    current: Vec<Value>,
    patch: Vec<Value>,
    name: &str,
    meta: FieldMeta,
    delete_list: bool,
) -> Result<ListMerge, Error> {
    if current.is_empty() && patch.is_empty() {
        return Ok(ListMerge { merged: Vec::new(), view: Vec::new() });
    }
    if element_kind(name, [&current, &patch])? == Some(ElementKind::Object) {
        if delete_list {
            return Err(invalid(format!(
                "{DELETE_FROM_PRIMITIVE_LIST}/{name}: {name} is a list of objects; delete elements with \"$patch\": \"delete\""
            )));
        }
        merge_object_list(current, patch, name, meta)
    } else {
        merge_scalar_list(current, patch, name, meta, delete_list)
    }
}

fn merge_scalar_list(
    current: Vec<Value>,
    patch: Vec<Value>,
    name: &str,
    meta: FieldMeta,
    delete_list: bool,
) -> Result<ListMerge, Error> {
    if delete_list {
        let merged =
            current.iter().filter(|value| !patch.iter().any(|gone| values_equal(value, gone))).cloned().collect();
        return Ok(ListMerge { merged, view: current });
    }
    if let Some(key) = meta.merge_key {
        return Err(invalid(format!("{name} must be a list of objects with the merge key {key:?}")));
    }
    let (merged, view) = if patch.is_empty() {
        // With nothing appended, upstream deduplicates the live list itself.
        let mut view = current;
        let len = dedupe_in_place(&mut view);
        (view[..len].to_vec(), view)
    } else {
        let mut both = current.clone();
        both.extend(patch.iter().cloned());
        let len = dedupe_in_place(&mut both);
        both.truncate(len);
        (both, current)
    };
    let (in_patch, server_only) = partition_scalars(merged, &patch);
    let merged = normalize_element_order(in_patch, server_only, &patch, &view, None)?;
    Ok(ListMerge { merged, view })
}

/// Removes duplicates the way upstream does (a duplicate is overwritten by the last element),
/// returning the new length; elements past it are left as they were.
fn dedupe_in_place(items: &mut [Value]) -> usize {
    if items.is_empty() {
        return 0;
    }
    let mut last = items.len() - 1;
    let mut i = 0;
    while i < last {
        let mut j = i + 1;
        while j <= last {
            if values_equal(&items[i], &items[j]) {
                items[j] = items[last].clone();
                last -= 1;
            } else {
                j += 1;
            }
        }
        i += 1;
    }
    last + 1
}

fn merge_object_list(current: Vec<Value>, patch: Vec<Value>, name: &str, meta: FieldMeta) -> Result<ListMerge, Error> {
    let Some(key) = meta.merge_key else {
        return Err(invalid(format!("{name}: cannot merge a list of objects without a merge key")));
    };
    let live_len = current.len();
    let mut view = current.clone();
    let mut list = current;

    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let Value::Object(element) = item else {
            return Err(invalid(format!("{name}: expected a list of objects")));
        };
        match directive_of(&element)? {
            None => plain.push(element),
            Some(Directive::Delete) => {
                let Some(wanted) = element.get(key) else {
                    return Err(missing_merge_key(&element, key));
                };
                while let Some(index) = find_by_key(&list, key, wanted)? {
                    list.remove(index);
                    for (slot, value) in view.iter_mut().zip(&list).skip(index) {
                        slot.clone_from(value);
                    }
                }
            }
            Some(Directive::Replace) => replace = true,
            Some(Directive::Merge) => {
                return Err(invalid(format!("{name}: merging lists cannot yet be specified in the patch")));
            }
        }
    }

    if replace {
        let replacement = take_list(plain.into_iter().map(Value::Object).collect(), meta.ty)?;
        let merged = normalize_element_order(Vec::new(), replacement.clone(), &[], &replacement, Some(key))?;
        return Ok(ListMerge { merged, view });
    }

    let server_order = list.clone();
    for element in &plain {
        let Some(wanted) = element.get(key) else {
            return Err(missing_merge_key(element, key));
        };
        match find_by_key(&list, key, wanted)? {
            Some(index) => {
                if let Value::Object(existing) = &mut list[index] {
                    let base = std::mem::take(existing);
                    *existing = merge_map(base, element.clone(), meta.ty)?;
                }
            }
            None => {
                if let Some(added) = take_value(Value::Object(element.clone()), meta.ty)? {
                    // Upstream appends into the room deletions left in the live array.
                    if list.len() < live_len {
                        view[list.len()] = added.clone();
                    }
                    list.push(added);
                }
            }
        }
    }

    let plain: Vec<Value> = plain.into_iter().map(Value::Object).collect();
    let (in_patch, server_only) = partition_objects(list, &plain, key)?;
    let merged = normalize_element_order(in_patch, server_only, &plain, &server_order, Some(key))?;
    Ok(ListMerge { merged, view })
}

/// Index of the first object in `list` whose `key` equals `wanted`.
fn find_by_key(list: &[Value], key: &str, wanted: &Value) -> Result<Option<usize>, Error> {
    for (index, item) in list.iter().enumerate() {
        let Value::Object(object) = item else {
            return Err(invalid(format!("expected objects merged by {key:?}, found {item}")));
        };
        if object.get(key).is_some_and(|value| values_equal(value, wanted)) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Splits `merged` into the elements whose key appears in `by` and the others.
fn partition_objects(merged: Vec<Value>, by: &[Value], key: &str) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for value in merged {
        let Value::Object(object) = &value else {
            return Err(invalid(format!("expected objects merged by {key:?}, found {value}")));
        };
        let Some(wanted) = object.get(key) else {
            return Err(missing_merge_key(object, key));
        };
        if find_by_key(by, key, wanted)?.is_some() {
            inside.push(value);
        } else {
            outside.push(value);
        }
    }
    Ok((inside, outside))
}

fn partition_scalars(merged: Vec<Value>, by: &[Value]) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|value| by.iter().any(|other| values_equal(value, other)))
}

/// Position of `item` in `order`: by merge key for objects, by value otherwise.
fn position(order: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(key) => {
            let wanted = item.get(key);
            order.iter().position(|other| match (other.get(key), wanted) {
                (Some(left), Some(right)) => values_equal(left, right),
                (None, None) => true,
                _ => false,
            })
        }
        None => order.iter().position(|other| values_equal(other, item)),
    }
}

fn require_merge_key(items: &[Value], key: &str) -> Result<(), Error> {
    for item in items {
        let Value::Object(object) = item else {
            return Err(invalid(format!("expected objects merged by {key:?}, found {item}")));
        };
        if !object.contains_key(key) {
            return Err(missing_merge_key(object, key));
        }
    }
    Ok(())
}

/// Stable sort of `items` by their position in `order`; unknown items go last.
fn sort_by_order(items: Vec<Value>, order: &[Value], key: Option<&str>) -> Result<Vec<Value>, Error> {
    let (mut kept, deleted): (Vec<Value>, Vec<Value>) = match key {
        Some(key) => {
            require_merge_key(&items, key)?;
            require_merge_key(order, key)?;
            items.into_iter().partition(|item| !is_delete_element(item))
        }
        None => (items, Vec::new()),
    };
    kept.sort_by_cached_key(|item| position(order, item, key).unwrap_or(usize::MAX));
    kept.extend(deleted);
    Ok(kept)
}

/// Puts the patch's elements in `patch_order` and the server-only ones in `server_order`,
/// then interleaves them so both keep their relative order.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let patch_items = sort_by_order(patch_items, patch_order, key)?;
    let server_only = sort_by_order(server_only, server_order, key)?;
    Ok(merge_sorted(server_only, patch_items, server_order, key))
}

/// A server-only element goes first only when both it and the next patch element are found
/// in `server_order` and it comes earlier there.
fn merge_sorted(left: Vec<Value>, right: Vec<Value>, server_order: &[Value], key: Option<&str>) -> Vec<Value> {
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (position(server_order, l, key), position(server_order, r, key)),
                (Some(l), Some(r)) if l < r
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        merged.extend(if take_left { left.next() } else { right.next() });
    }
    merged
}

fn apply_retain_keys(original: &mut Object, patch: &mut Object) -> Result<(), Error> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(invalid(format!(
            "invalid patch format of {RETAIN_KEYS_DIRECTIVE}: it must be a list of field names"
        )));
    };
    let retained = |name: &str| retain.iter().any(|kept| kept.as_str() == Some(name));
    for (name, value) in patch.iter() {
        if value.is_null() || name.starts_with(DELETE_FROM_PRIMITIVE_LIST) || name.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if !retained(name) {
            return Err(invalid(format!(
                "invalid patch format of {RETAIN_KEYS_DIRECTIVE}: {name:?} is set by the patch but not listed"
            )));
        }
    }
    original.retain(|name, _| retained(name));
    Ok(())
}

/// Handles every `$setElementOrder/<field>` with its list, merging the list and putting the
/// result in the given order.
fn apply_element_orders(original: &mut Object, patch: &mut Object, schema: Schema) -> Result<(), Error> {
    let directives: Vec<String> = patch.keys().filter(|key| key.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
    for directive in directives {
        let Some(order) = patch.shift_remove(&directive) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(invalid(format!("{directive} must be a list")));
        };
        let name = directive_target(&directive, SET_ELEMENT_ORDER)?.to_owned();
        let live = match original.get_mut(&name) {
            None | Some(Value::Null) => None,
            Some(Value::Array(live)) => Some(std::mem::take(live)),
            Some(other) => return Err(invalid(format!("{directive}: {name} is {other}, not a list"))),
        };
        let patch_list = match patch.shift_remove(&name) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => return Err(invalid(format!("{directive}: {name} in the patch is {other}, not a list"))),
        };
        let meta = FieldMeta::of(schema, &name);
        validate_element_order(patch_list.as_deref().unwrap_or_default(), &order, meta.merge_key, &directive)?;
        let kind =
            element_kind(&name, [live.as_deref().unwrap_or_default(), patch_list.as_deref().unwrap_or_default()])?;

        let (merged, view) = match (live, patch_list) {
            (None, None) => continue,
            (Some(live), None) => (live.clone(), live),
            (None, Some(list)) => (take_list(list, meta.ty)?, Vec::new()),
            (Some(live), Some(list)) => {
                let merge = merge_list_field(live, list, &name, meta, false)?;
                (merge.merged, merge.view)
            }
        };
        let ordered = match (kind, meta.merge_key) {
            (None, _) => merged,
            (Some(ElementKind::Object), Some(key)) => {
                let (in_order, server_only) = partition_objects(merged, &order, key)?;
                normalize_element_order(in_order, server_only, &order, &view, Some(key))?
            }
            (Some(ElementKind::Object), None) => {
                return Err(invalid(format!("{directive}: {name} is a list of objects without a merge key")));
            }
            (Some(_), Some(key)) => {
                return Err(invalid(format!("{name} must be a list of objects with the merge key {key:?}")));
            }
            (Some(_), None) => {
                let (in_order, server_only) = partition_scalars(merged, &order);
                normalize_element_order(in_order, server_only, &order, &view, None)?
            }
        };
        set_field(original, &name, Value::Array(ordered));
    }
    Ok(())
}

/// The patch list's elements (deletions aside) must appear in `order`, in the same order.
fn validate_element_order(
    patch_list: &[Value],
    order: &[Value],
    key: Option<&str>,
    directive: &str,
) -> Result<(), Error> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = match key {
        Some(key) => {
            if let Some(item) = patch_list.iter().find(|item| !item.is_object()) {
                return Err(invalid(format!("expected objects merged by {key:?}, found {item}")));
            }
            patch_list.iter().filter(|item| !is_delete_element(item)).collect()
        }
        None => patch_list.iter().collect(),
    };
    let (mut in_patch, mut in_order) = (0, 0);
    while in_patch < items.len() && in_order < order.len() {
        if has_directive(items[in_patch]) {
            in_patch += 1;
            continue;
        }
        if merge_key_values_equal(items[in_patch], &order[in_order], key)? {
            in_patch += 1;
        }
        in_order += 1;
    }
    if in_patch < items.len() {
        return Err(invalid(format!(
            "the order in the patch list {} doesn't match the {directive} list {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn merge_key_values_equal(left: &Value, right: &Value, key: Option<&str>) -> Result<bool, Error> {
    let Some(key) = key else {
        return Ok(values_equal(left, right));
    };
    let value_of = |item: &Value| -> Result<Value, Error> {
        let Value::Object(object) = item else {
            return Err(invalid(format!("expected objects merged by {key:?}, found {item}")));
        };
        object.get(key).cloned().ok_or_else(|| missing_merge_key(object, key))
    };
    Ok(values_equal(&value_of(left)?, &value_of(right)?))
}

#[cfg(test)]
mod tests;
