//! What the agent leaves behind: every secret of the plan rendered ([`render`]) and written as
//! one set ([`write`]) with the versions file beside it, and the termination log that
//! `kubectl describe pod` shows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::failure::{self, Failure, FailureKind};
use super::options::Options;
use super::sources::{FetchKey, Served};
use super::{render, write};
use crate::contract::{Plan, VersionSelector};

/// What a successful run wrote.
pub(crate) struct Written {
    /// The set's directory.
    pub(crate) set: PathBuf,
    /// How many files the pod sees.
    pub(crate) files: usize,
    /// How many secrets they came from.
    pub(crate) secrets: usize,
    /// The termination log's line.
    pub(crate) summary: String,
    /// The exit code: 0, or [`crate::contract::RESTART_EXIT_CODE`] to restart the pod.
    pub(crate) exit_code: u8,
}

/// The key of a secret in the versions file.
pub fn version_key((secret, version): &FetchKey) -> String {
    match version {
        Some(VersionSelector::Stage(stage)) => format!("{secret}|stage:{stage}"),
        Some(VersionSelector::Id(id)) => format!("{secret}|id:{id}"),
        None => format!("{secret}|latest"),
    }
}

/// Render every secret of the plan from the fetched values and write them as one set, with the
/// versions beside them.
pub(crate) fn write_all(
    plan: &Plan,
    served: &HashMap<FetchKey, Served>,
    options: &Options,
) -> Result<Written, Failure> {
    let output_dir = Path::new(plan.output_dir.as_str());
    let mut files = Vec::new();
    let mut env = Vec::new();
    let mut failed_over = Vec::new();
    let mut versions = BTreeMap::new();
    for secret in &plan.secrets {
        let key = (secret.secret.clone(), secret.version.clone());
        let Some(value) = served.get(&key) else {
            return Err(
                Failure::new(FailureKind::Internal, "NotFetched", "no value").about(secret.label()),
            );
        };
        let rendered = render::render(secret, &value.fetched.bytes)?;
        files.extend(rendered.files);
        env.extend(rendered.env);
        if secret.region.as_deref().is_some_and(|r| r != value.region) {
            failed_over.push(secret.label());
        }
        versions.insert(
            version_key(&key),
            value.fetched.version.clone().unwrap_or_default(),
        );
    }
    let visible = files.len();
    if !env.is_empty() {
        files.push(render::kubelet_env_file(&env)?);
    }
    files.push(render::OutputFile {
        path: crate::contract::VERSIONS_FILE_NAME.to_owned(),
        // Strings only: serializing cannot fail.
        bytes: serde_json::to_vec(&versions).unwrap_or_default(),
    });
    let set = write::write_set(
        output_dir,
        &files,
        plan.file_mode.bits(),
        options.allow_disk,
    )
    .map_err(|error| match error.is_no_space() {
        true => volume_full(&error, &files),
        false => write_failure(error),
    })?;
    let mut summary = format!(
        "secret-inject: wrote {visible} file(s) for {} secret(s) into {}",
        plan.secrets.len(),
        plan.output_dir.as_str()
    );
    if !env.is_empty() {
        summary.push_str(&format!(" and {} env var(s)", env.len()));
    }
    if let (Some(region), false) = (&plan.failover_region, failed_over.is_empty()) {
        summary.push_str(&format!(
            "; served by the failover region {region}: {}",
            failed_over.join(", ")
        ));
    }
    summary.push('.');
    Ok(Written {
        set,
        files: visible,
        secrets: plan.secrets.len(),
        summary,
        exit_code: failure::exit::OK,
    })
}

/// The volume has no room for the set: the failure names the size a volume needs for these
/// files (two complete sets, as the webhook sizes it) and, through its code, the fix.
fn volume_full(error: &write::WriteError, files: &[render::OutputFile]) -> Failure {
    let (set, links) = write::set_pages(files);
    Failure::new(
        FailureKind::Write,
        VOLUME_FULL,
        format!(
            "{error}; a volume for these files needs at least {} (two complete sets: the agent \
             writes a new set beside the old one)",
            crate::spec::size::quantity(crate::spec::size::volume_for(set, links))
        ),
    )
}

/// The code of a write that found no room on the volume.
pub(crate) const VOLUME_FULL: &str = "VolumeFull";

/// The failure of a write, with its code.
pub(crate) fn write_failure(error: write::WriteError) -> Failure {
    let code = match &error {
        write::WriteError::NotInMemory { .. } => "NotInMemory",
        write::WriteError::Escapes { .. } => "PathEscapes",
        write::WriteError::Collision { .. } => "FileCollision",
        write::WriteError::NoSpace { .. } => VOLUME_FULL,
        write::WriteError::Io { .. } if error.is_no_space() => VOLUME_FULL,
        write::WriteError::Io { .. } => "WriteFailed",
    };
    Failure::new(FailureKind::Write, code, crate::errors::error_chain(&error))
}

/// Write `message` to the termination log; Kubernetes reads at most 4096 bytes of it.
pub(crate) fn write_termination_log(path: &Path, message: &str) {
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    if let Err(error) = std::fs::write(path, &message[..end]) {
        warn!(path = %path.display(), %error, "cannot write the termination log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::SecretId;

    #[test]
    fn version_keys_tell_stages_ids_and_latest_apart() {
        let arn = crate::spec::SecretArn::parse(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        )
        .unwrap();
        let id = SecretId::Arn(arn);
        let keys = [
            version_key(&(
                id.clone(),
                Some(VersionSelector::Stage("AWSCURRENT".into())),
            )),
            version_key(&(id.clone(), Some(VersionSelector::Id("AWSCURRENT".into())))),
            version_key(&(id, None)),
        ];
        assert_eq!(
            keys.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }
}
