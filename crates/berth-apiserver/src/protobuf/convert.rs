//! Building the JSON that Go's `encoding/json` would print for a decoded protobuf message:
//! the presence rules the generated converters use, and the hand-written types whose Go
//! counterparts marshal themselves (times, quantities, int-or-string, raw JSON).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Datelike, Utc};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{FieldsV1, MicroTime, Time};
use k8s_pb::apimachinery::pkg::runtime::RawExtension;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Number, Value};

/// Seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z), which client-go encodes for unset
/// non-pointer times such as `metadata.creationTimestamp`.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("timestamp {seconds}s {nanos}ns is out of range")]
    TimeOutOfRange { seconds: i64, nanos: i32 },
    #[error("a floating-point field is not a finite number")]
    NonFiniteNumber,
    #[error("embedded raw JSON is not valid: {0}")]
    RawJson(String),
}

pub trait ToJson {
    fn to_json(&self) -> Result<Value, ConvertError>;
}

/// When a singular field appears in the JSON, mirroring how client-go's Go struct field is
/// declared (the protobuf encoding always carries non-pointer fields, even when zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A Go pointer: present exactly when it was set, zero values included.
    IfSet,
    /// A Go value with `omitempty`: present when not the zero value.
    NonZero,
    /// A Go value without `omitempty`, or a struct (which `omitempty` never hides): always
    /// present, as the zero value when the sender left it out.
    Always,
}

/// What an empty list or map becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empty {
    /// `omitempty`: left out.
    Omit,
    /// No `omitempty`: Go decodes an absent repeated field to nil, which it prints as `null`.
    Null,
}

/// A JSON object under construction, keeping Go's field order.
#[derive(Debug, Default)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn scalar<T: Scalar>(&mut self, key: &str, value: Option<&T>, presence: Presence) -> Result<(), ConvertError> {
        let value = match (value, presence) {
            (Some(v), Presence::IfSet | Presence::Always) => v,
            (Some(v), Presence::NonZero) if !v.is_zero() => v,
            (None, Presence::Always) => &T::default(),
            _ => return Ok(()),
        };
        self.0.insert(key.to_owned(), value.to_json()?);
        Ok(())
    }

    /// A Go `[]byte`, which prints as standard base64 (and as `null` when nil).
    #[allow(dead_code, reason = "the generator emits it for singular bytes fields, which no accepted kind has yet")]
    pub fn bytes(&mut self, key: &str, value: Option<&Vec<u8>>, presence: Presence) -> Result<(), ConvertError> {
        let json = match (value, presence) {
            (Some(v), Presence::IfSet | Presence::Always) => Value::String(BASE64.encode(v)),
            (Some(v), Presence::NonZero) if !v.is_empty() => Value::String(BASE64.encode(v)),
            (None, Presence::Always) => Value::Null,
            _ => return Ok(()),
        };
        self.0.insert(key.to_owned(), json);
        Ok(())
    }

    pub fn message<T: ToJson + Default>(
        &mut self,
        key: &str,
        value: Option<&T>,
        presence: Presence,
    ) -> Result<(), ConvertError> {
        let json = match (value, presence) {
            (Some(v), _) => v.to_json()?,
            (None, Presence::Always) => T::default().to_json()?,
            (None, _) => return Ok(()),
        };
        self.0.insert(key.to_owned(), json);
        Ok(())
    }

    /// An embedded Go struct tagged `json:",inline"`: its fields join this object.
    pub fn inline<T: ToJson + Default>(&mut self, value: Option<&T>) -> Result<(), ConvertError> {
        let json = match value {
            Some(v) => v.to_json()?,
            None => T::default().to_json()?,
        };
        if let Value::Object(fields) = json {
            self.0.extend(fields);
        }
        Ok(())
    }

    pub fn list<T: ToJson>(&mut self, key: &str, values: &[T], empty: Empty) -> Result<(), ConvertError> {
        if values.is_empty() {
            return self.empty(key, empty);
        }
        let items = values.iter().map(ToJson::to_json).collect::<Result<Vec<_>, _>>()?;
        self.0.insert(key.to_owned(), Value::Array(items));
        Ok(())
    }

    pub fn map<T: ToJson>(
        &mut self,
        key: &str,
        values: &BTreeMap<String, T>,
        empty: Empty,
    ) -> Result<(), ConvertError> {
        if values.is_empty() {
            return self.empty(key, empty);
        }
        let mut object = Map::new();
        for (k, v) in values {
            object.insert(k.clone(), v.to_json()?);
        }
        self.0.insert(key.to_owned(), Value::Object(object));
        Ok(())
    }

    /// A Go `map[string][]byte` (Secret `data`, ConfigMap `binaryData`): values in base64.
    pub fn bytes_map(
        &mut self,
        key: &str,
        values: &BTreeMap<String, Vec<u8>>,
        empty: Empty,
    ) -> Result<(), ConvertError> {
        if values.is_empty() {
            return self.empty(key, empty);
        }
        let object = values.iter().map(|(k, v)| (k.clone(), Value::String(BASE64.encode(v)))).collect();
        self.0.insert(key.to_owned(), Value::Object(object));
        Ok(())
    }

    fn empty(&mut self, key: &str, empty: Empty) -> Result<(), ConvertError> {
        if empty == Empty::Null {
            self.0.insert(key.to_owned(), Value::Null);
        }
        Ok(())
    }
}

