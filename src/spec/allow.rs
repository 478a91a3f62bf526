//! Namespace allow-lists of secrets: the grammar of the Namespace annotation
//! [`ALLOWED_SECRETS`](super::ALLOWED_SECRETS) and the cluster-wide [`Mode`], and the one matcher
//! the CLI uses. The chart's ValidatingAdmissionPolicy (`templates/allowlist-policy.yaml`)
//! renders the same rule in CEL for the API server; `tests/it` runs one case table through both.
//!
//! The annotation is a comma-separated list of patterns (blanks around each are ignored):
//!
//! | Pattern | Allows |
//! |---|---|
//! | `*` | every value, secret names included |
//! | `arn:P:S:R:A:RESOURCE` | that ARN exactly (a partial ARN pattern allows only the partial ARN) |
//! | `*` as the whole region or account field | any region, any account |
//! | `RESOURCE` ending in `*` | any resource that starts with what comes before the `*` |
//!
//! A value is split at its first five colons into six fields (`arn`, partition, service,
//! region, account, resource: `secret:NAME` or `parameter/NAME`) and compared field by field.
//! A pattern with a `*` anywhere else, or without six fields starting with `arn`, matches
//! nothing ([`AllowList::problems`] says why). A value that is not an ARN (a secret's name)
//! matches only `*`.
//!
//! Matching is on the annotation's text, as the API server sees it, so the CLI and the
//! admission policy cannot disagree about a value the webhook would refuse anyway.
//!
//! The CLI (`inject` and `iam-policy`, through `offline::allow_list_warnings`) builds a
//! [`NamespaceRule`] for each `Namespace` among its input documents, with the chart's mode
//! (`--allow-list-mode`), and warns of each pod template of that namespace whose
//! [`NamespaceRule::check_pod`] fails ("the API server would refuse its pods") and of each of
//! [`AllowList::problems`].

use std::collections::BTreeMap;
use std::fmt;

use super::{ALLOWED_SECRETS, SECRET_ARN, SourceArn, quote};

/// Which namespaces are restricted (the chart's `allowList.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No allow-lists.
    Off,
    /// Only namespaces with the [`ALLOWED_SECRETS`] annotation are restricted (the default).
    #[default]
    Annotated,
    /// Every namespace: a secret's or parameter's name must start with `<namespace>/`, unless
    /// the namespace's annotation allows the value.
    NamespacePrefix,
}

impl Mode {
    /// The mode's name in the chart's values.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Annotated => "annotated",
            Mode::NamespacePrefix => "namespace-prefix",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "off" => Ok(Mode::Off),
            "annotated" => Ok(Mode::Annotated),
            "namespace-prefix" => Ok(Mode::NamespacePrefix),
            other => Err(format!(
                "allow-list mode {} is not off, annotated or namespace-prefix",
                quote(other)
            )),
        }
    }
}

/// One pattern of the annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`.
    Any,
    /// Six fields, compared as the policy compares them.
    Fields([String; 6]),
}

/// The six `:`-separated fields of an ARN (the last keeps any further colons), or `None`.
fn fields(text: &str) -> Option<[&str; 6]> {
    let mut parts = text.splitn(6, ':');
    let out = [(); 6].map(|()| parts.next());
    if out.iter().any(Option::is_none) {
        return None;
    }
    Some(out.map(Option::unwrap_or_default))
}

impl Pattern {
    fn parse(text: &str) -> Self {
        match (text, fields(text)) {
            ("*", _) => Pattern::Any,
            (_, Some(f)) => Pattern::Fields(f.map(str::to_owned)),
            // Fewer than six fields: like the policy's `size(pf) == 6`, matches nothing.
            (_, None) => Pattern::Fields(Default::default()),
        }
    }

