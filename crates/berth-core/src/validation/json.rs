//! Small read helpers over `serde_json::Value` shared by defaults, validation and tables.
//! Missing or mistyped values read as empty, the way Go's zero values do.

use serde_json::{Map, Value};

/// `Value::pointer` without its allocations: serde_json unescapes every token into a new
/// `String`, which dominated printing a Table of thousands of objects. The pointers written
/// in this crate have no `~` escapes; any that do take serde_json's path.
pub(crate) fn at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    if ptr.is_empty() || ptr.contains('~') {
        return v.pointer(ptr);
    }
    ptr.strip_prefix('/')?.split('/').try_fold(v, |cur, token| match cur {
        Value::Object(map) => map.get(token),
        // As serde_json: a decimal index without a sign or leading zeros.
        Value::Array(items) if !token.starts_with('+') && (token == "0" || !token.starts_with('0')) => {
            token.parse::<usize>().ok().and_then(|i| items.get(i))
        }
        _ => None,
    })
}

/// The string at a JSON pointer, or `""`.
pub(crate) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    at(v, ptr).and_then(Value::as_str).unwrap_or("")
}

/// The string at a JSON pointer, if there is one.
pub(crate) fn opt_str<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    at(v, ptr).and_then(Value::as_str)
}

/// The integer at a JSON pointer, or 0.
pub(crate) fn int_at(v: &Value, ptr: &str) -> i64 {
    at(v, ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The boolean at a JSON pointer, or false.
pub(crate) fn bool_at(v: &Value, ptr: &str) -> bool {
    at(v, ptr).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at a JSON pointer, or an empty slice.
pub(crate) fn list_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    at(v, ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The object at a JSON pointer, if there is one.
pub(crate) fn map_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    at(v, ptr).and_then(Value::as_object)
}

/// Whether the pointer names a present, non-null value.
pub(crate) fn has(v: &Value, ptr: &str) -> bool {
    at(v, ptr).is_some_and(|x| !x.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn at_agrees_with_pointer() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": 2}], "x/y": 3, "m~n": 4, "": 5}, "01": 6});
        for ptr in [
            "",
            "/a",
            "/a/b",
            "/a/b/1/c",
            "/a/b/01/c",
            "/a/b/+1",
            "/a/b/9",
            "/a/x~1y",
            "/a/m~0n",
            "/a/",
            "/01",
            "a",
            "/a/b/0/c/d",
        ] {
            assert_eq!(at(&v, ptr), v.pointer(ptr), "{ptr}");
        }
    }
}
