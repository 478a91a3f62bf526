//! The annotation grammar: every annotation key lives here, and this is the only module that
//! reads raw annotation strings. [`InjectionSpec::from_annotations`] turns a pod's annotations
//! into a validated, typed spec; everything downstream takes the spec.
//!
//! The keys and defaults are the AWS "Secrets Controller" proof of concept's contract, so a
//! manifest written for it works unchanged.

use std::collections::BTreeMap;
use std::fmt;

/// Prefix shared by every annotation key of this project.
pub const PREFIX: &str = "secrets.k8s.aws/";
/// Opt-in / opt-out switch: `enabled` or `disabled` (seed contract).
pub const INJECTOR_WEBHOOK: &str = "secrets.k8s.aws/sidecarInjectorWebhook";
/// ARN of the Secrets Manager secret to fetch (seed contract).
pub const SECRET_ARN: &str = "secrets.k8s.aws/secret-arn";
/// Absolute path where the in-memory volume is mounted in the app containers (seed contract).
pub const MOUNT_PATH: &str = "secrets.k8s.aws/mount-path";
/// File name of the secret inside the mount path; may hold sub-folders (seed contract).
pub const SECRET_FILENAME: &str = "secrets.k8s.aws/secret-filename";
/// Where the injected init container goes among existing init containers: `first` or `last`.
pub const INIT_CONTAINER_POSITION: &str = "secrets.k8s.aws/init-container-position";
/// Written by the webhook: marks a pod as already injected (idempotency).
pub const STATUS: &str = "secrets.k8s.aws/status";
/// Value of [`STATUS`] after injection.
pub const STATUS_INJECTED: &str = "injected";

/// Default mount path (seed contract).
pub const DEFAULT_MOUNT_PATH: &str = "/tmp";
/// Default file name (seed contract).
pub const DEFAULT_SECRET_FILENAME: &str = "secret";

/// Longest file name component Linux accepts.
const MAX_NAME_COMPONENT: usize = 255;
/// Longest path Linux accepts.
const MAX_PATH: usize = 4096;

/// What a pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The pod does not ask for injection (or opts out): leave it alone.
    None,
    /// The pod was injected before: only keep it consistent.
    AlreadyInjected(InjectionSpec),
    /// Inject the pod.
    Inject(InjectionSpec),
}

/// A validated injection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionSpec {
    /// The secret to fetch.
    pub secret_arn: SecretArn,
    /// Where the volume is mounted in the app containers.
    pub mount_path: MountPath,
    /// Where the secret is written, relative to the mount path.
    pub file_name: RelativeFileName,
    /// Where the init container goes.
    pub position: InitContainerPosition,
}

/// Where the injected init container goes among the pod's existing init containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitContainerPosition {
    /// Before every existing init container (default). Service-mesh init containers such as
    /// `istio-init` install an iptables redirect that would send our call to AWS into a proxy
    /// that is not running yet; running first avoids that, and lets every later init container
    /// read the secret.
    #[default]
    First,
    /// After every existing init container (for pods whose own init containers must run
    /// before the secret is fetched, e.g. to set up networking we depend on).
    Last,
}

/// An annotation that is present but wrong. The message names the annotation, what is wrong and
/// how to fix it; it is shown to the user by `kubectl apply` as the admission denial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {problem}; {fix}")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl AnnotationError {
    fn new(key: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl InjectionSpec {
    /// Parse and validate a pod's annotations.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Request, AnnotationError> {
        let Some(annotations) = annotations else {
            return Ok(Request::None);
        };
        let get = |key: &str| annotations.get(key).map(String::as_str);

        let switch = match get(INJECTOR_WEBHOOK) {
            None => None,
            Some("enabled") => Some(true),
            Some("disabled") => Some(false),
            Some(other) => {
                return Err(AnnotationError::new(
                    INJECTOR_WEBHOOK,
                    format!("value {} is not recognised", quote(other)),
                    "use \"enabled\" or \"disabled\"",
                ));
            }
        };
        if switch == Some(false) {
            return Ok(Request::None);
        }
        let arn = get(SECRET_ARN);
        if switch.is_none() && arn.is_none() {
            return Ok(Request::None);
        }
        let Some(arn) = arn else {
            return Err(AnnotationError::new(
                SECRET_ARN,
                format!("is missing, but {INJECTOR_WEBHOOK} is \"enabled\""),
                "add the ARN of the Secrets Manager secret to fetch, or remove the opt-in annotation",
            ));
        };
        let spec = InjectionSpec {
            secret_arn: SecretArn::parse(arn)?,
            mount_path: match get(MOUNT_PATH) {
                Some(value) => MountPath::parse(value)?,
                None => MountPath(DEFAULT_MOUNT_PATH.to_owned()),
            },
            file_name: match get(SECRET_FILENAME) {
                Some(value) => RelativeFileName::parse(value)?,
                None => RelativeFileName(DEFAULT_SECRET_FILENAME.to_owned()),
            },
            position: match get(INIT_CONTAINER_POSITION) {
                None | Some("first") => InitContainerPosition::First,
                Some("last") => InitContainerPosition::Last,
                Some(other) => {
                    return Err(AnnotationError::new(
                        INIT_CONTAINER_POSITION,
                        format!("value {} is not recognised", quote(other)),
                        "use \"first\" (default) or \"last\"",
                    ));
                }
            },
        };
        if get(STATUS) == Some(STATUS_INJECTED) {
            Ok(Request::AlreadyInjected(spec))
        } else {
            Ok(Request::Inject(spec))
        }
    }
}

