//! The size of the pod's in-memory secret volume. The webhook cannot see the secrets' sizes, so
//! it bounds what the agent can write for the pod's plan: each secret's value from its store's
//! limit (Secrets Manager 65,536 bytes, Parameter Store 8 KiB), rendered in its format, in the
//! whole pages a tmpfs charges; the kubelet's env file; the versions file; the symlinks. The
//! volume must hold two complete sets: on rotation (and when a restarted pod runs the init
//! container again) the agent writes the new set beside the old one and then swaps `..data`.
//!
//! What the bound assumes (see README, "Volume size"): a `raw`, `json` or `env` file is no
//! larger than the value as stored (true of strings and of the JSON the agent writes back,
//! except numbers in exponent form, which it writes in full, and JMESPath expressions that build
//! values larger than the secret); a `split` secret writes at most
//! [`size::SPLIT_FILES_ASSUMED`] files. A plan beyond the assumption fails in the agent with
//! the size it needs (exit code 8), never silently.

use crate::spec::{InjectionSpec, OutputFormat, SecretSpec, SourceArn, size};

/// How big the volume is: sized from each pod's plan, or a stated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeSize {
    /// From the pod's plan (the default, `--volume-size-limit auto`).
    Auto,
    /// The operator's `--volume-size-limit`, in bytes.
    Stated(u64),
}

impl VolumeSize {
    /// `auto` or a quantity of bytes.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value == "auto" {
            return Ok(VolumeSize::Auto);
        }
        match size::parse_bytes(value) {
            Ok(0) => Err("is 0; give auto or a size such as 16Mi"),
            Ok(bytes) => Ok(VolumeSize::Stated(bytes)),
            Err(_) => Err("is neither auto nor a Kubernetes quantity of bytes such as 16Mi"),
        }
    }
}

/// What the pod's plan can take on the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Pages of one complete set of files (every secret's files, the env file, the versions
    /// file).
    pub set_pages: u64,
    /// Pages of the symlinks beside the sets (a tmpfs keeps a short target in the inode).
    pub link_pages: u64,
}

impl Needs {
    /// The least a volume must hold: two sets and the symlinks.
    pub fn bytes(&self) -> u64 {
        size::needed_for(self.set_pages, self.link_pages)
    }

    /// The size the webhook gives: [`Self::bytes`] with headroom, in whole Mi.
    pub fn volume(&self) -> u64 {
        size::volume_for(self.set_pages, self.link_pages)
    }
}

/// A version id's longest form (Secrets Manager: 64 characters; a parameter version: digits).
pub(crate) const VERSION_ID_BYTES: u64 = 64;

/// What the plan of `injection` can take on the volume.
pub fn needs(injection: &InjectionSpec) -> Needs {
    let mut set_pages: u64 = injection.secrets.iter().map(secret_pages).sum();
    // The kubelet's env file: every binding's `VAR='value'` line, at most what the kubelet reads.
    let env_bytes: u64 = injection
        .env_bindings()
        .map(|(secret, binding)| binding.var.len() as u64 + 4 + value_limit(secret))
        .sum();
    set_pages += size::pages(env_bytes.min(crate::spec::MAX_ENV_FILE_BYTES as u64));
    // The versions file: `{"<arn>|stage:<stage>":"<version id>",...}`.
    let versions: u64 = injection
        .secrets
        .iter()
        .map(|s| {
            let selector = s.version.as_ref().map_or("latest".len(), |v| {
                let (crate::spec::VersionSelector::Stage(v) | crate::spec::VersionSelector::Id(v)) =
                    v;
                "stage:".len() + v.len()
            });
            // Quotes, `|`, `:`, `,` and JSON escapes of the few characters an ARN may hold.
            2 * (s.source.as_str().len() as u64 + selector as u64) + VERSION_ID_BYTES + 8
        })
        .sum();
    set_pages += size::pages(versions + 2);
    // The links beside the sets, one per top-level name.
    let mut tops: Vec<&str> = injection
        .secrets
        .iter()
        .map(|s| {
            let file = s.file_name.as_str();
            file.split('/').next().unwrap_or(file)
        })
        .collect();
    tops.sort_unstable();
    tops.dedup();
    let link_pages = size::link_pages(tops);
    Needs {
        set_pages,
        link_pages,
    }
}