    /// Why this pattern can never match, if it cannot.
    fn problem(text: &str) -> Option<String> {
        if text == "*" {
            return None;
        }
        let Some(f) = fields(text) else {
            return Some("has fewer than six :-separated fields".to_owned());
        };
        if f[0] != "arn" {
            return Some("does not start with arn:".to_owned());
        }
        if f[1..3].iter().any(|x| x.is_empty() || x.contains('*')) {
            return Some("needs a partition and a service without *".to_owned());
        }
        if f[3..5]
            .iter()
            .any(|x| x.is_empty() || (x.contains('*') && *x != "*"))
        {
            return Some("may have * only as the whole region or account field".to_owned());
        }
        if f[5].trim_end_matches('*').contains('*') || f[5].ends_with("**") {
            return Some("may have * only at the end of the resource".to_owned());
        }
        None
    }

    /// The policy's match of one pattern against one value.
    fn matches(&self, value: &str) -> bool {
        let f = match self {
            Pattern::Any => return true,
            Pattern::Fields(f) => f,
        };
        let Some(v) = fields(value) else {
            return false;
        };
        !value.contains('*')
            && f[0] == "arn"
            && v[0] == "arn"
            && f[1] == v[1]
            && f[2] == v[2]
            && (f[3] == "*" || f[3] == v[3])
            && (f[4] == "*" || f[4] == v[4])
            && match f[5].strip_suffix('*') {
                Some(prefix) => v[5].starts_with(prefix),
                None => f[5] == v[5],
            }
    }
}

/// The patterns of a Namespace's [`ALLOWED_SECRETS`] annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    text: String,
    patterns: Vec<Pattern>,
    problems: Vec<String>,
}

impl AllowList {
    /// Read the annotation's value. Never fails: the API server cannot refuse a Namespace for
    /// it either; a pattern that can never match is listed by [`AllowList::problems`].
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        let mut problems = Vec::new();
        for item in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(problem) = Pattern::problem(item) {
                problems.push(format!(
                    "annotation {ALLOWED_SECRETS}: pattern {} {problem}, so it allows nothing",
                    quote(item)
                ));
            }
            patterns.push(Pattern::parse(item));
        }
        Self {
            text: text.to_owned(),
            patterns,
            problems,
        }
    }

    /// Whether a pattern allows this `secret-arn` value.
    pub fn allows(&self, value: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(value))
    }

    /// The patterns that can never match, and why (for the CLI's notes).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The annotation as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What one namespace allows: the cluster's mode, the namespace's name and its annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRule {
    mode: Mode,
    namespace: String,
    list: Option<AllowList>,
}

/// A pod names a secret its namespace does not allow. The message is the policy's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "secret-inject: annotation {key}: {value} is not allowed in namespace {namespace} ({rule}); \
     ask a cluster admin to add a pattern to the namespace annotation {ALLOWED_SECRETS}, or use \
     a secret the namespace allows"
)]
pub struct AllowError {
    /// The pod's annotation key (`secret-arn` or `secret-arn.<n>`).
    pub key: String,
    /// Its value (shortened).
    pub value: String,
    /// The namespace.
    pub namespace: String,
    /// What the namespace allows.
    pub rule: String,
}

impl NamespaceRule {
    /// The rule for `namespace` under `mode`, given its annotations.
    pub fn new(mode: Mode, namespace: &str, annotations: &BTreeMap<String, String>) -> Self {
        Self {
            mode,
            namespace: namespace.to_owned(),
            list: annotations
                .get(ALLOWED_SECRETS)
                .map(|t| AllowList::parse(t)),
        }
    }

    /// Whether pods of this namespace are checked at all.
    pub fn restricted(&self) -> bool {
        match self.mode {
            Mode::Off => false,
            Mode::Annotated => self.list.is_some(),
            Mode::NamespacePrefix => true,
        }
    }

    /// The namespace's allow-list, if it is annotated.
    pub fn allow_list(&self) -> Option<&AllowList> {
        self.list.as_ref()
    }

