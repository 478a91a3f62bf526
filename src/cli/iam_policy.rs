//! `secret-inject iam-policy -f FILE`: the least-privilege IAM policy for the secrets and
//! parameters that manifests' annotations ask for, one policy document per ServiceAccount.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::manifest::{ManifestArgs, print};
use crate::offline::policy;

/// Print the IAM policies that manifests need.
#[derive(Args, Debug)]
pub struct IamPolicyArgs {
    #[command(flatten)]
    manifests: ManifestArgs,
}

impl IamPolicyArgs {
    /// Read the manifests, print `{"<namespace>/<serviceAccount>": <policy>, ...}` as JSON to
    /// stdout and the notes (what the policies cannot say, e.g. KMS keys) to stderr.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let IamPolicyArgs { manifests } = self;
        let (source, input) = manifests.read()?;
        let policies = policy::from_manifests(&input).with_context(|| source.clone())?;
        print(&policies.to_json_pretty())?;
        for note in &policies.notes {
            tracing::info!("{source}: {note}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
