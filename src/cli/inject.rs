//! `secret-inject inject -f FILE`: the webhook's mutation applied to manifests on disk.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::MutationArgs;
use crate::offline::inject_documents;

/// Inject manifests offline.
#[derive(Args, Debug)]
pub struct InjectArgs {
    /// Manifest file to inject (YAML or JSON, many documents), or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    mutation: MutationArgs,
}

impl InjectArgs {
    /// Read, inject, print the YAML to stdout and the warnings to stderr.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let InjectArgs { file, mutation } = self;
        // Offline the cluster is unknown: auto means a current one.
        let config = mutation.config(super::mutation::Auto {
            env_files: true,
            native_sidecars: true,
        })?;
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
        let injected = inject_documents(&input, &config).with_context(|| source.clone())?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(injected.yaml.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to standard output")?;
        for warning in &injected.warnings {
            tracing::warn!("{source}: {warning}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
