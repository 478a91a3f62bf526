//! What the injected container looks like: flags shared by `webhook` and `inject`, so both
//! inject the same thing.

use clap::Args;

use crate::contract;
use crate::mutate::{MutationConfig, Settings, SettingsError, defaults};

/// What the injected container looks like.
#[derive(Args, Debug)]
pub struct MutationArgs {
    /// Image of the injected container. Defaults to this release's own image.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_IMAGE", default_value = contract::DEFAULT_IMAGE)]
    sidecar_image: String,
    /// imagePullPolicy of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_IMAGE_PULL_POLICY", default_value = defaults::IMAGE_PULL_POLICY,
          value_parser = ["Always", "IfNotPresent", "Never"])]
    sidecar_image_pull_policy: String,
    /// CPU request of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_CPU_REQUEST", default_value = defaults::CPU_REQUEST)]
    sidecar_cpu_request: String,
    /// CPU limit of the injected container (none by default: a CPU limit only slows start-up).
    #[arg(long, env = "SECRET_INJECT_SIDECAR_CPU_LIMIT")]
    sidecar_cpu_limit: Option<String>,
    /// Memory request of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_MEMORY_REQUEST", default_value = defaults::MEMORY_REQUEST)]
    sidecar_memory_request: String,
    /// Memory limit of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_MEMORY_LIMIT", default_value = defaults::MEMORY_LIMIT)]
    sidecar_memory_limit: String,
    /// sizeLimit of the in-memory secret volume (it counts against the pod's memory).
    #[arg(long, env = "SECRET_INJECT_VOLUME_SIZE_LIMIT", default_value = defaults::VOLUME_SIZE_LIMIT)]
    volume_size_limit: String,
    /// Whether env.<n> annotations may add env vars read from the volume (fileKeyRef, the
    /// EnvFiles feature, on by default since Kubernetes 1.35): on, off, or auto (webhook: ask
    /// the API server's version at start; inject: on). The chart sets on or off from the
    /// cluster's version.
    #[arg(
        long,
        env = "SECRET_INJECT_ENV_FILES",
        default_value = "auto",
        value_enum
    )]
    env_files: Switch,
}

/// A cluster feature the webhook relies on: on, off, or decided from the cluster's version.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Decide from the cluster's version.
    Auto,
    /// The cluster has it.
    On,
    /// The cluster lacks it.
    Off,
}

impl MutationArgs {
    /// The `--env-files` switch as given.
    pub fn env_files(&self) -> Switch {
        self.env_files
    }

    /// The validated configuration; `auto_env_files` decides `--env-files auto`.
    pub fn config(&self, auto_env_files: bool) -> Result<MutationConfig, SettingsError> {
        let MutationArgs {
            sidecar_image,
            sidecar_image_pull_policy,
            sidecar_cpu_request,
            sidecar_cpu_limit,
            sidecar_memory_request,
            sidecar_memory_limit,
            volume_size_limit,
            env_files,
        } = self;
        MutationConfig::new(&Settings {
            image: sidecar_image,
            image_pull_policy: sidecar_image_pull_policy,
            cpu_request: sidecar_cpu_request,
            cpu_limit: sidecar_cpu_limit.as_deref(),
            memory_request: sidecar_memory_request,
            memory_limit: sidecar_memory_limit,
            volume_size_limit,
            env_files: match env_files {
                Switch::On => true,
                Switch::Off => false,
                Switch::Auto => auto_env_files,
            },
        })
    }
}
