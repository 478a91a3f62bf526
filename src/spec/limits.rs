//! How much one pod may ask of the webhook.
//!
//! A mutating webhook sees a pod before the API server validates it (its 256 KiB check of
//! annotations included), so a review can carry megabytes of annotations, thousands of
//! containers, tens of thousands of env bindings. The work of a review and the size of its answer
//! must stay proportional to the request, and small: these limits are checked on a pod that opts
//! in before its annotations are parsed (a counting pass over the strings, no allocation), and
//! the patch is measured before it is built. A denial names the limit, the flag that sets it and
//! what to change. Pods that do not opt in are never checked (they cost one pass over their
//! annotation keys).

/// The default of each limit: generous for any real pod, small worst-case work.
pub mod defaults {
    /// Bytes of all the pod's annotations (keys and values): the API server's own limit
    /// (`TotalAnnotationSizeLimitB`, 256 KiB), so every pod it would store passes, and a larger one
    /// is denied before we parse it (the API server would reject it after us anyway).
    pub const ANNOTATION_BYTES: usize = 256 * 1024;
    /// Secrets of one pod (`secret-arn` and `secret-arn.<n>`): more than any pod needs (related
    /// values belong in one JSON secret); the agent fetches them in ⌈n/20⌉ BatchGetSecretValue calls.
    pub const SECRETS: usize = 100;
    /// Env vars bound by the pod's `env` and `env.<n>` annotations, together: a few per secret for
    /// the largest secret count. Each costs one `fileKeyRef` env var in every mounted container.
    pub const ENV_BINDINGS: usize = 500;
    /// Containers and init containers of a pod that opts in (and names in the `containers`
    /// annotation): a pod with a dozen sidecars is already rare.
    pub const CONTAINERS: usize = 100;
    /// Bytes of the JSON Patch of one pod (the response carries its base64, 4/3 of it). A real
    /// injection adds a few KiB (a 10-container pod with 100 env vars: about 200 KiB); the patched
    /// pod must still fit etcd's 1.5 MiB object limit.
    pub const PATCH_BYTES: usize = 1024 * 1024;
}

/// The limits on what one pod may ask for. Every field is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of all the pod's annotations, keys and values (`--max-annotation-bytes`).
    pub annotation_bytes: usize,
    /// Secrets of one pod (`--max-secrets`).
    pub secrets: usize,
    /// Env vars bound by the pod's env annotations, together (`--max-env-bindings`).
    pub env_bindings: usize,
    /// Containers and init containers of the pod, and names in the `containers` annotation
    /// (`--max-containers`).
    pub containers: usize,
    /// Bytes of the JSON Patch (`--max-patch-bytes`).
    pub patch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            annotation_bytes: defaults::ANNOTATION_BYTES,
            secrets: defaults::SECRETS,
            env_bindings: defaults::ENV_BINDINGS,
            containers: defaults::CONTAINERS,
            patch_bytes: defaults::PATCH_BYTES,
        }
    }
}

/// One of the [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::annotation_bytes`].
    AnnotationBytes,
    /// [`Limits::secrets`].
    Secrets,
    /// [`Limits::env_bindings`].
    EnvBindings,
    /// [`Limits::containers`].
    Containers,
    /// [`Limits::patch_bytes`].
    PatchBytes,
}

impl Limit {
    /// The command-line flag that sets it, without dashes.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::AnnotationBytes => "max-annotation-bytes",
            Limit::Secrets => "max-secrets",
            Limit::EnvBindings => "max-env-bindings",
            Limit::Containers => "max-containers",
            Limit::PatchBytes => "max-patch-bytes",
        }
    }

    /// The environment variable that sets it.
    pub fn env(self) -> &'static str {
        match self {
            Limit::AnnotationBytes => "SECRET_INJECT_MAX_ANNOTATION_BYTES",
            Limit::Secrets => "SECRET_INJECT_MAX_SECRETS",
            Limit::EnvBindings => "SECRET_INJECT_MAX_ENV_BINDINGS",
            Limit::Containers => "SECRET_INJECT_MAX_CONTAINERS",
            Limit::PatchBytes => "SECRET_INJECT_MAX_PATCH_BYTES",
        }
    }

    /// What it counts.
    pub fn unit(self) -> &'static str {
        match self {
            Limit::AnnotationBytes => "bytes of annotations",
            Limit::Secrets => "secrets",
            Limit::EnvBindings => "env bindings",
            Limit::Containers => "containers",
            Limit::PatchBytes => "bytes of JSON Patch",
        }
    }

    /// Its value in `limits`.
    pub fn of(self, limits: &Limits) -> usize {
        match self {
            Limit::AnnotationBytes => limits.annotation_bytes,
            Limit::Secrets => limits.secrets,
            Limit::EnvBindings => limits.env_bindings,
            Limit::Containers => limits.containers,
            Limit::PatchBytes => limits.patch_bytes,
        }
    }

    /// `Err` naming `field` and `fix` when `found` is over this limit of `limits`.
    pub fn check(
        self,
        limits: &Limits,
        found: usize,
        field: impl FnOnce() -> String,
        fix: impl FnOnce() -> String,
    ) -> Result<(), LimitError> {
        let max = self.of(limits);
        if found <= max {
            return Ok(());
        }
        Err(LimitError {
            limit: self,
            field: field(),
            found,
            max,
            fix: fix(),
        })
    }
}

/// A pod asks for more than a limit allows. The message names the field or annotation, the
/// limit with the flag and environment variable that set it, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field}: {found} {unit}, more than the limit of {max} (webhook flag --{flag}, {env}); {fix}",
    unit = .limit.unit(),
    flag = .limit.flag(),
    env = .limit.env()
)]
pub struct LimitError {
    /// Which limit.
    pub limit: Limit,
    /// The annotation or field that is over it.
    pub field: String,
    /// How much the pod asks for (or, for a patch, at least how large it would be).
    pub found: usize,
    /// The limit.
    pub max: usize,
    /// How to fix the pod.
    pub fix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_error_names_the_field_the_limit_its_flag_and_the_fix() {
        let limits = Limits {
            env_bindings: 3,
            ..Limits::default()
        };
        assert_eq!(
            Limit::EnvBindings.check(&limits, 3, || unreachable!(), || unreachable!()),
            Ok(())
        );
        let error = Limit::EnvBindings
            .check(&limits, 4, || "annotation x".into(), || "bind fewer".into())
            .unwrap_err();
        assert_eq!(error.max, 3);
        assert_eq!(
            error.to_string(),
            "annotation x: 4 env bindings, more than the limit of 3 (webhook flag \
             --max-env-bindings, SECRET_INJECT_MAX_ENV_BINDINGS); bind fewer"
        );
    }

    #[test]
    fn every_limit_has_its_own_flag_and_env_var_and_a_positive_default() {
        let all = [
            Limit::AnnotationBytes,
            Limit::Secrets,
            Limit::EnvBindings,
            Limit::Containers,
            Limit::PatchBytes,
        ];
        let defaults = Limits::default();
        for (i, a) in all.iter().enumerate() {
            assert!(a.of(&defaults) > 0, "{a:?}");
            let flag = a.flag().to_uppercase().replace('-', "_");
            assert_eq!(a.env(), format!("SECRET_INJECT_{flag}"));
            for b in &all[i + 1..] {
                assert_ne!(a.flag(), b.flag());
            }
        }
        // The API server's own limit on annotations: every pod it stores passes.
        assert_eq!(defaults.annotation_bytes, 256 * 1024);
    }
}
