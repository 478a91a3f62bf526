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
