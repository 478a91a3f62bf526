//! The manifests `inject` and `iam-policy` read (`-f FILE|-`), and their output on stdout.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Where the manifests come from.
#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// Manifest file to read (YAML or JSON, many documents), or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
}

impl ManifestArgs {
    /// `(how messages name the source, its text)`.
    pub fn read(&self) -> anyhow::Result<(String, String)> {
        let file = &self.file;
        if file.as_os_str() == "-" {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read standard input")?;
            Ok(("standard input".to_owned(), input))
        } else {
            let input = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            Ok((file.display().to_string(), input))
        }
    }
}

/// The chart's namespace allow-lists, checked for the `Namespace` objects in the manifests.
#[derive(Args, Debug)]
pub struct AllowListArgs {
    /// The chart's allowList.mode: off, annotated (namespaces with the
    /// secrets.k8s.aws/allowed-secrets annotation are restricted) or namespace-prefix (every
    /// namespace: secret names start with <namespace>/ unless its annotation allows more).
    /// Checked for the pods of each Namespace given in the manifests; a pod the API server would
    /// refuse is a warning.
    #[arg(
        long,
        env = "SECRET_INJECT_ALLOW_LIST_MODE",
        default_value = "annotated",
        value_name = "MODE"
    )]
    allow_list_mode: crate::spec::allow::Mode,
}

impl AllowListArgs {
    /// The warnings of [`crate::offline::allow_list_warnings`] for `input`.
    pub fn warnings(&self, input: &str) -> anyhow::Result<Vec<String>> {
        let templates = crate::offline::pod_templates(input)?.templates;
        Ok(crate::offline::allow_list_warnings(
            input,
            &templates,
            self.allow_list_mode,
        )?)
    }
}

/// Write `text` to stdout, all of it or an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