/// A protobuf scalar with Go's notion of the zero value.
pub trait Scalar: ToJson + Default {
    fn is_zero(&self) -> bool;
}

impl ToJson for String {
    fn to_json(&self) -> Result<Value, ConvertError> {
        Ok(Value::String(self.clone()))
    }
}

impl Scalar for String {
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl ToJson for bool {
    fn to_json(&self) -> Result<Value, ConvertError> {
        Ok(Value::Bool(*self))
    }
}

impl Scalar for bool {
    fn is_zero(&self) -> bool {
        !*self
    }
}

impl ToJson for i32 {
    fn to_json(&self) -> Result<Value, ConvertError> {
        Ok(Value::from(*self))
    }
}

impl Scalar for i32 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl ToJson for i64 {
    fn to_json(&self) -> Result<Value, ConvertError> {
        Ok(Value::from(*self))
    }
}

impl Scalar for i64 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl ToJson for f64 {
    fn to_json(&self) -> Result<Value, ConvertError> {
        Number::from_f64(*self).map(Value::Number).ok_or(ConvertError::NonFiniteNumber)
    }
}

impl Scalar for f64 {
    fn is_zero(&self) -> bool {
        *self == 0.0
    }
}

/// `metav1.Time`: RFC 3339 in UTC at second precision, `null` for Go's zero time.
impl ToJson for Time {
    fn to_json(&self) -> Result<Value, ConvertError> {
        format_time(self.seconds, self.nanos, "%Y-%m-%dT%H:%M:%SZ")
    }
}

/// `metav1.MicroTime`: RFC 3339 in UTC with microseconds, `null` for Go's zero time.
impl ToJson for MicroTime {
    fn to_json(&self) -> Result<Value, ConvertError> {
        format_time(self.seconds, self.nanos, "%Y-%m-%dT%H:%M:%S%.6fZ")
    }
}

fn format_time(seconds: Option<i64>, nanos: Option<i32>, format: &str) -> Result<Value, ConvertError> {
    let (seconds_value, nanos_value) = (seconds.unwrap_or_default(), nanos.unwrap_or_default());
    // An empty message is also Go's zero time: its Unmarshal special-cases zero-length input.
    let zero = (seconds.is_none() && nanos.is_none()) || (seconds_value == GO_ZERO_TIME_SECONDS && nanos_value == 0);
    if zero {
        return Ok(Value::Null);
    }
    let out_of_range = || ConvertError::TimeOutOfRange { seconds: seconds_value, nanos: nanos_value };
    let nanos_unsigned = u32::try_from(nanos_value).map_err(|_| out_of_range())?;
    let time: DateTime<Utc> = DateTime::from_timestamp(seconds_value, nanos_unsigned).ok_or_else(out_of_range)?;
    // Go refuses to marshal years outside 0..=9999 as RFC 3339.
    if !(0..=9999).contains(&time.year()) {
        return Err(out_of_range());
    }
    Ok(Value::String(time.format(format).to_string()))
}

/// `intstr.IntOrString`: a JSON number for type 0 (Int), a string for type 1 (String).
impl ToJson for IntOrString {
    fn to_json(&self) -> Result<Value, ConvertError> {
        if self.r#type == Some(1) {
            Ok(Value::String(self.str_val.clone().unwrap_or_default()))
        } else {
            Ok(Value::from(self.int_val.unwrap_or_default()))
        }
    }
}

/// `resource.Quantity`: its string form, which client-go already sends canonicalised.
impl ToJson for Quantity {
    fn to_json(&self) -> Result<Value, ConvertError> {
        match self.string.as_deref() {
            None | Some("") => Ok(Value::String("0".to_owned())),
            Some(s) => Ok(Value::String(s.to_owned())),
        }
    }
}

/// `metav1.FieldsV1`: the raw JSON it carries.
impl ToJson for FieldsV1 {
    fn to_json(&self) -> Result<Value, ConvertError> {
        raw_json(self.raw.as_deref())
    }
}

/// `runtime.RawExtension`: the raw JSON it carries (`null` when empty).
impl ToJson for RawExtension {
    fn to_json(&self) -> Result<Value, ConvertError> {
        raw_json(self.raw.as_deref())
    }
}

fn raw_json(raw: Option<&[u8]>) -> Result<Value, ConvertError> {
    match raw {
        None | Some([]) => Ok(Value::Null),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| ConvertError::RawJson(e.to_string())),
    }
}
