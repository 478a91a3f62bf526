//! The JSON Patch the mutation returns: `add` operations with typed, escaped JSON Pointers, each
//! value serialized once, straight from the typed object (a k8s-openapi `Container`, a mount)
//! into its JSON text. The webhook writes that text as it is; `inject` and the tests turn it into
//! a `json_patch::Patch` to apply. Building a `serde_json::Value` tree of every value first, to
//! serialize and drop it again, cost more than the rest of the mutation.

use json_patch::jsonptr::PointerBuf;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;

/// One `add` operation.
#[derive(Debug, Clone)]
pub struct Add {
    /// Where the value goes.
    pub path: PointerBuf,
    /// The value, as JSON text.
    pub value: Box<RawValue>,
}

impl Add {
    /// The JSON length of `{"op":"add","path":"<path>","value":<value>}` for a path of
    /// `path_len` bytes that needs no escaping.
    pub fn json_len_of(path_len: usize, value: &RawValue) -> usize {
        r#"{"op":"add","path":"","value":}"#.len() + path_len + value.get().len()
    }
}

/// `value` as JSON text, serialized once.
pub fn raw(value: &impl Serialize) -> Box<RawValue> {
    // k8s-openapi types, strings and JSON values have string keys and no non-finite floats, so
    // they always serialize.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A JSON array of values already serialized.
pub fn raw_array(items: &[Box<RawValue>]) -> Box<RawValue> {
    let mut text =
        String::with_capacity(2 + items.iter().map(|i| i.get().len() + 1).sum::<usize>());
    text.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(item.get());
    }
    text.push(']');
    // Valid JSON texts joined with commas inside brackets are a valid JSON array.
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl PartialEq for Add {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.value.get() == other.value.get()
    }
}

impl Serialize for Add {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut op = serializer.serialize_struct("Add", 3)?;
        op.serialize_field("op", "add")?;
        op.serialize_field("path", &self.path)?;
        op.serialize_field("value", &self.value)?;
        op.end()
    }
}

/// A JSON Patch (RFC 6902) of `add` operations, in order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct JsonPatch(pub Vec<Add>);

impl JsonPatch {
    /// Append `add` of `value` at the pointer made of `tokens` (escaped as needed).
    pub fn add<'t>(
        &mut self,
        tokens: impl IntoIterator<Item = impl Into<json_patch::jsonptr::Token<'t>>>,
        value: &impl Serialize,
    ) {
        self.push(PointerBuf::from_tokens(tokens), value);
    }

    /// Append `add` of `value` at `path`.
    pub fn push(&mut self, path: PointerBuf, value: &impl Serialize) {
        self.push_raw(path, raw(value));
    }

    /// Append `add` of a value already serialized.
    pub fn push_raw(&mut self, path: PointerBuf, value: Box<RawValue>) {
        self.0.push(Add { path, value });
    }

    /// The length of the patch serialized as JSON, without serializing it. Exact when no path
    /// needs JSON escaping, which holds for ours: their tokens are field names, indices and our
    /// own annotation key, never user text.
    pub fn json_len(&self) -> usize {
        // `[` `]`, a comma between operations.
        let frame = 2 + self.0.len().saturating_sub(1);
        self.0.iter().fold(frame, |sum, add| {
            sum + Add::json_len_of(add.path.as_str().len(), &add.value)
        })
    }

    /// The operations as a `json_patch::Patch`, to apply to a document.
    pub fn to_patch(&self) -> json_patch::Patch {
        json_patch::Patch(
            self.0
                .iter()
                .map(|add| {
                    json_patch::PatchOperation::Add(json_patch::AddOperation {
                        path: add.path.clone(),
                        // The text came from serde_json: it parses.
                        value: serde_json::from_str(add.value.get())
                            .unwrap_or(serde_json::Value::Null),
                    })
                })
                .collect(),
        )
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_rfc_6902_and_converts_to_the_same_patch() {
        let mut patch = JsonPatch::default();
        patch.add(["metadata", "annotations", "a/b~c"], &"v");
        patch.add(["spec", "volumes", "-"], &serde_json::json!({"name": "x"}));
        let text = serde_json::to_string(&patch).unwrap();
        assert_eq!(
            text,
            r#"[{"op":"add","path":"/metadata/annotations/a~1b~0c","value":"v"},{"op":"add","path":"/spec/volumes/-","value":{"name":"x"}}]"#
        );
        let typed: json_patch::Patch = serde_json::from_str(&text).unwrap();
        assert_eq!(patch.to_patch(), typed);
        assert_eq!(patch.json_len(), text.len());
        assert_eq!(JsonPatch::default().json_len(), "[]".len());
    }

    #[test]
    fn a_raw_array_is_the_array_of_the_values() {
        let items = [raw(&"a"), raw(&serde_json::json!({"b": [1]}))];
        assert_eq!(raw_array(&items).get(), r#"["a",{"b":[1]}]"#);
        assert_eq!(raw_array(&[]).get(), "[]");
        let mut patch = JsonPatch::default();
        patch.push_raw(PointerBuf::from_tokens(["x"]), raw_array(&items));
        assert_eq!(patch.json_len(), serde_json::to_vec(&patch).unwrap().len());
    }
}
