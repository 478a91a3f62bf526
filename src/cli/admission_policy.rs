//! `secret-inject admission-policy`: print policy mode's objects for users without Helm (the
//! chart's `mode: policy` installs the same policies).

use std::process::ExitCode;

use clap::Args;

use super::MutationArgs;
use super::mutation::Auto;
use crate::mutate::policy::{self, Install};
use crate::webhook::cluster::KubeVersion;

/// Print the MutatingAdmissionPolicy, the ValidatingAdmissionPolicy, their bindings and the
/// settings of policy mode (a variable of the mutating policy).
#[derive(Args, Debug)]
pub struct AdmissionPolicyArgs {
    /// Name of the policies and their bindings.
    #[arg(long, default_value = "secret-inject", value_name = "NAME")]
    name: String,
    /// Bind the policies only in namespaces with this label set to `enabled` (e.g.
    /// secrets.k8s.aws/injection); default: every namespace but kube-system.
    #[arg(long, value_name = "LABEL")]
    namespace_label: Option<String>,
    /// Print only this, as JSON: a policy's `spec` (the same for every install but the
    /// mutating policy's settings variable; the chart ships them as files/admission-policy/*.json,
    /// written by scripts/render-manifests), or the settings map the flags make.
    #[arg(long, value_name = "POLICY", value_enum)]
    spec: Option<Spec>,
    #[command(flatten)]
    mutation: MutationArgs,
}

/// A policy whose `spec` `--spec` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// The MutatingAdmissionPolicy's.
    Mutating,
    /// The ValidatingAdmissionPolicy's.
    Validating,
    /// The settings variable of the MutatingAdmissionPolicy, for these flags.
    Settings,
}

impl AdmissionPolicyArgs {
    /// Print the objects as YAML documents.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let AdmissionPolicyArgs {
            name,
            namespace_label,
            spec,
            mutation,
        } = self;
        // Policy mode needs Kubernetes 1.36, which has every feature `auto` asks about.
        let config = mutation.config(Auto::of(Some(KubeVersion {
            major: 1,
            minor: policy::MIN_KUBERNETES_MINOR,
        })))?;
        if let Some(spec) = spec {
            let spec = match spec {
                Spec::Mutating => policy::mutating_policy_spec(),
                Spec::Validating => policy::validating_policy_spec(),
                Spec::Settings => serde_json::to_value(policy::settings(&config)?)?,
            };
            let mut text = serde_json::to_string_pretty(&spec)?;
            text.push('\n');
            super::manifest::print(&text)?;
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(label) = &namespace_label
            && !is_label_key(label)
        {
            anyhow::bail!(
                "--namespace-label {:?}: not a Kubernetes label key (an optional DNS subdomain \
                 prefix and '/', then up to 63 letters, digits, '-', '_' or '.', starting and \
                 ending with a letter or digit), e.g. secrets.k8s.aws/injection",
                label.chars().take(80).collect::<String>()
            );
        }
        let namespace_selector = match namespace_label {
            Some(label) => serde_json::json!({"matchLabels": {label: "enabled"}}),
            None => policy::default_namespace_selector(),
        };
        let objects = policy::objects(
            &Install {
                name: &name,
                namespace_selector,
            },
            &config,
        )?;
        let documents: Vec<String> = objects
            .iter()
            .map(crate::offline::yaml::to_string)
            .collect();
        super::manifest::print(&documents.join("---\n"))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Whether `key` is a Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain of at
/// most 253 characters, the name at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let name_ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        (1..=253).contains(&p.len())
            && p.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    use super::is_label_key;

    #[test]
    fn label_keys() {
        for ok in [
            "secrets.k8s.aws/injection",
            "team",
            "a.b/c_d-e.f",
            "policy.secret-inject.test/x",
        ] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "a/",
            "a/b/c",
            "-x",
            "x-",
            "Upper.Case/x",
            "a/b\"}",
            &"x".repeat(64),
        ] {
            assert!(!is_label_key(bad), "{bad}");
        }
    }
}
