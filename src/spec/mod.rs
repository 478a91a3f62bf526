//! The annotation grammar: every annotation key lives here, and this is the only module that
//! reads raw annotation strings. [`InjectionSpec::from_annotations`] turns a pod's annotations
//! into a validated, typed spec; everything downstream takes the spec.
//!
//! The keys and defaults are the AWS "Secrets Controller" proof of concept's contract, so a
//! manifest written for it works unchanged.

use std::collections::BTreeMap;

mod arn;
mod path;

pub use arn::{SecretArn, is_secret_name};
pub use path::{MountPath, RelativeFileName};

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
/// Label on a Kubernetes Secret that asks the secret writer to store it in Secrets Manager.
pub const STORE_LABEL: &str = "secrets.k8s.aws/store";
/// The one value of [`STORE_LABEL`].
pub const STORE_SECRETS_MANAGER: &str = "secretsmanager";

/// Default mount path (seed contract).
pub const DEFAULT_MOUNT_PATH: &str = "/tmp";
/// Default file name (seed contract).
pub const DEFAULT_SECRET_FILENAME: &str = "secret";

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
    pub key: String,
    /// What is wrong with its value.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl AnnotationError {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
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
        check_known_keys(annotations)?;
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
                None => MountPath::default(),
            },
            file_name: match get(SECRET_FILENAME) {
                Some(value) => RelativeFileName::parse(value)?,
                None => RelativeFileName::default(),
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

/// Every key of the grammar, including the one the webhook writes itself.
pub const KNOWN_KEYS: &[&str] = &[
    INJECTOR_WEBHOOK,
    SECRET_ARN,
    MOUNT_PATH,
    SECRET_FILENAME,
    INIT_CONTAINER_POSITION,
    STATUS,
];

/// On a pod that opts in, a key with our prefix that the grammar does not know is a typo that
/// would otherwise be ignored silently: deny it, naming the closest known key.
fn check_known_keys(annotations: &BTreeMap<String, String>) -> Result<(), AnnotationError> {
    let Some(unknown) = annotations
        .keys()
        .filter(|key| key.starts_with(PREFIX))
        .find(|key| !KNOWN_KEYS.contains(&key.as_str()))
    else {
        return Ok(());
    };
    // Compared without the shared prefix, which would make every key look close.
    let name = &unknown[PREFIX.len()..];
    let closest = KNOWN_KEYS
        .iter()
        .map(|known| {
            let known_name = &known[PREFIX.len()..];
            (strsim::damerau_levenshtein(name, known_name), *known)
        })
        .min()
        .filter(|(distance, known)| *distance <= (known.len() - PREFIX.len()).div_ceil(3));
    let fix = match closest {
        Some((_, known)) => format!("did you mean {known}?"),
        None => format!("known keys are {}", KNOWN_KEYS.join(", ")),
    };
    Err(AnnotationError::new(
        quote(unknown).trim_matches('"'),
        "is not a secret-inject annotation",
        fix,
    ))
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
    fn misspelt_keys_on_an_opted_in_pod_are_denied_with_the_closest_key() {
        let err = parse(&[(SECRET_ARN, ARN), ("secrets.k8s.aws/mount-paht", "/s")]).unwrap_err();
        assert_eq!(err.key, "secrets.k8s.aws/mount-paht");
        assert_eq!(
            err.to_string(),
            "annotation secrets.k8s.aws/mount-paht: is not a secret-inject annotation; did you \
             mean secrets.k8s.aws/mount-path?"
        );
        let err = parse(&[
            (INJECTOR_WEBHOOK, "enabled"),
            ("secrets.k8s.aws/secret-ar", ARN),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean secrets.k8s.aws/secret-arn?"),
            "{err}"
        );
        // Far from every key: the list of known keys instead.
        let err = parse(&[(SECRET_ARN, ARN), ("secrets.k8s.aws/colour", "blue")]).unwrap_err();
        assert!(err.fix.starts_with("known keys are "), "{err}");
        // The key the webhook writes is known; pods that do not opt in are not checked.
        assert!(parse(&[(SECRET_ARN, ARN), (STATUS, STATUS_INJECTED)]).is_ok());
        assert_eq!(
            parse(&[("secrets.k8s.aws/mount-paht", "/s")]),
            Ok(Request::None)
        );
        assert!(parse(&[(SECRET_ARN, ARN), ("example.com/mount-paht", "x")]).is_ok());
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
