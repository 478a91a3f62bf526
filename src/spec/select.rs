//! What is taken from a secret's value and how it is written: the secret's name, its version,
//! the key selected from a JSON value, the output format, and the env vars it feeds.

use std::fmt;

use super::quote;

/// The name `<n>` of one of a pod's secrets, from the `.<n>` suffix of its annotation keys: a
/// DNS label (1-63 of lowercase letters, digits and `-`, starting and ending alphanumeric).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// Validate a name; the problem if it is not a DNS label.
    pub fn parse(value: &str) -> Result<Self, String> {
        if Self::is_valid(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(format!(
                "the secret name {} after the dot is not a DNS label (1-63 of lowercase \
                 letters, digits and -, starting and ending with a letter or digit)",
                quote(value)
            ))
        }
    }

    /// Whether `value` is a DNS label, without building the name.
    pub fn is_valid(value: &str) -> bool {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version of a secret to fetch. For a Secrets Manager secret a staging label or version
/// id; for a parameter a label or version number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionSelector {
    /// A staging label (Secrets Manager) or parameter label, e.g. `AWSCURRENT`.
    Stage(String),
    /// A version id (Secrets Manager) or version number (Parameter Store).
    Id(String),
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSelector::Stage(stage) => write!(f, "stage {stage}"),
            VersionSelector::Id(id) => write!(f, "version {id}"),
        }
    }
}

/// How a secret's (selected) value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum OutputFormat {
    /// The value as is: the SecretString or SecretBinary bytes; with a key, a string as is and
    /// anything else as compact JSON.
    #[default]
    Raw,
    /// The value as JSON.
    Json,
    /// The top-level keys as a dotenv file (`KEY='value'` lines) that `sh` and python-dotenv
    /// read back exactly.
    Env,
    /// One file per top-level key inside a directory.
    Split,
}

impl OutputFormat {
    /// Every format, in the order the annotation documentation lists them.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Raw,
        OutputFormat::Json,
        OutputFormat::Env,
        OutputFormat::Split,
    ];

    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Json => "json",
            OutputFormat::Env => "env",
            OutputFormat::Split => "split",
        }
    }

    /// Parse an annotation value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == value)
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of a JSON secret value to use: a JMESPath expression (`username`, `db.host`,
/// `hosts[0]`, `"key-with-dashes"`), or, when the value is not a valid expression, a top-level
/// key taken literally (`my-key`). A value that holds JMESPath's own syntax
/// ([`EXPRESSION_SYNTAX`]) but does not parse is a broken expression, not a key: refused with
/// the parse error, at admission rather than at the pod's start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySelector {
    text: String,
    expression: bool,
}

/// Longest key selector accepted.
const MAX_SELECTOR: usize = 1024;

/// Characters that only JMESPath syntax uses (brackets, braces, parentheses, pipe, wildcard,
/// quotes, backtick): a value holding one is meant as an expression. Keys made of letters,
/// digits and other characters (`my-key`, `db.pass-word`, `user@example.com`) are taken
/// literally when they do not parse.
pub const EXPRESSION_SYNTAX: &[char] = &['[', ']', '{', '}', '(', ')', '|', '*', '"', '\'', '`'];

impl KeySelector {
    /// Validate a selector; the problem if it is unusable.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err(
                "is empty; give a JSON key such as username, or remove the annotation".into(),
            );
        }
        if value.len() > MAX_SELECTOR {
            return Err(format!("is longer than {MAX_SELECTOR} bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{} holds a control character", quote(value)));
        }
        let expression = match jmespath::compile(value) {
            Ok(_) => true,
            Err(error) if value.contains(EXPRESSION_SYNTAX) => {
                let reason = match &error.reason {
                    jmespath::ErrorReason::Parse(reason) => reason.clone(),
                    other => other.to_string(),
                };
                return Err(format!(
                    "{} is not a valid JMESPath expression: {} at character {}",
                    quote(value),
                    reason.trim_end_matches('.'),
                    error.offset + 1
                ));
            }
            Err(_) => false,
        };
        Ok(Self {
            text: value.to_owned(),
            expression,
        })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it is a JMESPath expression (else a literal top-level key).
    pub fn is_expression(&self) -> bool {
        self.expression
    }
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An environment variable name that every consumer agrees on: the kubelet, `sh` and
/// python-dotenv (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 256
}

/// One `VAR=key` of an `env.<n>` annotation: the app containers get env var `var` with the value
/// of the top-level `key` of the secret's (selected) JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvBinding {
    /// The env var's name.
    pub var: String,
    /// The JSON key whose value it gets.
    pub key: String,
}