/// The ARN of a Secrets Manager secret:
/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArn {
    arn: String,
    region_start: usize,
    region_end: usize,
}

impl SecretArn {
    /// Validate an ARN (any partition: `aws`, `aws-cn`, `aws-us-gov`, ...).
    pub fn parse(value: &str) -> Result<Self, AnnotationError> {
        let bad = |problem: String| {
            AnnotationError::new(
                SECRET_ARN,
                problem,
                "use the secret's full ARN, e.g. \
                 arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF \
                 (`aws secretsmanager describe-secret --secret-id NAME --query ARN`)",
            )
        };
        let shown = quote(value);
        let fields: Vec<&str> = value.splitn(7, ':').collect();
        if fields.len() < 3 || fields[0] != "arn" {
            return Err(bad(format!("{shown} is not an ARN")));
        }
        let (partition, service) = (fields[1], fields[2]);
        if !is_partition(partition) {
            return Err(bad(format!(
                "{shown} has partition {}, expected aws, aws-cn, aws-us-gov or another AWS partition",
                quote(partition)
            )));
        }
        if service != "secretsmanager" {
            return Err(bad(format!(
                "{shown} is an ARN of service {}, not of secretsmanager",
                quote(service)
            )));
        }
        if fields.len() != 7 {
            return Err(bad(format!(
                "{shown} is not a Secrets Manager secret ARN \
                 (arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME)"
            )));
        }
        let (region, account, resource, name) = (fields[3], fields[4], fields[5], fields[6]);
        if !is_region(region) {
            return Err(bad(format!(
                "{shown} has region {}, expected a region such as us-east-1",
                quote(region)
            )));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "{shown} has account {}, expected 12 digits",
                quote(account)
            )));
        }
        if resource != "secret" {
            return Err(bad(format!(
                "{shown} has resource type {}, expected \"secret\"",
                quote(resource)
            )));
        }
        if !is_secret_name(name) {
            return Err(bad(format!(
                "{shown} has secret name {}, expected 1-512 characters of letters, digits and /_+=.@-",
                quote(name)
            )));
        }
        let region_start = fields[..3].iter().map(|f| f.len() + 1).sum();
        Ok(Self {
            arn: value.to_owned(),
            region_start,
            region_end: region_start + region.len(),
        })
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The region the secret lives in.
    pub fn region(&self) -> &str {
        &self.arn[self.region_start..self.region_end]
    }
}

impl fmt::Display for SecretArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// A Secrets Manager secret name: 1-512 ASCII letters, digits and `/_+=.@-`.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
}

fn is_partition(value: &str) -> bool {
    // aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-eusc, ...
    let mut segments = value.split('-');
    segments.next() == Some("aws")
        && segments.all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
}

fn is_region(value: &str) -> bool {
    // us-east-1, cn-north-1, us-gov-west-1, us-isob-east-1, eu-central-2 ...
    let segments: Vec<&str> = value.split('-').collect();
    segments.len() >= 3
        && segments[..segments.len() - 1]
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
        && segments[segments.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_digit())
        && !segments[segments.len() - 1].is_empty()
}

/// An absolute mount path without `.`/`..` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPath(String);

