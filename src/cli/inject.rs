//! `secret-inject inject -f FILE`: the webhook's mutation applied to manifests on disk.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::MutationArgs;
use super::manifest::{ManifestArgs, print};
use crate::offline::inject_documents;

/// Inject manifests offline.
#[derive(Args, Debug)]
pub struct InjectArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    #[command(flatten)]
    mutation: MutationArgs,
}

impl InjectArgs {
    /// Read, inject, print the YAML to stdout and the warnings to stderr.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let InjectArgs {
            manifests,
            mutation,
        } = self;
        // Offline the cluster is unknown: auto means a current one.
        let config = mutation.config(super::mutation::Auto {
            env_files: true,
            native_sidecars: true,
        })?;
        let (source, input) = manifests.read()?;
        let injected = inject_documents(&input, &config).with_context(|| source.clone())?;
        print(&injected.yaml)?;
        for warning in &injected.warnings {
            tracing::warn!("{source}: {warning}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
