//! Paths inside the pod: the mount path and the file names below it.

use super::{
    AnnotationError, DEFAULT_MOUNT_PATH, DEFAULT_SECRET_FILENAME, MOUNT_PATH, SECRET_FILENAME,
    quote,
};

/// Longest file name component Linux accepts.
const MAX_NAME_COMPONENT: usize = 255;
/// Longest path Linux accepts.
const MAX_PATH: usize = 4096;

/// Path of the agent's binary in the image (the injected container runs it; its startup probe
/// too).
pub const AGENT_BINARY_PATH: &str = "/usr/local/bin/secret-inject";
/// The CA bundle in the image the agent verifies AWS endpoints with (`SSL_CERT_FILE`).
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the kubelet mounts a container's termination log, the agent's failure message.
pub const TERMINATION_LOG_PATH: &str = "/dev/termination-log";
/// Where the API server's ServiceAccount admission mounts the pod's Kubernetes API token; the
/// injected container holds an empty directory there instead.
pub const API_TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Files the injected container needs from its image and its runtime: the mount path, where the
/// secret volume is mounted in the app containers and the agent alike, must not hide them (be
/// one of their parent directories).
const AGENT_NEEDS: [(&str, &str); 3] = [
    (AGENT_BINARY_PATH, "the agent's binary"),
    (CA_BUNDLE_PATH, "the agent's CA bundle"),
    (TERMINATION_LOG_PATH, "the agent's termination log"),
];

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
        if let Some(problem) = reserved(trimmed) {
            return Err(AnnotationError::new(
                MOUNT_PATH,
                format!("{shown} {problem}"),
                "mount the secrets on a directory of their own, such as /var/run/secrets/app",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The path, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for MountPath {
    /// The seed's `/tmp`.
    fn default() -> Self {
        Self(DEFAULT_MOUNT_PATH.to_owned())
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

impl Default for RelativeFileName {
    /// The seed's `secret`.
    fn default() -> Self {
        Self(DEFAULT_SECRET_FILENAME.to_owned())
    }
}

/// Why the injected container could not run with the secret volume mounted at `path` (no
/// trailing slash): it would hide a file the agent needs, or be where the agent's empty stand-in
/// for the Kubernetes API token is mounted.
fn reserved(path: &str) -> Option<String> {
    let at_or_below = |dir: &str, file: &str| {
        file.strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if let Some((file, what)) = AGENT_NEEDS.iter().find(|(file, _)| at_or_below(path, file)) {
        return Some(format!(
            "would hide {what} ({file}): the secret volume is mounted at this path in the \
             injected container too"
        ));
    }
    if at_or_below(API_TOKEN_DIR, path) {
        return Some(format!(
            "is in {API_TOKEN_DIR}, where Kubernetes mounts the pod's API token (the injected \
             container holds an empty directory there)"
        ));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SecretArn;

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
            // Hiding what the agent runs with: its binary, its CA bundle, its termination log.
            (
                "/usr/local/bin",
                "the agent's binary (/usr/local/bin/secret-inject)",
            ),
            ("/usr/local/bin/", "the agent's binary"),
            ("/usr/local", "the agent's binary"),
            ("/usr", "the agent's binary"),
            ("/usr/local/bin/secret-inject", "the agent's binary"),
            (
                "/etc",
                "the agent's CA bundle (/etc/ssl/certs/ca-certificates.crt)",
            ),
            ("/etc/ssl", "the agent's CA bundle"),
            ("/etc/ssl/certs", "the agent's CA bundle"),
            (
                "/etc/ssl/certs/ca-certificates.crt",
                "the agent's CA bundle",
            ),
            ("/dev", "the agent's termination log"),
            // The Kubernetes API token's directory, and below it.
            (API_TOKEN_DIR, "API token"),
            (
                "/var/run/secrets/kubernetes.io/serviceaccount/app",
                "API token",
            ),
        ] {
            let err = MountPath::parse(bad).unwrap_err();
            assert_eq!(err.key, MOUNT_PATH);
            assert!(err.problem.contains(expect), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mount_paths_beside_what_the_agent_needs_are_admitted() {
        for good in [
            "/usr/local/bin2",
            "/usr/local/bin/secrets",
            "/usr/share/app",
            "/etc/app",
            "/etc/ssl2",
            "/etc/ssl/private",
            "/etc/ssl/certs/app",
            "/dev/shm/secrets",
            "/var/run/secrets",
            "/var/run/secrets/app",
            "/var/run/secrets/kubernetes.io/serviceaccount2",
            "/var/run/secrets/eks.amazonaws.com/app",
        ] {
            assert!(MountPath::parse(good).is_ok(), "{good}");
        }
        let err = MountPath::parse("/etc/ssl").unwrap_err();
        assert_eq!(err.key, MOUNT_PATH);
        assert!(err.fix.contains("/var/run/secrets/app"), "{err}");
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
}
