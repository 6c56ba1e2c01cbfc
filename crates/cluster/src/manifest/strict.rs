//! One YAML document read into a JSON value, noting every mapping key
//! given twice so that the document can be refused as kubectl's strict
//! decoding refuses it (the YAML reader alone would keep the last one and
//! drop the first without a word). Also the [`Path`] of a field that both
//! this reader and the unknown-field check name in their refusals.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One document read whole.
pub(super) struct Read {
    pub value: Value,
    /// The paths of the keys given twice (`spec.ports`), in document
    /// order; the value keeps the first of each.
    pub given_twice: Vec<String>,
}

/// Reads one document to its end, noting every key given twice in a
/// mapping, so that the caller can refuse the document and still read the
/// ones after it.
pub(super) fn document(de: serde_yaml_ng::Deserializer<'_>) -> Result<Read, serde_yaml_ng::Error> {
    let given_twice = RefCell::new(Vec::new());
    let value = StrictValue {
        at: Path::ROOT,
        given_twice: &given_twice,
    }
    .deserialize(de)?;
    Ok(Read {
        value,
        given_twice: given_twice.into_inner(),
    })
}

/// Where in a document a value sits (`spec.ports[0].port`), built without
/// allocating and written out only when a problem names it.
#[derive(Clone, Copy)]
pub(super) struct Path<'a> {
    step: Option<Step<'a>>,
    parent: Option<&'a Path<'a>>,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    /// The document itself.
    pub(super) const ROOT: Path<'static> = Path {
        step: None,
        parent: None,
    };

    /// The value under `key` of the mapping here.
    pub(super) fn key(&'a self, key: &'a str) -> Path<'a> {
        Path {
            step: Some(Step::Key(key)),
            parent: Some(self),
        }
    }

    /// Item `index` of the sequence here.
    pub(super) fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            step: Some(Step::Index(index)),
            parent: Some(self),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.fmt(f)?;
        }
        let under_root = self.parent.is_none_or(|parent| parent.step.is_none());
        match self.step {
            Some(Step::Key(key)) if under_root => f.write_str(key),
            Some(Step::Key(key)) => write!(f, ".{key}"),
            Some(Step::Index(i)) => write!(f, "[{i}]"),
            None => Ok(()),
        }
    }
}

struct StrictValue<'a> {
    at: Path<'a>,
    /// Where a key given twice leaves its path for [`document`].
    given_twice: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own Value: a NaN or an infinity has no JSON form.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            match seq.next_element_seed(StrictValue {
                at: self.at.index(items.len()),
                given_twice: self.given_twice,
            })? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = self.at.key(&key);
            if object.contains_key(&key) {
                self.given_twice.borrow_mut().push(at.to_string());
                // Read past the second value without looking into it: a
                // repeat inside would name a place that is not kept.
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let value = map.next_value_seed(StrictValue {
                at,
                given_twice: self.given_twice,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}