    /// Whether a pod of this namespace may name `value` in a `secret-arn` annotation.
    pub fn allows(&self, value: &str) -> bool {
        if !self.restricted() {
            return true;
        }
        let own_prefix = self.mode == Mode::NamespacePrefix
            && !value.contains('*')
            && fields(value).is_some_and(|v| {
                v[0] == "arn"
                    && ((v[2] == "secretsmanager"
                        && v[5].starts_with(&format!("secret:{}/", self.namespace)))
                        || (v[2] == "ssm"
                            && v[5].starts_with(&format!("parameter/{}/", self.namespace))))
            });
        own_prefix || self.list.as_ref().is_some_and(|l| l.allows(value))
    }

    /// Whether a pod of this namespace may read `source`.
    pub fn allows_source(&self, source: &SourceArn) -> bool {
        self.allows(source.as_str())
    }

    /// Check a pod's annotations: the first `secret-arn[.<n>]` (in key order, as the API server
    /// lists them) whose value is not allowed.
    pub fn check_pod(&self, annotations: &BTreeMap<String, String>) -> Result<(), AllowError> {
        let arn_key = |k: &str| {
            k == SECRET_ARN
                || k.strip_prefix(SECRET_ARN)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let Some((key, value)) = annotations
            .iter()
            .filter(|(k, _)| arn_key(k))
            .find(|(_, v)| !self.allows(v))
        else {
            return Ok(());
        };
        let short = |text: &str, max: usize| match text.char_indices().nth(max) {
            Some((end, _)) => format!("{}...", &text[..end]),
            None => text.to_owned(),
        };
        let listed = self.list.as_ref().map(|l| match l.as_str() {
            "" => "(nothing)".to_owned(),
            text => short(text, 1000),
        });
        let rule = match (self.mode, listed) {
            (Mode::NamespacePrefix, Some(listed)) => format!(
                "secret and parameter names must start with {}/, or match its annotation \
                 {ALLOWED_SECRETS}: {listed}",
                self.namespace
            ),
            (Mode::NamespacePrefix, None) => format!(
                "secret and parameter names must start with {}/",
                self.namespace
            ),
            (_, listed) => format!(
                "its annotation {ALLOWED_SECRETS} allows: {}",
                listed.unwrap_or_default()
            ),
        };
        Err(AllowError {
            key: key.clone(),
            value: short(value, 300),
            namespace: self.namespace.clone(),
            rule,
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cases both evaluators are held to: (mode, namespace, annotation, value, allowed).
/// `tests/it` runs them through the chart's policy in a real API server.
#[doc(hidden)]
pub const CASES: &[(Mode, &str, Option<&str>, &str, bool)] = &[
    // Annotated mode: an annotated namespace allows what its patterns match.
    (Mode::Annotated, "team-a", Some(TEAM_A), SM_A, true),
    (Mode::Annotated, "team-a", Some(TEAM_A), SM_B, false),
    (Mode::Annotated, "team-a", Some(TEAM_A), SSM_A, true),
    (Mode::Annotated, "team-a", Some(TEAM_A), SSM_B, false),
    (
        Mode::Annotated,
        "team-a",
        Some(TEAM_A),
        SM_A_OTHER_ACCOUNT,
        false,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some(TEAM_A),
        SM_A_OTHER_REGION,
        true,
    ),
    (Mode::Annotated, "team-a", Some(TEAM_A), "team-a/db", false),
    (Mode::Annotated, "team-a", Some(TEAM_A), SM_A_PARTIAL, true),
    // Without the annotation: unrestricted.
    (Mode::Annotated, "team-a", None, SM_B, true),
    (Mode::Annotated, "team-a", None, "db-password", true),
    // An empty annotation allows nothing.
    (Mode::Annotated, "team-a", Some(""), SM_A, false),
    (Mode::Annotated, "team-a", Some(" , "), SM_A, false),
    // `*` allows everything, names included; blanks around patterns are ignored.
    (Mode::Annotated, "team-a", Some("*"), "db-password", true),
    (Mode::Annotated, "team-a", Some(" x , * "), SM_B, true),
    // Exact patterns: the whole ARN, nothing more.
    (Mode::Annotated, "team-a", Some(SM_A), SM_A, true),
    (Mode::Annotated, "team-a", Some(SM_A_PARTIAL), SM_A, false),
    (
        Mode::Annotated,
        "team-a",
        Some(SM_A_PARTIAL),
        SM_A_PARTIAL,
        true,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some(SM_A),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf0",
        false,
    ),
    // Region and account wildcards only as whole fields; * elsewhere matches nothing.
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:us-*:123456789012:secret:*"),
        SM_A,
        false,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:*:*:secret:*"),
        SM_B,
        true,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:*:*:*"),
        SM_B,
        true,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:*:*:secret:*/db*"),
        SM_A,
        false,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:*:*:*:*"),
        SM_A,
        false,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:*"),
        SM_A,
        false,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws-cn:secretsmanager:*:*:*"),
        SM_A,
        false,
    ),
    // The service must match: a Secrets Manager pattern allows no parameter.
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:*:123456789012:*"),
        SSM_A,
        false,
    ),
    // A value with * is never allowed by an ARN pattern; only by `*`.
    (
        Mode::Annotated,
        "team-a",
        Some("arn:aws:secretsmanager:*:*:secret:*"),
        "arn:aws:secretsmanager:*:123456789012:secret:x",
        false,
    ),
    (
        Mode::Annotated,
        "team-a",
        Some("*"),
        "arn:aws:secretsmanager:*:123456789012:secret:x",
        true,
    ),
    // Namespace-prefix mode: the namespace's own names, and what the annotation adds.
    (Mode::NamespacePrefix, "team-a", None, SM_A, true),
    (Mode::NamespacePrefix, "team-a", None, SSM_A, true),
    (
        Mode::NamespacePrefix,
        "team-a",
        None,
        SM_A_OTHER_ACCOUNT,
        true,
    ),
    (Mode::NamespacePrefix, "team-a", None, SM_B, false),
    (Mode::NamespacePrefix, "team-a", None, SSM_B, false),
    (Mode::NamespacePrefix, "team-a", None, "team-a/db", false),
    (
        Mode::NamespacePrefix,
        "team-a",
        None,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-ab/db-AbCdEf",
        false,
    ),
    (
        Mode::NamespacePrefix,
        "team-a",
        None,
        "arn:aws:ssm:us-east-1:123456789012:secret:team-a/db",
        false,
    ),
    (Mode::NamespacePrefix, "team-a", Some(SHARED), SM_B, false),
    (
        Mode::NamespacePrefix,
        "team-a",
        Some(SHARED),
        SM_SHARED,
        true,
    ),
    (Mode::NamespacePrefix, "team-a", Some(SHARED), SM_A, true),
    (Mode::NamespacePrefix, "team-a", Some(""), SM_A, true),
    // Off: nothing is checked.
    (Mode::Off, "team-a", Some(""), SM_B, true),
];

const TEAM_A: &str = "arn:aws:secretsmanager:*:123456789012:secret:team-a/*, \
                      arn:aws:ssm:*:123456789012:parameter/team-a/*";
const SHARED: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:shared/*";
const SM_A: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf";
const SM_A_PARTIAL: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db";
const SM_A_OTHER_REGION: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:team-a/db-AbCdEf";
const SM_A_OTHER_ACCOUNT: &str =
    "arn:aws:secretsmanager:us-east-1:210987654321:secret:team-a/db-AbCdEf";
const SM_B: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-b/db-AbCdEf";
const SM_SHARED: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:shared/tls-AbCdEf";
const SSM_A: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/team-a/db/password";
const SSM_B: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/team-b/db/password";

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mode: Mode, namespace: &str, annotation: Option<&str>) -> NamespaceRule {
        let annotations = annotation
            .map(|a| BTreeMap::from([(ALLOWED_SECRETS.to_owned(), a.to_owned())]))
            .unwrap_or_default();
        NamespaceRule::new(mode, namespace, &annotations)
    }

    #[test]
    fn the_case_table() {
        for (mode, namespace, annotation, value, allowed) in CASES {
            assert_eq!(
                rule(*mode, namespace, *annotation).allows(value),
                *allowed,
                "{mode} {namespace} {annotation:?} {value}"
            );
        }
    }

    #[test]
    fn patterns_that_can_never_match_are_reported() {
        let list = AllowList::parse(
            "*, arn:aws:secretsmanager:*:*:secret:a*, arn:aws:secretsmanager:us-*:1:secret:x, \
             secret:x, arn:aws:*:*:*:*, arn:aws:ssm:*:*:parameter/*/x, gcp:a:b:c:d:e",
        );
        let problems = list.problems().join("\n");
        assert_eq!(list.problems().len(), 5, "{problems}");
        for expect in [
            "\"arn:aws:secretsmanager:us-*:1:secret:x\" may have * only as the whole region",
            "\"secret:x\" has fewer than six",
            "\"arn:aws:*:*:*:*\" needs a partition and a service without *",
            "\"arn:aws:ssm:*:*:parameter/*/x\" may have * only at the end",
            "\"gcp:a:b:c:d:e\" does not start with arn:",
        ] {
            assert!(problems.contains(expect), "{expect}\n{problems}");
        }
        assert!(problems.contains(ALLOWED_SECRETS));
    }