impl MountPath {
    /// Validate a mount path.
    pub fn parse(value: &str) -> Result<Self, AnnotationError> {
        let shown = quote(value);
        let bad = |problem: String| {
            AnnotationError::new(
                MOUNT_PATH,
                problem,
                "use an absolute directory path such as /tmp or /var/run/secrets/app",
            )
        };
        if !value.starts_with('/') {
            return Err(bad(format!("{shown} is not an absolute path")));
        }
        if value.len() > MAX_PATH {
            return Err(bad(format!("is longer than {MAX_PATH} bytes")));
        }
        if let Some(problem) = path_problem(value) {
            return Err(bad(format!("{shown} {problem}")));
        }
        let trimmed = value.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(bad(
                "\"/\" would hide the container's whole filesystem".to_owned()
            ));
        }
        if trimmed.split('/').skip(1).any(str::is_empty) {
            return Err(bad(format!("{shown} holds an empty path component (//)")));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The path, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A relative file name below the mount path; may hold sub-folders, never escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativeFileName(String);

impl RelativeFileName {
    /// Validate a file name.
    pub fn parse(value: &str) -> Result<Self, AnnotationError> {
        let shown = quote(value);
        let bad = |problem: String| {
            AnnotationError::new(
                SECRET_FILENAME,
                problem,
                "use a relative file name inside the mount path, such as secret or db/password",
            )
        };
        if value.is_empty() {
            return Err(bad("is empty".to_owned()));
        }
        if value.starts_with('/') {
            return Err(bad(format!("{shown} is an absolute path")));
        }
        if value.ends_with('/') {
            return Err(bad(format!("{shown} names a directory, not a file")));
        }
        if value.len() > MAX_PATH {
            return Err(bad(format!("is longer than {MAX_PATH} bytes")));
        }
        if let Some(problem) = path_problem(value) {
            return Err(bad(format!("{shown} {problem}")));
        }
        if value.split('/').any(str::is_empty) {
            return Err(bad(format!("{shown} holds an empty path component (//)")));
        }
        if value.starts_with("..") {
            // `..data`, `..2024_...`: kubelet-style atomic-writer names are reserved.
            return Err(bad(format!(
                "{shown} starts with \"..\", which is reserved for atomic updates"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    /// The relative path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Problems shared by mount paths and file names.
fn path_problem(value: &str) -> Option<String> {
    if value.chars().any(char::is_control) {
        return Some("holds a control character".to_owned());
    }
    for component in value.split('/') {
        if component == ".." {
            return Some("holds a \"..\" component".to_owned());
        }
        if component == "." {
            return Some("holds a \".\" component".to_owned());
        }
        if component.len() > MAX_NAME_COMPONENT {
            return Some(format!(
                "holds a component longer than {MAX_NAME_COMPONENT} bytes"
            ));
        }
    }
    None
}

/// Quote a user value for an error message, shortened so a huge value cannot flood a message.
fn quote(value: &str) -> String {
    const MAX: usize = 120;
    if value.len() <= MAX {
        format!("{value:?}")
    } else {
        let mut end = MAX;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}... ({} bytes)", &value[..end], value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Request, AnnotationError> {
        InjectionSpec::from_annotations(Some(&annotations(pairs)))
    }

    #[test]
    fn seed_annotations_give_seed_defaults() {
        let Request::Inject(spec) =
            parse(&[(INJECTOR_WEBHOOK, "enabled"), (SECRET_ARN, ARN)]).unwrap()
        else {
            panic!("expected injection");
        };
        assert_eq!(spec.secret_arn.as_str(), ARN);
        assert_eq!(spec.secret_arn.region(), "us-east-1");
        assert_eq!(spec.mount_path.as_str(), "/tmp");
        assert_eq!(spec.file_name.as_str(), "secret");
        assert_eq!(spec.position, InitContainerPosition::First);
    }

    #[test]
    fn arn_alone_opts_in_and_disabled_opts_out() {
        assert!(matches!(
            parse(&[(SECRET_ARN, ARN)]),
            Ok(Request::Inject(_))
        ));
        assert_eq!(
            parse(&[(INJECTOR_WEBHOOK, "disabled"), (SECRET_ARN, ARN)]),
            Ok(Request::None)
        );
        assert_eq!(parse(&[("other", "x")]), Ok(Request::None));
        assert_eq!(InjectionSpec::from_annotations(None), Ok(Request::None));
    }

    #[test]
    fn status_marks_already_injected() {
        assert!(matches!(
            parse(&[(SECRET_ARN, ARN), (STATUS, STATUS_INJECTED)]),
            Ok(Request::AlreadyInjected(_))
        ));
    }

    #[test]
    fn opt_in_without_secret_is_denied() {
        let err = parse(&[(INJECTOR_WEBHOOK, "enabled")]).unwrap_err();
        assert_eq!(err.key, SECRET_ARN);
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn unknown_switch_value_is_denied() {
        let err = parse(&[(INJECTOR_WEBHOOK, "true"), (SECRET_ARN, ARN)]).unwrap_err();
        assert_eq!(err.key, INJECTOR_WEBHOOK);
        assert!(err.to_string().contains("\"enabled\" or \"disabled\""));
    }

    #[test]
    fn arns_of_every_partition_are_accepted() {
        for arn in [
            ARN,
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a/b_c+d=e.f@g-h",
            "arn:aws-iso-b:secretsmanager:us-isob-east-1:123456789012:secret:x",
        ] {
            let parsed = SecretArn::parse(arn).unwrap_or_else(|e| panic!("{arn}: {e}"));
            assert_eq!(parsed.as_str(), arn);
        }
        assert_eq!(
            SecretArn::parse("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x")
                .unwrap()
                .region(),
            "us-gov-west-1"
        );
    }

    #[test]
    fn bad_arns_are_denied_with_the_reason() {
        for (arn, expect) in [
            ("database-password", "not an ARN"),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012",
                "not a Secrets Manager secret ARN",
            ),
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/x",
                "not of secretsmanager",
            ),
            (
                "arn:gcp:secretsmanager:us-east-1:123456789012:secret:x",
                "partition",
            ),
            (
                "arn:aws:secretsmanager:useast1:123456789012:secret:x",
                "region",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:1234:secret:x",
                "12 digits",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:key:x",
                "resource type",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
                "secret name",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:a\"b",
                "secret name",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:a/../../b\n",
                "secret name",
            ),
        ] {
            let err = SecretArn::parse(arn).unwrap_err();
            assert_eq!(err.key, SECRET_ARN);
            assert!(err.problem.contains(expect), "{arn}: {err}");
            assert!(err.fix.contains("full ARN"));
        }
    }

    #[test]
    fn mount_paths() {
        assert_eq!(MountPath::parse("/tmp/").unwrap().as_str(), "/tmp");
        assert_eq!(
            MountPath::parse("/var/run/s").unwrap().as_str(),
            "/var/run/s"
        );
        for (bad, expect) in [
            ("tmp", "not an absolute path"),
            ("/", "whole filesystem"),
            ("///", "whole filesystem"),
            ("/a/../etc", "\"..\""),
            ("/a/./b", "\".\""),
            ("/a//b", "empty path component"),
            ("/a\nb", "control character"),
        ] {
            let err = MountPath::parse(bad).unwrap_err();
            assert_eq!(err.key, MOUNT_PATH);
            assert!(err.problem.contains(expect), "{bad:?}: {err}");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(
            RelativeFileName::parse("db/password.json")
                .unwrap()
                .as_str(),
            "db/password.json"
        );
        for (bad, expect) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "\"..\""),
            ("a/../../x", "\"..\""),
            ("dir/", "directory"),
            ("a//b", "empty path component"),
            ("..data", "reserved"),
            ("a\u{0}b", "control character"),
        ] {
            let err = RelativeFileName::parse(bad).unwrap_err();
            assert_eq!(err.key, SECRET_FILENAME);
            assert!(err.problem.contains(expect), "{bad:?}: {err}");
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let err = MountPath::parse(&long).unwrap_err();
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
        let err = SecretArn::parse(&long).unwrap_err();
        assert!(err.to_string().len() < 600);
    }

    #[test]
    fn position_annotation() {
        let Request::Inject(spec) =
            parse(&[(SECRET_ARN, ARN), (INIT_CONTAINER_POSITION, "last")]).unwrap()
        else {
            panic!()
        };
        assert_eq!(spec.position, InitContainerPosition::Last);
        let err = parse(&[(SECRET_ARN, ARN), (INIT_CONTAINER_POSITION, "middle")]).unwrap_err();
        assert_eq!(err.key, INIT_CONTAINER_POSITION);
    }
}
