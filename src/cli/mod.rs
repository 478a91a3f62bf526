//! The command line: one module per subcommand, each with its clap argument groups and a
//! `run(self)` that destructures them, so a new flag must be wired where it is declared.
//! `main` only parses and dispatches.

mod admission_policy;
mod agent;
mod iam_policy;
mod inject;
mod logging;
mod manifest;
mod mutation;
mod probe;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use admission_policy::AdmissionPolicyArgs;
pub use agent::AgentArgs;
pub use iam_policy::IamPolicyArgs;
pub use inject::InjectArgs;
pub use logging::{LogArgs, LogFormat};
pub use mutation::MutationArgs;
pub use webhook::{AdminArgs, SecretWriterArgs, ServerArgs, TlsArgs, WebhookArgs};

/// Inject AWS Secrets Manager secrets into Kubernetes pods, without Kubernetes Secrets.
#[derive(Parser, Debug)]
#[command(
    name = "secret-inject",
    version = crate::VERSION_AND_REVISION,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the mutating admission webhook (HTTPS, POST /mutating-pods).
    Webhook(Box<WebhookArgs>),
    /// Inject manifests offline: read YAML or JSON, write injected YAML to stdout.
    Inject(Box<InjectArgs>),
    /// Print the least-privilege IAM policy of each ServiceAccount for the secrets and
    /// parameters that manifests name (JSON on stdout, notes on stderr).
    IamPolicy(IamPolicyArgs),
    /// Print policy mode's objects (Kubernetes 1.36+): the MutatingAdmissionPolicy that injects
    /// the agent without a webhook, the ValidatingAdmissionPolicy that denies bad annotations,
    /// and their bindings (YAML on stdout).
    AdmissionPolicy(Box<AdmissionPolicyArgs>),
    /// Fetch a pod's secrets from AWS Secrets Manager and Parameter Store onto the in-memory
    /// volume (the injected container); with a refresh interval, keep them current.
    Agent(Box<AgentArgs>),
    /// Exit 0 once the agent has written the first complete set of files (the rotation
    /// sidecar's startup probe; the image has no shell).
    Probe(probe::ProbeArgs),
}

impl Cli {
    /// Run the parsed command; returns the process exit code.
    pub fn run(self) -> ExitCode {
        let Cli { command, log } = self;
        // People run `inject` and `iam-policy`; pods run the webhook and the agent.
        let default_format = match command {
            Command::Inject(_) | Command::IamPolicy(_) | Command::AdmissionPolicy(_) => {
                LogFormat::Human
            }
            Command::Webhook(_) | Command::Agent(_) | Command::Probe(_) => LogFormat::Json,
        };
        let output = match logging::init(&log, default_format) {
            Ok(output) => output,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
        };
        let result = match command {
            Command::Webhook(args) => args.run(),
            Command::Inject(args) => args.run(),
            Command::IamPolicy(args) => args.run(),
            Command::AdmissionPolicy(args) => args.run(),
            Command::Agent(args) => return ExitCode::from(args.run()),
            Command::Probe(args) => return ExitCode::from(args.run()),
        };
        result.unwrap_or_else(|error| {
            output.fatal(&error);
            ExitCode::FAILURE
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
