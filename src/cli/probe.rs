//! `secret-inject probe`: the startup probe of the native rotation sidecar. Kubernetes starts
//! the app containers once it succeeds, so it succeeds only when the first complete set of
//! files is in place: `..data` (swapped in by one `rename` after every file was written)
//! resolves to a directory. It runs in the sidecar's environment, so it reads the same output
//! directory.

use std::path::PathBuf;

use clap::Args;

use crate::agent::write::DATA_LINK;
use crate::contract::env;

/// Exit 0 once the first complete set of files is written, 1 before.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The output directory of the agent [default: /tmp].
    #[arg(long, env = env::OUTPUT_DIR)]
    output_dir: Option<PathBuf>,
}

impl ProbeArgs {
    /// Run the probe; the exit code.
    pub fn run(self) -> u8 {
        let ProbeArgs { output_dir } = self;
        let dir = output_dir.unwrap_or_else(|| PathBuf::from(crate::spec::DEFAULT_MOUNT_PATH));
        if ready(&dir) {
            0
        } else {
            eprintln!(
                "secret-inject probe: no complete set of files in {} yet",
                dir.display()
            );
            1
        }
    }
}

/// Whether `dir/..data` is a symlink to a directory.
fn ready(dir: &std::path::Path) -> bool {
    let link = dir.join(DATA_LINK);
    link.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
        && link.metadata().is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_the_first_set() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!ready(dir.path()));
        // A plain directory named ..data (not our swap) is not a set.
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        assert!(!ready(dir.path()));
        std::fs::remove_dir(dir.path().join("..data")).unwrap();
        crate::agent::write::write_set(
            dir.path(),
            &[crate::agent::render::OutputFile {
                path: "secret".into(),
                bytes: b"x".to_vec(),
            }],
            0o400,
            true,
        )
        .unwrap();
        assert!(ready(dir.path()));
    }
}
