//! Render a Kubernetes object, built in Rust with the mutation's own functions, as a CEL
//! expression that constructs it (`Object.spec.initContainers{name: "...", ...}`), for the
//! MutatingAdmissionPolicy of policy mode ([`super::policy`]). Parts only admission knows are
//! written as [`expr`] and [`optional`] markers in string values and replaced by the CEL they
//! carry, so the container the policy injects is the webhook's with those parts computed by the
//! API server.
//!
//! Pure: no I/O.

use serde_json::Value;

const EXPR: char = '\u{1}';
const OPTIONAL: char = '\u{2}';

/// A string value that stands for the CEL expression `cel`.
pub fn expr(cel: &str) -> String {
    format!("{EXPR}{cel}")
}

/// A string value that stands for the CEL expression `cel` of an `optional` type: the field is
/// set only when it has a value (`?field: cel`).
pub fn optional(cel: &str) -> String {
    format!("{OPTIONAL}{cel}")
}

/// A CEL string literal of `text` (JSON's escapes are CEL's).
pub fn string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Fields whose value is a map, not an object, in the types the policy constructs.
const MAP_FIELDS: &[&str] = &["limits", "requests"];

/// The CEL that constructs `value`, an object of the type `type_path` names (e.g.
/// `Object.spec.initContainers`).
pub fn construct(value: &Value, type_path: &str) -> String {
    match value {
        Value::Object(fields) => {
            let map = MAP_FIELDS
                .iter()
                .any(|f| type_path.ends_with(&format!(".{f}")));
            let items: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(key, v)| {
                    let optional = v.as_str().is_some_and(|s| s.starts_with(OPTIONAL));
                    let rendered = construct(v, &format!("{type_path}.{key}"));
                    match (map, optional) {
                        (true, false) => format!("{}: {rendered}", string(key)),
                        (true, true) => format!("?{}: {rendered}", string(key)),
                        (false, false) => format!("{key}: {rendered}"),
                        (false, true) => format!("?{key}: {rendered}"),
                    }
                })
                .collect();
            if map {
                format!("{{{}}}", items.join(", "))
            } else {
                format!("{type_path}{{{}}}", items.join(", "))
            }
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| construct(v, type_path)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::String(s) => match s.strip_prefix([EXPR, OPTIONAL]) {
            Some(cel) => cel.to_owned(),
            None => string(s),
        },
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_maps_lists_markers_and_escapes() {
        let value = serde_json::json!({
            "name": "a\"b\n",
            "image": expr("params.data.image"),
            "restartPolicy": optional("variables.refresh ? optional.of('Always') : optional.none()"),
            "resources": {"requests": {"cpu": "10m", "memory": optional("params.data.?memory")}},
            "command": ["/bin/x", "agent"],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
            "skipped": null
        });
        assert_eq!(
            construct(&value, "Object.spec.initContainers"),
            "Object.spec.initContainers{command: [\"/bin/x\", \"agent\"], image: params.data.image, \
             name: \"a\\\"b\\n\", resources: Object.spec.initContainers.resources{requests: \
             {\"cpu\": \"10m\", ?\"memory\": params.data.?memory}}, ?restartPolicy: \
             variables.refresh ? optional.of('Always') : optional.none(), securityContext: \
             Object.spec.initContainers.securityContext{runAsNonRoot: true, runAsUser: 65532}}"
        );
    }
}
