//! Rendering fetched values into files: the key selection (a top-level key or a JMESPath
//! expression), the formats (`raw`, `json`, `env`, `split`) and the kubelet's env file for the
//! `env.<n>` annotations. Pure: bytes in, files out. Every error names the secret, the key and
//! the annotation, never a value.

use std::collections::BTreeMap;

use serde_json::Value;

use super::failure::{Failure, FailureKind};
use crate::contract::{self, SecretPlan};
use crate::spec::{self, KeySelector, OutputFormat, is_env_var_name};

/// Largest env file the kubelet reads (the webhook sizes the volume for it).
pub const MAX_ENV_FILE_BYTES: usize = spec::MAX_ENV_FILE_BYTES;

/// One file of a set, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Its path.
    pub path: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What one secret contributes: its files and its env vars.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Files, relative to the output directory.
    pub files: Vec<OutputFile>,
    /// `(VAR, value)` for the kubelet's env file.
    pub env: Vec<(String, String)>,
}

fn unusable(secret: &SecretPlan, code: &str, detail: String) -> Failure {
    Failure::new(FailureKind::Unusable, code, detail).about(secret.label())
}

/// Render one secret's value.
pub fn render(secret: &SecretPlan, value: &[u8]) -> Result<Rendered, Failure> {
    let needs_json =
        secret.key.is_some() || secret.format != OutputFormat::Raw || !secret.env.is_empty();
    let file = secret.file_name.as_str().to_owned();
    if !needs_json {
        return Ok(Rendered {
            files: vec![OutputFile {
                path: file,
                bytes: value.to_vec(),
            }],
            env: Vec::new(),
        });
    }
    let json = parse_json(secret, value)?;
    let selected = match &secret.key {
        Some(key) => select(secret, &json, key)?,
        None => json,
    };
    let mut rendered = Rendered::default();
    match secret.format {
        OutputFormat::Raw => rendered.files.push(OutputFile {
            path: file,
            bytes: match &secret.key {
                // Parsed only for the env vars: the file is the value as stored.
                None => value.to_vec(),
                Some(_) => scalar_text(&selected).into_bytes(),
            },
        }),
        OutputFormat::Json => rendered.files.push(OutputFile {
            path: file,
            bytes: match &secret.key {
                // The value as stored, already checked to be JSON.
                None => value.to_vec(),
                Some(_) => selected.to_string().into_bytes(),
            },
        }),
        OutputFormat::Env => {
            let object = object(secret, &selected, spec::SECRET_FORMAT)?;
            let mut lines = Vec::with_capacity(object.len());
            for (at, (key, value)) in object.iter().enumerate() {
                // The secret's own keys are never named: termination messages are readable
                // with pods/get. Their place in sorted order finds them.
                if !is_env_var_name(key) {
                    return Err(unusable(
                        secret,
                        "NotAnEnvVarName",
                        format!(
                            "the {} of the {} top-level keys of {} (in sorted order) is not an \
                             environment variable name (letters, digits and _), so {}=env cannot \
                             write it; use split or json",
                            ordinal(at),
                            object.len(),
                            secret.label(),
                            secret.annotation(spec::SECRET_FORMAT)
                        ),
                    ));
                }
                let text = scalar_text(value);
                if let Some(problem) = dotenv_problem(&text) {
                    return Err(unusable(
                        secret,
                        "Unrepresentable",
                        format!(
                            "the value of the {} of the {} top-level keys of {} (in sorted order) \
                             {problem}, which a dotenv file cannot hold so that sh and \
                             python-dotenv both read it back ({}=env); use split or json",
                            ordinal(at),
                            object.len(),
                            secret.label(),
                            secret.annotation(spec::SECRET_FORMAT)
                        ),
                    ));
                }
                lines.push((key.clone(), text));
            }
            rendered.files.push(OutputFile {
                path: file,
                bytes: env_file(&lines).into_bytes(),
            });
        }
        OutputFormat::Split => {
            let object = object(secret, &selected, spec::SECRET_FORMAT)?;
            for (at, (key, value)) in object.iter().enumerate() {
                if let Some(problem) = file_name_problem(key) {
                    return Err(unusable(
                        secret,
                        "NotAFileName",
                        format!(
                            "the {} of the {} top-level keys of {} (in sorted order) {problem}, \
                             so {}=split cannot write it as a file",
                            ordinal(at),
                            object.len(),
                            secret.label(),
                            secret.annotation(spec::SECRET_FORMAT)
                        ),
                    ));
                }
                rendered.files.push(OutputFile {
                    path: format!("{file}/{key}"),
                    bytes: scalar_text(value).into_bytes(),
                });
            }
        }
    }
    if !secret.env.is_empty() {
        let object = object(secret, &selected, spec::ENV)?;
        for binding in &secret.env {
            let Some(value) = object.get(&binding.key) else {
                return Err(missing_key(secret, &binding.key, spec::ENV, &object));
            };
            let text = scalar_text(value);
            if let Some(problem) = kubelet_env_problem(&text) {
                return Err(unusable(
                    secret,
                    "Unrepresentable",
                    format!(
                        "the value of key {} of {} {problem}, which the kubelet's env file cannot \
                         hold, so {} cannot set {}; read it from the file instead",
                        binding.key,
                        secret.label(),
                        secret.annotation(spec::ENV),
                        binding.var
                    ),
                ));
            }
            rendered.env.push((binding.var.clone(), text));
        }
    }
    Ok(rendered)
}