    #[test]
    fn a_pod_is_checked_secret_by_secret_and_the_denial_says_what_is_allowed() {
        let pod = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let team_a = rule(Mode::Annotated, "team-a", Some(TEAM_A));
        assert_eq!(
            team_a.check_pod(&pod(&[
                (SECRET_ARN, SM_A),
                ("secrets.k8s.aws/secret-arn.p", SSM_A)
            ])),
            Ok(())
        );
        let err = team_a
            .check_pod(&pod(&[
                (SECRET_ARN, SM_A),
                ("secrets.k8s.aws/secret-arn.db", SM_B),
                // Not a secret key: never checked.
                ("secrets.k8s.aws/secret-arnx", SM_B),
            ]))
            .unwrap_err();
        assert_eq!(err.key, "secrets.k8s.aws/secret-arn.db");
        assert_eq!(
            err.to_string(),
            format!(
                "secret-inject: annotation secrets.k8s.aws/secret-arn.db: {SM_B} is not allowed \
                 in namespace team-a (its annotation {ALLOWED_SECRETS} allows: {TEAM_A}); ask a \
                 cluster admin to add a pattern to the namespace annotation {ALLOWED_SECRETS}, \
                 or use a secret the namespace allows"
            )
        );
        let prefix = rule(Mode::NamespacePrefix, "team-a", None);
        let err = prefix.check_pod(&pod(&[(SECRET_ARN, SM_B)])).unwrap_err();
        assert!(
            err.to_string()
                .contains("(secret and parameter names must start with team-a/)"),
            "{err}"
        );
        let nothing = rule(Mode::Annotated, "team-a", Some(""));
        let err = nothing.check_pod(&pod(&[(SECRET_ARN, SM_A)])).unwrap_err();
        assert!(err.to_string().contains("allows: (nothing))"), "{err}");
        let long = "x".repeat(5000);
        let err = nothing.check_pod(&pod(&[(SECRET_ARN, &long)])).unwrap_err();
        assert!(err.value.len() < 310, "{}", err.value.len());
        let source = SourceArn::parse(SSM_B).unwrap();
        assert!(!team_a.allows_source(&source));
        assert!(rule(Mode::Off, "team-a", Some("")).allows_source(&source));
    }

    #[test]
    fn modes_by_their_chart_names() {
        for mode in [Mode::Off, Mode::Annotated, Mode::NamespacePrefix] {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        }
        assert!("prefix".parse::<Mode>().unwrap_err().contains("\"prefix\""));
        assert_eq!(Mode::default(), Mode::Annotated);
    }
}
