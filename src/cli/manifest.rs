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

/// Write `text` to stdout, all of it or an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