/// The kubelet's env file (`contract::ENV_FILE`) for all env vars of a pod.
pub fn kubelet_env_file(vars: &[(String, String)]) -> Result<OutputFile, Failure> {
    let text = env_file(vars);
    if text.len() > MAX_ENV_FILE_BYTES {
        return Err(Failure::new(
            FailureKind::Unusable,
            "EnvFileTooLarge",
            format!(
                "the env vars of the {} annotations take {} bytes, more than the {} bytes the \
                 kubelet reads from an env file; read the large values from files instead",
                spec::ENV,
                text.len(),
                MAX_ENV_FILE_BYTES
            ),
        ));
    }
    Ok(OutputFile {
        path: contract::ENV_FILE_NAME.to_owned(),
        bytes: text.into_bytes(),
    })
}

/// `KEY='value'` lines: the format both the kubelet and `sh` read literally.
fn env_file(vars: &[(String, String)]) -> String {
    let mut text = String::new();
    for (key, value) in vars {
        text.push_str(key);
        text.push_str("='");
        text.push_str(value);
        text.push_str("'\n");
    }
    text
}

/// Why a value cannot go into the kubelet's env file: its parser ends the value at the first
/// `'`, drops a `\r` before a line end, and treats an empty value as a missing key.
fn kubelet_env_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("is empty (the kubelet treats an empty value as a missing key)")
    } else if value.contains('\'') {
        Some("holds a single quote (')")
    } else if value.contains('\0') {
        Some("holds a NUL byte")
    } else if value.contains('\r') {
        Some("holds a carriage return")
    } else {
        None
    }
}

/// Why a value cannot go into a dotenv file that `sh` and python-dotenv read back the same:
/// inside single quotes `sh` takes every byte literally, python-dotenv turns `\\` and `\'` into
/// one character, expands `${NAME}`, and reads lines with universal newlines.
fn dotenv_problem(value: &str) -> Option<&'static str> {
    if value.contains('\'') {
        Some("holds a single quote (')")
    } else if value.contains('\0') {
        Some("holds a NUL byte")
    } else if value.contains('\r') {
        Some("holds a carriage return")
    } else if value.contains("\\\\") || value.ends_with('\\') {
        Some("holds a doubled or trailing backslash")
    } else if value
        .match_indices("${")
        .any(|(at, _)| value[at..].contains('}'))
    {
        // python-dotenv expands `${NAME}` and `${NAME:-default}` even inside single quotes;
        // `sh` does not.
        Some("holds ${...} (python-dotenv would expand it, sh would not)")
    } else {
        None
    }
}

