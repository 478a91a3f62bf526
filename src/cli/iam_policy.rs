//! `secret-inject iam-policy -f FILE`: the least-privilege IAM policy for the secrets and
//! parameters that manifests' annotations ask for, one policy document per ServiceAccount.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::offline::policy;

/// Print the IAM policies that manifests need.
#[derive(Args, Debug)]
pub struct IamPolicyArgs {
    /// Manifest file to read (YAML or JSON, many documents), or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
}

impl IamPolicyArgs {
    /// Read the manifests, print `{"<namespace>/<serviceAccount>": <policy>, ...}` as JSON to
    /// stdout and the notes (what the policies cannot say, e.g. KMS keys) to stderr.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let IamPolicyArgs { file } = self;
        let (source, input) = if file.as_os_str() == "-" {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read standard input")?;
            ("standard input".to_owned(), input)
        } else {
            let input = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            (file.display().to_string(), input)
        };
        let policies = policy::from_manifests(&input).with_context(|| source.clone())?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(policies.to_json_pretty().as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to standard output")?;
        for note in &policies.notes {
            tracing::info!("{source}: {note}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
