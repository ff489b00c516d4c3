//! One side of a change: the resource's typed spec as the diff found it, or attributes read
//! back from a saved plan. A spec is turned into JSON only where it is shown: a plan of a
//! hundred thousand creates then never holds a hundred thousand JSON trees at once, and
//! `plan --json` writes each spec straight out.

use crate::model::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The attributes of one side as a JSON object, borrowed when they were read as one.
pub type Side<'a> = Cow<'a, Map<String, Value>>;

#[derive(Debug, Clone)]
pub enum Attributes {
    /// A resource's spec (the diff's sides).
    Spec(Box<Spec>),
    /// Attributes as a plan document holds them (a saved plan read back, drift, tests).
    Value(Value),
}

impl Attributes {
    /// The attributes as a JSON object: a spec is written out, a read-back object borrowed.
    /// Anything but an object has no attributes.
    pub fn map(&self) -> Side<'_> {
        match self {
            Attributes::Spec(spec) => match serde_json::to_value(spec) {
                Ok(Value::Object(m)) => Cow::Owned(m),
                Ok(_) | Err(_) => Cow::Owned(Map::new()),
            },
            Attributes::Value(Value::Object(m)) => Cow::Borrowed(m),
            Attributes::Value(_) => Cow::Owned(Map::new()),
        }
    }

    /// The attributes as the plan document writes them.
    pub fn to_value(&self) -> Value {
        match self {
            Attributes::Spec(spec) => serde_json::to_value(spec).unwrap_or(Value::Null),
            Attributes::Value(v) => v.clone(),
        }
    }
}

impl From<Value> for Attributes {
    fn from(v: Value) -> Self {
        Attributes::Value(v)
    }
}

/// Equal when the documents would be: a spec equals the JSON it is written as.
impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Attributes::Spec(a), Attributes::Spec(b)) => a == b,
            (Attributes::Value(a), Attributes::Value(b)) => a == b,
            (Attributes::Spec(spec), Attributes::Value(v))
            | (Attributes::Value(v), Attributes::Spec(spec)) => {
                serde_json::to_value(spec).is_ok_and(|s| s == *v)
            }
        }
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Attributes::Spec(spec) => spec.serialize(s),
            Attributes::Value(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Attributes::Value)
    }
}