/// Why a JSON key cannot be a file name in a `split` directory.
fn file_name_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("is empty")
    } else if key.contains('/') {
        Some("holds a /")
    } else if key == "." || key == ".." || key.starts_with("..") {
        Some("is . or .. or starts with .. (reserved)")
    } else if key.chars().any(char::is_control) {
        Some("holds a control character")
    } else if key.len() > 255 {
        Some("is longer than 255 bytes")
    } else {
        None
    }
}

fn parse_json(secret: &SecretPlan, value: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(value).map_err(|e| {
        let needs = if secret.key.is_some() {
            spec::SECRET_KEY
        } else if secret.format != OutputFormat::Raw {
            spec::SECRET_FORMAT
        } else {
            spec::ENV
        };
        unusable(
            secret,
            "NotJson",
            format!(
                "the value of {} is not JSON ({}, at line {} column {}), but {} needs a JSON \
                 value",
                secret.label(),
                e.classify_name(),
                e.line(),
                e.column(),
                secret.annotation(needs)
            ),
        )
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "data error",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

fn select(secret: &SecretPlan, json: &Value, key: &KeySelector) -> Result<Value, Failure> {
    let found = if key.is_expression() {
        let expression = jmespath::compile(key.as_str()).map_err(|e| {
            unusable(
                secret,
                "BadKey",
                format!(
                    "{} is not a JMESPath expression: {e}",
                    secret.annotation(spec::SECRET_KEY)
                ),
            )
        })?;
        let result = expression.search(json).map_err(|e| {
            unusable(
                secret,
                "BadKey",
                format!(
                    "{} cannot be applied to the value of {}: {}",
                    secret.annotation(spec::SECRET_KEY),
                    secret.label(),
                    e.reason
                ),
            )
        })?;
        serde_json::to_value(&*result).unwrap_or(Value::Null)
    } else {
        json.get(key.as_str()).cloned().unwrap_or(Value::Null)
    };
    if found.is_null() {
        let keys = json.as_object().cloned().unwrap_or_default();
        return Err(missing_key(
            secret,
            key.as_str(),
            spec::SECRET_KEY,
            &keys.into_iter().collect(),
        ));
    }
    Ok(found)
}

fn missing_key(
    secret: &SecretPlan,
    key: &str,
    annotation: &str,
    object: &BTreeMap<String, Value>,
) -> Failure {
    // Only the count: the termination message is readable by anyone who may get the pod, and
    // the key names of a secret are for those who may read it.
    let count = match object.len() {
        0 => "no top-level keys".to_owned(),
        1 => "1 top-level key".to_owned(),
        n => format!("{n} top-level keys"),
    };
    unusable(
        secret,
        "KeyNotFound",
        format!(
            "key {key:?} of {} selects nothing in the value of {}, which has {count}",
            secret.annotation(annotation),
            secret.label(),
        ),
    )
}

/// `1st`, `2nd`, `3rd`, `4th`, ... for the 0-based `index`.
fn ordinal(index: usize) -> String {
    let n = index + 1;
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn object(
    secret: &SecretPlan,
    value: &Value,
    annotation: &str,
) -> Result<BTreeMap<String, Value>, Failure> {
    match value {
        Value::Object(map) => Ok(map.clone().into_iter().collect()),
        other => Err(unusable(
            secret,
            "NotAnObject",
            format!(
                "{} needs a JSON object with keys, but the (selected) value of {} is {}",
                secret.annotation(annotation),
                secret.label(),
                kind_of(other)
            ),
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string as is; anything else as compact JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{EnvBinding, RelativeFileName, SecretArn, SecretName};

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
    const VALUE: &str = r#"{"username":"app","password":"p4ss","port":5432,"tls":true,"db":{"hosts":["a","b"]},"nothing":null}"#;

    fn secret(key: Option<&str>, format: OutputFormat, env: &str) -> SecretPlan {
        let mut plan = SecretPlan::for_arn(SecretArn::parse(ARN).unwrap());
        plan.name = Some(SecretName::parse("db").unwrap());
        plan.file_name = RelativeFileName::parse("db").unwrap();
        plan.key = key.map(|k| KeySelector::parse(k).unwrap());
        plan.format = format;
        plan.env = if env.is_empty() {
            Vec::new()
        } else {
            EnvBinding::parse_list(env).unwrap()
        };
        plan
    }

    fn one_file(secret: &SecretPlan, value: &str) -> String {
        let rendered = render(secret, value.as_bytes()).unwrap();
        assert_eq!(rendered.files.len(), 1);
        String::from_utf8(rendered.files[0].bytes.clone()).unwrap()
    }

    #[test]
    fn raw_keys_flat_nested_and_not_strings() {
        let raw = |key| one_file(&secret(Some(key), OutputFormat::Raw, ""), VALUE);
        assert_eq!(raw("password"), "p4ss");
        assert_eq!(raw("port"), "5432");
        assert_eq!(raw("tls"), "true");
        assert_eq!(raw("db.hosts[1]"), "b");
        assert_eq!(raw("db"), r#"{"hosts":["a","b"]}"#);
        // Without a key the bytes are as stored, JSON or not.
        assert_eq!(
            one_file(&secret(None, OutputFormat::Raw, ""), "not json"),
            "not json"
        );
    }

    #[test]
    fn json_and_split_and_env_formats() {
        assert_eq!(
            one_file(&secret(None, OutputFormat::Json, ""), VALUE),
            VALUE
        );
        assert_eq!(
            one_file(&secret(Some("db"), OutputFormat::Json, ""), VALUE),
            r#"{"hosts":["a","b"]}"#
        );
        let split = render(&secret(None, OutputFormat::Split, ""), VALUE.as_bytes()).unwrap();
        let files: Vec<(&str, &[u8])> = split
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.bytes.as_slice()))
            .collect();
        assert_eq!(
            files,
            [
                ("db/db", br#"{"hosts":["a","b"]}"#.as_slice()),
                ("db/nothing", b"null"),
                ("db/password", b"p4ss"),
                ("db/port", b"5432"),
                ("db/tls", b"true"),
                ("db/username", b"app"),
            ]
        );
        let env = one_file(
            &secret(None, OutputFormat::Env, ""),
            r#"{"B":"two words","A":"$HOME `x` \"q\""}"#,
        );
        assert_eq!(env, "A='$HOME `x` \"q\"'\nB='two words'\n");
    }

    #[test]
    fn env_bindings_feed_the_kubelet_env_file() {
        let rendered = render(
            &secret(None, OutputFormat::Raw, "DB_USER=username,DB_PORT=port"),
            VALUE.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            rendered.env,
            [
                ("DB_USER".to_owned(), "app".to_owned()),
                ("DB_PORT".to_owned(), "5432".to_owned())
            ]
        );
        let file = kubelet_env_file(&rendered.env).unwrap();
        assert_eq!(file.path, contract::ENV_FILE_NAME);
        assert_eq!(file.bytes, b"DB_USER='app'\nDB_PORT='5432'\n");
        let big = vec![("A".to_owned(), "x".repeat(MAX_ENV_FILE_BYTES))];
        assert_eq!(kubelet_env_file(&big).unwrap_err().code, "EnvFileTooLarge");
    }

    #[test]
    fn errors_name_no_key_of_the_secret_only_counts_and_places() {
        // Readable by anyone with pods/get: key names of the secret stay out.
        let keys: Vec<String> = (0..25).map(|i| format!("hidden_key_{i:02}")).collect();
        let value = serde_json::to_string(
            &keys
                .iter()
                .map(|k| (k.clone(), "v"))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap();
        let failure = render(
            &secret(Some("passwd"), OutputFormat::Raw, ""),
            value.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(failure.code, "KeyNotFound");
        assert!(
            failure.detail.contains("which has 25 top-level keys"),
            "{}",
            failure.detail
        );
        // The key the annotation asked for is the pod's own: it is named.
        assert!(failure.detail.contains("\"passwd\""), "{}", failure.detail);
        let message = failure.message("arn", None);
        for key in &keys {
            assert!(!message.contains(key.as_str()), "{message}");
        }
        assert!(message.contains("jq keys"), "{message}");
        let failure = render(
            &secret(None, OutputFormat::Raw, "A=missing"),
            b"{\"only\":\"v\"}",
        )
        .unwrap_err();
        assert!(
            failure.detail.contains("which has 1 top-level key"),
            "{}",
            failure.detail
        );
        let cases = [
            (
                OutputFormat::Env,
                r#"{"GOOD":"v","bad-key":"v"}"#,
                "the 2nd of the 2",
            ),
            (
                OutputFormat::Env,
                r#"{"A":"v","B":"v","C":"it's"}"#,
                "the 3rd of the 3",
            ),
            (
                OutputFormat::Split,
                r#"{"..bad":"v","ok":"v"}"#,
                "the 1st of the 2",
            ),
        ];
        for (format, value, place) in cases {
            let failure = render(&secret(None, format, ""), value.as_bytes()).unwrap_err();
            assert!(failure.detail.contains(place), "{}", failure.detail);
            for named in ["bad-key", "\"C\"", "key C", "..bad"] {
                assert!(!failure.detail.contains(named), "{}", failure.detail);
            }
        }
        assert_eq!(
            (0..24).map(ordinal).collect::<Vec<_>>()[..4],
            ["1st", "2nd", "3rd", "4th"]
        );
        assert_eq!(ordinal(10), "11th");
        assert_eq!(ordinal(20), "21st");
        assert_eq!(ordinal(111), "112th");
    }

    #[test]
    fn errors_name_the_secret_the_key_and_the_annotation_never_the_value() {
        let cases = [
            (
                secret(Some("passwd"), OutputFormat::Raw, ""),
                VALUE,
                "KeyNotFound",
                "secrets.k8s.aws/secret-key.db",
            ),
            (
                secret(Some("nothing"), OutputFormat::Raw, ""),
                VALUE,
                "KeyNotFound",
                "secrets.k8s.aws/secret-key.db",
            ),
            (
                secret(Some("password"), OutputFormat::Raw, ""),
                "p4ss-not-json",
                "NotJson",
                "secrets.k8s.aws/secret-key.db",
            ),
            (
                secret(None, OutputFormat::Split, ""),
                r#"["p4ss"]"#,
                "NotAnObject",
                "secrets.k8s.aws/secret-format.db",
            ),
            (
                secret(None, OutputFormat::Env, ""),
                r#"{"a-b":"p4ss"}"#,
                "NotAnEnvVarName",
                "secrets.k8s.aws/secret-format.db",
            ),
            (
                secret(None, OutputFormat::Env, ""),
                r#"{"A":"it's p4ss"}"#,
                "Unrepresentable",
                "secrets.k8s.aws/secret-format.db",
            ),
            (
                secret(None, OutputFormat::Split, ""),
                r#"{"../x":"p4ss"}"#,
                "NotAFileName",
                "secrets.k8s.aws/secret-format.db",
            ),
            (
                secret(None, OutputFormat::Raw, "A=missing"),
                VALUE,
                "KeyNotFound",
                "secrets.k8s.aws/env.db",
            ),
            (
                secret(None, OutputFormat::Raw, "A=password"),
                r#"{"password":"it's p4ss"}"#,
                "Unrepresentable",
                "secrets.k8s.aws/env.db",
            ),
            (
                secret(None, OutputFormat::Raw, "A=password"),
                r#"{"password":""}"#,
                "Unrepresentable",
                "secrets.k8s.aws/env.db",
            ),
        ];
        for (secret, value, code, annotation) in cases {
            let failure = render(&secret, value.as_bytes()).unwrap_err();
            assert_eq!(failure.code, code, "{failure:?}");
            assert_eq!(failure.kind, FailureKind::Unusable);
            assert!(
                failure.detail.contains(annotation),
                "{code}: {}",
                failure.detail
            );
            assert!(failure.detail.contains("secret db"), "{}", failure.detail);
            assert!(
                !failure.detail.contains("p4ss"),
                "value leaked: {}",
                failure.detail
            );
            assert_eq!(failure.secret.as_deref(), Some(secret.label().as_str()));
        }
    }
}
