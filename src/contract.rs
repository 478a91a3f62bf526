//! The contract between the webhook and the container it injects: the names both sides use.
//!
//! The webhook renders these into the injected container; the agent reads them. Keeping them in
//! one module means the agent an image ships always speaks the webhook's contract.

/// Name of the injected init container (seed contract).
pub const CONTAINER_NAME: &str = "secrets-init-container";
/// Name of the in-memory `emptyDir` volume (seed contract).
pub const VOLUME_NAME: &str = "secret-vol";
/// Path of the binary inside the image.
pub const BINARY_PATH: &str = "/usr/local/bin/secret-inject";
/// Subcommand the injected container runs.
pub const AGENT_SUBCOMMAND: &str = "agent";
/// Default image for the injected container: this release's own image.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/secret-inject/secret-inject:",
    env!("CARGO_PKG_VERSION")
);

/// ARN of the secret, resolved by the Downward API from the pod's annotation (seed contract).
pub const ENV_SECRET_ARN: &str = "SECRET_ARN";
/// File name relative to the output directory (seed contract).
pub const ENV_SECRET_FILENAME: &str = "SECRET_FILENAME";
/// Directory the secret is written into: the mount path of the volume.
pub const ENV_OUTPUT_DIR: &str = "SECRET_INJECT_OUTPUT_DIR";
/// Region of the secret: the webhook renders the ARN's own region, so a region that identity
/// webhooks set for the cluster (`AWS_REGION`) never sends a cross-region ARN to the wrong place.
pub const ENV_REGION: &str = "SECRET_INJECT_REGION";
/// Octal file mode of the written secret, chosen by the webhook (see [`FileMode`]).
pub const ENV_FILE_MODE: &str = "SECRET_INJECT_FILE_MODE";

/// UID and GID the injected container runs as when the app's user is not known: the
/// conventional "nonroot" user of distroless images.
pub const DEFAULT_UID: i64 = 65532;

/// Mode of the written secret file. The webhook chooses it together with the injected
/// container's user so that the app containers can read the file and nobody else needs to:
///
/// | pod | injected container runs as | file mode |
/// |---|---|---|
/// | `fsGroup` set | the app's uid if known, else 65532; group `fsGroup` | `0440` |
/// | all app containers share one non-root `runAsUser`, no `fsGroup` | that uid | `0400` |
/// | otherwise (user unknown, mixed, or root) | 65532 | `0444` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// `0400`: readable by the owner (the app's own uid).
    OwnerRead,
    /// `0440`: readable by owner and group (the pod's `fsGroup`).
    GroupRead,
    /// `0444`: readable by every user in the pod.
    WorldRead,
}

impl FileMode {
    /// The mode bits.
    pub fn bits(self) -> u32 {
        match self {
            FileMode::OwnerRead => 0o400,
            FileMode::GroupRead => 0o440,
            FileMode::WorldRead => 0o444,
        }
    }

    /// As rendered in [`ENV_FILE_MODE`].
    pub fn as_env(self) -> &'static str {
        match self {
            FileMode::OwnerRead => "0400",
            FileMode::GroupRead => "0440",
            FileMode::WorldRead => "0444",
        }
    }

    /// Parse the value of [`ENV_FILE_MODE`].
    pub fn from_env(value: &str) -> Option<Self> {
        match value {
            "0400" | "400" => Some(FileMode::OwnerRead),
            "0440" | "440" => Some(FileMode::GroupRead),
            "0444" | "444" => Some(FileMode::WorldRead),
            _ => None,
        }
    }
}

/// Environment variables that carry the pod's AWS identity and region. Identity webhooks (the
/// EKS Pod Identity Webhook for IRSA, the EKS Pod Identity agent's webhook) add them to the app
/// containers; when they ran before us, we copy them into the injected container.
pub const AWS_IDENTITY_ENV: &[&str] = &[
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
];

/// Environment variables whose value is a token file that must be mounted too.
pub const AWS_TOKEN_FILE_ENV: &[&str] = &[
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mode_round_trips_through_env() {
        for mode in [
            FileMode::OwnerRead,
            FileMode::GroupRead,
            FileMode::WorldRead,
        ] {
            assert_eq!(FileMode::from_env(mode.as_env()), Some(mode));
            assert_eq!(format!("0{:o}", mode.bits()), mode.as_env());
        }
        assert_eq!(FileMode::from_env("0777"), None);
    }
}
