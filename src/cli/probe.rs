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
        let dir = output_dir.unwrap_or_else(|| default_dir(|name| std::env::var(name).ok()));
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

/// The agent's output directory when the environment names none: in policy mode
/// ([`env::PLAN_FROM`] `annotations`, no rendered [`env::OUTPUT_DIR`]) the pod's mount-path
/// annotation carried in the environment, as the agent parses it; else the default.
fn default_dir(var: impl Fn(&str) -> Option<String>) -> PathBuf {
    let carried = var(env::PLAN_FROM).as_deref() == Some(crate::contract::PLAN_FROM_ANNOTATIONS);
    let mount_path = carried
        .then(|| var(crate::spec::MOUNT_PATH))
        .flatten()
        .and_then(|value| crate::spec::MountPath::parse(&value).ok());
    PathBuf::from(
        mount_path
            .as_ref()
            .map_or(crate::spec::DEFAULT_MOUNT_PATH, |path| path.as_str()),
    )
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
    fn policy_mode_probes_the_carried_mount_path() {
        let of = |vars: &[(&str, &str)]| {
            default_dir(|name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let mount = ("secrets.k8s.aws/mount-path", "/var/run/secrets/app/");
        let policy = ("SECRET_INJECT_PLAN_FROM", "annotations");
        assert_eq!(of(&[mount, policy]), PathBuf::from("/var/run/secrets/app"));
        // Not carried (webhook mode renders SECRET_INJECT_OUTPUT_DIR), or no mount path.
        assert_eq!(of(&[mount]), PathBuf::from("/tmp"));
        assert_eq!(of(&[policy]), PathBuf::from("/tmp"));
    }

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
