//! Paths inside the pod: the mount path and the file names below it.

use super::{
    AnnotationError, DEFAULT_MOUNT_PATH, DEFAULT_SECRET_FILENAME, MOUNT_PATH, SECRET_FILENAME,
    quote,
};

/// Longest file name component Linux accepts.
const MAX_NAME_COMPONENT: usize = 255;
/// Longest path Linux accepts.
const MAX_PATH: usize = 4096;

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
}