/// The largest value the secret's store holds.
fn value_limit(secret: &SecretSpec) -> u64 {
    match secret.source {
        SourceArn::SecretsManager(_) => crate::spec::MAX_SECRET_BYTES as u64,
        SourceArn::Parameter(_) => size::MAX_PARAMETER_BYTES,
    }
}

/// The pages one secret's files take, at most.
fn secret_pages(secret: &SecretSpec) -> u64 {
    let limit = value_limit(secret);
    match secret.format {
        // One file no larger than the value.
        OutputFormat::Raw | OutputFormat::Json | OutputFormat::Env => size::pages(limit),
        // Files of b₁ + b₂ + ... ≤ limit bytes take at most ⌊limit / page⌋ + files pages; a key
        // with a value takes at least 6 bytes of the JSON (`"k":1,`).
        OutputFormat::Split => {
            let files = size::SPLIT_FILES_ASSUMED.min(limit / 6);
            limit / size::PAGE_BYTES + files
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::spec::Request;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
    const PARAMETER: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/app/flags";

    fn spec(pairs: &[(String, String)]) -> InjectionSpec {
        let annotations: BTreeMap<String, String> = pairs.iter().cloned().collect();
        match InjectionSpec::from_annotations(Some(&annotations)).unwrap() {
            Request::Inject(spec) => spec,
            other => panic!("{other:?}"),
        }
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_owned(), value.to_owned())
    }

    #[test]
    fn one_secret_is_its_store_limit_in_pages_and_its_versions_file() {
        let seed = needs(&spec(&[pair("secrets.k8s.aws/secret-arn", ARN)]));
        assert_eq!(
            seed,
            Needs {
                set_pages: 17,
                link_pages: 1
            }
        );
        assert_eq!(seed.volume(), size::MI);
        let parameter = needs(&spec(&[pair("secrets.k8s.aws/secret-arn", PARAMETER)]));
        assert_eq!(parameter.set_pages, 2 + 1);
        // split: 16 pages of data spread over up to 32 files, each charged a whole page.
        let split = needs(&spec(&[
            pair("secrets.k8s.aws/secret-arn", ARN),
            pair("secrets.k8s.aws/secret-format", "split"),
        ]));
        assert_eq!(split.set_pages, 16 + 32 + 1);
        // env bindings add the kubelet's env file, at most 64 KiB.
        let env = needs(&spec(&[
            pair("secrets.k8s.aws/secret-arn", ARN),
            pair("secrets.k8s.aws/env", "A=a,B=b"),
        ]));
        assert_eq!(env.set_pages, 17 + 16);
    }

    #[test]
    fn a_hundred_largest_secrets_need_two_sets_of_them() {
        let pairs: Vec<_> = (0..100)
            .map(|i| pair(&format!("secrets.k8s.aws/secret-arn.s{i}"), ARN))
            .collect();
        let many = needs(&spec(&pairs));
        // 1,600 pages of values and 6 of versions file a set.
        assert_eq!(many.set_pages, 1600 + 6);
        assert!(many.bytes() >= 2 * 100 * 65_536, "{}", many.bytes());
        assert_eq!(many.volume(), 16 * size::MI);
    }

    #[test]
    fn long_top_level_names_take_a_page_for_their_link() {
        let long = "d".repeat(200);
        let needs = needs(&spec(&[
            pair("secrets.k8s.aws/secret-arn", ARN),
            pair("secrets.k8s.aws/secret-filename", &format!("{long}/a")),
            pair("secrets.k8s.aws/secret-arn.b", ARN),
            pair("secrets.k8s.aws/secret-filename.b", &format!("{long}/b")),
        ]));
        assert_eq!(needs.link_pages, 2);
    }

    #[test]
    fn the_flag_is_auto_or_a_size() {
        assert_eq!(VolumeSize::parse("auto"), Ok(VolumeSize::Auto));
        assert_eq!(
            VolumeSize::parse("64Mi"),
            Ok(VolumeSize::Stated(64 * size::MI))
        );
        assert!(VolumeSize::parse("0").is_err());
        assert!(VolumeSize::parse("Auto").is_err());
        assert!(VolumeSize::parse("1mb").is_err());
    }
}
