//! `secret-inject admission-policy`: print policy mode's objects for users without Helm (the
//! chart's `mode: policy` installs the same policies).

use std::process::ExitCode;

use clap::Args;

use super::MutationArgs;
use super::mutation::Auto;
use crate::mutate::policy::{self, Install};
use crate::webhook::cluster::KubeVersion;

/// Print the MutatingAdmissionPolicy, the ValidatingAdmissionPolicy, their bindings and the
/// parameters ConfigMap of policy mode.
#[derive(Args, Debug)]
pub struct AdmissionPolicyArgs {
    /// Name of the policies, the bindings and the parameters ConfigMap.
    #[arg(long, default_value = "secret-inject", value_name = "NAME")]
    name: String,
    /// Namespace of the parameters ConfigMap (the operator's: pod authors must not be able to
    /// edit it).
    #[arg(long, default_value = "secret-inject", value_name = "NAMESPACE")]
    namespace: String,
    /// Bind the policies only in namespaces with this label set to `enabled` (e.g.
    /// secrets.k8s.aws/injection); default: every namespace but kube-system.
    #[arg(long, value_name = "LABEL")]
    namespace_label: Option<String>,
    #[command(flatten)]
    mutation: MutationArgs,
}

impl AdmissionPolicyArgs {
    /// Print the objects as YAML documents.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let AdmissionPolicyArgs {
            name,
            namespace,
            namespace_label,
            mutation,
        } = self;
        // Policy mode needs Kubernetes 1.36, which has every feature `auto` asks about.
        let config = mutation.config(Auto::of(Some(KubeVersion {
            major: 1,
            minor: policy::MIN_KUBERNETES_MINOR,
        })))?;
        let namespace_selector = match namespace_label {
            Some(label) => serde_json::json!({"matchLabels": {label: "enabled"}}),
            None => policy::default_namespace_selector(),
        };
        let objects = policy::objects(
            &Install {
                name: &name,
                namespace: &namespace,
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
