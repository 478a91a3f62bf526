//! YAML output that every Kubernetes tool reads back as the same JSON.
//!
//! `kubectl` converts YAML with a YAML 1.1 parser, where unquoted `yes`, `on`, `0440`,
//! `2001-12-14` or `12:30:45` are not strings. YAML 1.2 emitters (yaml_serde among them) leave
//! such strings unquoted, so an env value `on` would come back as a boolean. This emitter writes
//! a string plain only when it is unambiguous under YAML 1.1 and 1.2 alike, and otherwise as a
//! JSON string literal, which is a valid YAML double-quoted scalar.

use std::fmt::Write as _;

use serde_json::Value;

/// Render one document (without a `---` marker), ending with a newline.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            write_scalar(&mut out, scalar);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, level: usize) {
    out.extend(std::iter::repeat_n(' ', level));
}

/// A map's entries with the keys sorted, as `kubectl get -o yaml` writes them, whatever order
/// the map keeps (serde_json's `preserve_order` may be switched on by another crate in a build).
fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (key, value) in sorted(map) {
        indent(out, level);
        write_string(out, key);
        out.push(':');
        write_value_after_key(out, value, level);
    }
}

/// The value of a mapping entry, after `key:`.
fn write_value_after_key(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        // Sequences in mappings are not indented, as kubectl writes them.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, level);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first entry shares the dash's line; the others align with it.
                let mut first = true;
                for (key, value) in sorted(map) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    write_string(out, key);
                    out.push(':');
                    write_value_after_key(out, value, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar);
                out.push('\n');
            }
        }
    }
}

fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

fn write_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        write_double_quoted(out, s);
    }
}

/// A YAML double-quoted scalar. Escapes what JSON escapes, plus what YAML does not allow raw:
/// DEL, the C1 controls, line and paragraph separators (line breaks in YAML 1.1), and the
/// non-characters.
fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether `s` reads back as the same string, unquoted, under YAML 1.1 and YAML 1.2.
fn is_plain_safe(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Starting with a letter or `/` rules out numbers, timestamps, sexagesimals and indicators.
    (first.is_ascii_alphabetic() || first == '/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'-' | b'_'))
        && !WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;
    use serde_json::json;

    fn parse(yaml: &str) -> Value {
        Value::deserialize(yaml_serde::Deserializer::from_str(yaml)).unwrap()
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "yes",
            "On",
            "n",
            "0440",
            "017",
            "0x1F",
            "1_000",
            "1e3",
            ".inf",
            "2001-12-14",
            "2036-11-24T06:38:42Z",
            "12:30:45",
            "<<",
            "=",
            "~",
            "null",
            "",
            " lead",
            "a: b",
            "#x",
            "-",
            "line\nbreak",
            "tab\there",
            "quote\"d",
            "ünï",
        ] {
            assert!(!is_plain_safe(s), "{s:?} must be quoted");
        }
        for s in [
            "secret-vol",
            "/tmp",
            "secrets.k8s.aws/status",
            "busybox",
            "IfNotPresent",
        ] {
            assert!(is_plain_safe(s), "{s:?} can be plain");
        }
    }

    #[test]
    fn output_parses_back_to_the_same_value() {
        let value = json!({
            "apiVersion": "apps/v1",
            "metadata": { "annotations": { "a": "on", "b": "0440", "c": "2001-12-14" }, "labels": {} },
            "spec": {
                "replicas": 3, "ratio": 1.5, "flag": true, "nothing": null, "empty": [],
                "containers": [
                    { "name": "app", "command": ["sh", "-c", "echo $(cat /tmp/secret) && sleep 3600"],
                      "env": [{ "name": "X", "value": "yes" }], "ports": [] },
                    { "name": "b", "nested": [[1, 2], [], ["x"]] }
                ]
            }
        });
        let yaml = to_string(&value);
        assert_eq!(parse(&yaml), value, "{yaml}");
        assert!(
            yaml.contains("  containers:\n  - command:\n    - sh\n"),
            "{yaml}"
        );
    }
}
