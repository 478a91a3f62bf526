//! `secret-inject inject -f FILE`: the webhook's mutation applied to manifests on disk.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::MutationArgs;
use super::manifest::{AllowListArgs, ManifestArgs, print};
use super::mutation::Auto;
use crate::offline::inject_documents;
use crate::webhook::cluster::KubeVersion;

/// Inject manifests offline.
#[derive(Args, Debug)]
pub struct InjectArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
    #[command(flatten)]
    mutation: MutationArgs,
    #[command(flatten)]
    allow_list: AllowListArgs,
    /// The Kubernetes version of the cluster the manifests are for (`kubectl version`: 1.35):
    /// --env-files auto and --native-sidecars auto then mean what that version supports, as
    /// the webhook decides from the API server's version. The default is the oldest version
    /// deploy/secret-inject.yaml is rendered for, so inject denies what a webhook installed
    /// from it denies (env.<n> annotations).
    #[arg(long, env = "SECRET_INJECT_KUBERNETES_VERSION", value_name = "X.Y",
          default_value_t = KubeVersion::INJECT_DEFAULT)]
    kubernetes_version: KubeVersion,
}

impl InjectArgs {
    /// Read, inject, print the YAML to stdout and the warnings to stderr.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let InjectArgs {
            manifests,
            mutation,
            allow_list,
            kubernetes_version,
        } = self;
        // Auto means what the cluster supports, decided as the webhook decides it.
        let config = mutation.config(Auto::of(Some(kubernetes_version)))?;
        let (source, input) = manifests.read()?;
        let injected = inject_documents(&input, &config).with_context(|| source.clone())?;
        let refused = allow_list
            .warnings(&input)
            .with_context(|| source.clone())?;
        print(&injected.yaml)?;
        for warning in injected.warnings.iter().chain(&refused) {
            tracing::warn!("{source}: {warning}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