impl EnvBinding {
    /// Parse `VAR=key[,VAR=key...]`; the problem if it is malformed.
    pub fn parse_list(value: &str) -> Result<Vec<Self>, String> {
        let mut bindings: Vec<EnvBinding> = Vec::new();
        let mut vars = std::collections::HashSet::new();
        for item in value.split(',') {
            let item = item.trim();
            let Some((var, key)) = item.split_once('=') else {
                return Err(format!(
                    "{} is not VAR=key (e.g. DB_USER=username,DB_PASSWORD=password)",
                    quote(item)
                ));
            };
            let (var, key) = (var.trim(), key.trim());
            if !is_env_var_name(var) {
                return Err(format!(
                    "{} is not an environment variable name (letters, digits and _, not \
                     starting with a digit)",
                    quote(var)
                ));
            }
            if key.is_empty() || key.chars().any(char::is_control) {
                return Err(format!(
                    "the key for {var} is empty or holds a control character; give the JSON key \
                     whose value {var} gets"
                ));
            }
            if !vars.insert(var) {
                return Err(format!("{var} is given twice"));
            }
            bindings.push(EnvBinding {
                var: var.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(bindings)
    }

    /// Render a list back as `VAR=key,...` (what [`Self::parse_list`] reads).
    pub fn render_list(bindings: &[EnvBinding]) -> String {
        bindings
            .iter()
            .map(|b| format!("{}={}", b.var, b.key))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The problem with a version stage or id, if any.
pub fn version_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.len() > 256 {
        Some("is longer than 256 characters".to_owned())
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.+=@/".contains(&b))
    {
        Some(format!(
            "{} holds characters other than letters, digits and _-.+=@/",
            quote(value)
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_dns_labels() {
        for good in ["db", "a", "db-2", "0", &"x".repeat(63)] {
            assert!(SecretName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Db", "-db", "db-", "db_x", "db.x", &"x".repeat(64)] {
            assert!(SecretName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_selectors_are_expressions_or_literal_keys() {
        let flat = KeySelector::parse("username").unwrap();
        assert!(flat.is_expression());
        assert!(KeySelector::parse("db.hosts[0]").unwrap().is_expression());
        assert!(KeySelector::parse("\"my-key\"").unwrap().is_expression());
        let literal = KeySelector::parse("my-key").unwrap();
        assert!(!literal.is_expression());
        assert_eq!(literal.as_str(), "my-key");
        // Plain keys that are no expression stay literal keys (issue 19 item 7).
        for plain in ["db.pass-word", "user@example.com", "a b", "x-1", "db."] {
            let key = KeySelector::parse(plain).unwrap_or_else(|e| panic!("{plain}: {e}"));
            assert!(!key.is_expression(), "{plain}");
        }
        // A broken expression is refused with the parser's reason and where.
        for (broken, reason) in [
            ("db.hosts[0", "at character 11"),
            ("db.hosts[0", "db.hosts[0"),
            ("db | ", "at character"),
            ("\"my-key", "at character"),
            ("a[?b==`1]", "at character"),
            ("my-list[0]", "at character"),
        ] {
            let problem = KeySelector::parse(broken).unwrap_err();
            assert!(
                problem.contains("is not a valid JMESPath expression") && problem.contains(reason),
                "{broken}: {problem}"
            );
            assert!(!problem.contains('\n'), "one line: {problem}");
        }
        assert!(KeySelector::parse("").is_err());
        assert!(KeySelector::parse("a\nb").is_err());
    }

    #[test]
    fn env_bindings() {
        let list = EnvBinding::parse_list("DB_USER=username, DB_PASSWORD = password").unwrap();
        assert_eq!(
            list,
            [
                EnvBinding {
                    var: "DB_USER".into(),
                    key: "username".into()
                },
                EnvBinding {
                    var: "DB_PASSWORD".into(),
                    key: "password".into()
                },
            ]
        );
        assert_eq!(
            EnvBinding::render_list(&list),
            "DB_USER=username,DB_PASSWORD=password"
        );
        for (bad, expect) in [
            ("DB_USER", "not VAR=key"),
            ("1X=a", "not an environment variable name"),
            ("A-B=a", "not an environment variable name"),
            ("A=", "empty"),
            ("A=a,A=b", "twice"),
            ("", "not VAR=key"),
        ] {
            let err = EnvBinding::parse_list(bad).unwrap_err();
            assert!(err.contains(expect), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for format in OutputFormat::ALL {
            assert_eq!(OutputFormat::parse(format.as_str()), Some(format));
        }
        assert_eq!(OutputFormat::parse("yaml"), None);
    }
}
