//! `secret-inject iam-policy -f FILE`: the least-privilege IAM policy for the secrets and
//! parameters that manifests' annotations ask for, one policy document per ServiceAccount; or,
//! with `--secret-writer`, the policy of the webhook's role when it runs the secret writer.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::manifest::{AllowListArgs, ManifestArgs, print};
use crate::mutate::secret::WriterConfig;
use crate::offline::policy;

/// Print the IAM policies that manifests need, or the secret writer's.
#[derive(Args, Debug)]
pub struct IamPolicyArgs {
    #[command(flatten)]
    manifests: Option<ManifestArgs>,
    /// Where the policies go, which decides how large IAM lets them be (whitespace not
    /// counted): managed (aws iam create-policy, 6144 characters; fits inline too) or inline
    /// (aws iam put-role-policy, 10240 characters for all of a role's inline policies). A
    /// larger policy fails, naming the ServiceAccount and its size.
    #[arg(
        long,
        value_enum,
        default_value = "managed",
        conflicts_with = "secret_writer"
    )]
    policy_type: policy::PolicyType,
    #[command(flatten)]
    writer: WriterPolicyArgs,
    #[command(flatten)]
    allow_list: AllowListArgs,
}

/// The secret writer's policy.
#[derive(Args, Debug)]
pub struct WriterPolicyArgs {
    /// Print the policy of the webhook's role for `webhook --secret-writer` instead (no -f).
    #[arg(long, conflicts_with = "file")]
    secret_writer: bool,
    /// The webhook's --secret-writer-prefix.
    #[arg(long, default_value = "secret-inject", requires = "secret_writer")]
    secret_writer_prefix: String,
    /// The webhook's --cluster-name.
    #[arg(long, default_value = "kubernetes", requires = "secret_writer")]
    cluster_name: String,
    /// Region of the secrets (default: any).
    #[arg(long, default_value = "*", requires = "secret_writer")]
    region: String,
    /// Account of the secrets (default: any; the role's own account in practice).
    #[arg(long, default_value = "*", requires = "secret_writer")]
    account: String,
    /// ARN partition (aws, aws-cn, aws-us-gov).
    #[arg(long, default_value = "aws", requires = "secret_writer")]
    partition: String,
}

impl IamPolicyArgs {
    /// Read the manifests, print `{"<namespace>/<serviceAccount>": <policy>, ...}` as JSON to
    /// stdout and the notes (what the policies cannot say, e.g. KMS keys) to stderr. With
    /// `--secret-writer`, print the writer's one policy document.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let IamPolicyArgs {
            manifests,
            policy_type,
            writer,
            allow_list,
        } = self;
        if writer.secret_writer {
            let document = policy::secret_writer(&policy::WriterScope {
                writer: WriterConfig {
                    prefix: writer.secret_writer_prefix,
                    cluster: writer.cluster_name,
                },
                partition: writer.partition,
                region: writer.region,
                account: writer.account,
            });
            let mut json =
                serde_json::to_string_pretty(&document).context("cannot serialize the policy")?;
            json.push('\n');
            print(&json)?;
            tracing::info!(
                "with --secret-writer-kms-key-id, also allow kms:GenerateDataKey and kms:Decrypt \
                 on that key"
            );
            return Ok(ExitCode::SUCCESS);
        }
        let Some(manifests) = manifests else {
            anyhow::bail!(
                "give the manifests with -f FILE (or -f - for standard input), or \
                 --secret-writer for the secret writer's policy"
            );
        };
        let (source, input) = manifests.read()?;
        let policies = policy::from_manifests(&input).with_context(|| source.clone())?;
        // A policy IAM would refuse is an error, and nothing is printed to pipe into IAM.
        policies
            .check_size(policy_type)
            .with_context(|| source.clone())?;
        let refused = allow_list
            .warnings(&input)
            .with_context(|| source.clone())?;
        print(&policies.to_json_pretty())?;
        for warning in policies.warnings.iter().chain(&refused) {
            tracing::warn!("{source}: {warning}");
        }
        for note in &policies.notes {
            tracing::info!("{source}: {note}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
