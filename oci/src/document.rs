//! A JSON object changed field by field.
//!
//! A container's runtime spec is the client's document: hulld and
//! hull-shim pass it on as it came, as containerd does. Where hull must
//! change a field (raising `process.oomScoreAdj` to what the host allows,
//! the exec's `terminal`), [`Object`] changes that field alone. Every other
//! field keeps its bytes and its place, whether or not oci-spec models it,
//! so a spec from a newer client loses nothing on the way to the runtime.

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A document that is not what a field was expected to be.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The bytes are not a JSON object.
    #[error("not a JSON object")]
    NotAnObject(#[source] serde_json::Error),
    /// A field holds something of another type.
    #[error("field {field:?}")]
    Field {
        /// The field.
        field: String,
        /// Why it did not read.
        #[source]
        source: serde_json::Error,
    },
}

/// A JSON object whose fields are kept as the bytes they were, in order.
#[derive(Debug, Clone, Default)]
pub struct Object {
    fields: Vec<(String, Box<RawValue>)>,
}

impl Object {
    /// Parses a JSON object.
    ///
    /// # Errors
    /// When `bytes` is not one.
    pub fn parse(bytes: &[u8]) -> Result<Object, DocumentError> {
        serde_json::from_slice(bytes).map_err(DocumentError::NotAnObject)
    }

    /// The object as JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // A map of strings to raw JSON always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The field's value as written, if the object has it (the last one,
    /// when a key repeats, as JSON readers take it).
    pub fn raw(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// The field read as a `T`; `None` when absent or `null`.
    ///
    /// # Errors
    /// When the field holds something else.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DocumentError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => {
                serde_json::from_str::<Option<T>>(v.get()).map_err(|source| DocumentError::Field {
                    field: key.to_owned(),
                    source,
                })
            }
        }
    }

    /// The field read as an object; `None` when absent or `null`.
    ///
    /// # Errors
    /// When the field is not an object.
    pub fn object(&self, key: &str) -> Result<Option<Object>, DocumentError> {
        self.get(key)
    }

    /// Sets the field, in its place when the object has it, else last.
    pub fn set<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        // Plain values and objects of strings always serialize.
        let Ok(raw) = serde_json::value::to_raw_value(value) else {
            return;
        };
        match self.fields.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.fields[i].1 = raw;
                // A repeated key would shadow the new value.
                let mut seen = 0;
                self.fields.retain(|(k, _)| {
                    if k == key {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.fields.push((key.to_owned(), raw)),
        }
    }

    /// Removes the field; whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.fields.len();
        self.fields.retain(|(k, _)| k != key);
        self.fields.len() != before
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((k, v));
                }
                Ok(Object { fields })
            }
        }
        d.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_changes_and_the_rest_stays() {
        let text = br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"oomScoreAdj":-999,"x-future":{"a":[1,2]}},"linux":{"someFutureField":1},"z":  7}"#;
        let mut doc = Object::parse(text).unwrap();
        let mut process = doc.object("process").unwrap().unwrap();
        assert_eq!(process.get::<i64>("oomScoreAdj").unwrap(), Some(-999));
        process.set("oomScoreAdj", &0);
        process.set("terminal", &true);
        doc.set("process", &process);
        let out = String::from_utf8(doc.to_vec()).unwrap();
        assert_eq!(
            out,
            r#"{"ociVersion":"1.0.2","process":{"args":["sh"],"oomScoreAdj":0,"x-future":{"a":[1,2]},"terminal":true},"linux":{"someFutureField":1},"z":7}"#
        );
        assert_eq!(
            doc.keys().collect::<Vec<_>>(),
            ["ociVersion", "process", "linux", "z"]
        );
    }

    #[test]
    fn wrong_types_and_non_objects_are_errors() {
        assert!(Object::parse(b"[1]").is_err());
        let doc = Object::parse(br#"{"a":"text","n":null}"#).unwrap();
        assert!(doc.get::<i64>("a").is_err());
        assert_eq!(doc.get::<i64>("n").unwrap(), None);
        assert_eq!(doc.get::<i64>("missing").unwrap(), None);
        assert!(doc.object("a").is_err());
    }

    #[test]
    fn a_repeated_key_reads_last_and_is_set_once() {
        let mut doc = Object::parse(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(doc.get::<i64>("a").unwrap(), Some(3));
        doc.set("a", &4);
        assert_eq!(doc.to_vec(), br#"{"a":4,"b":2}"#);
    }
}
