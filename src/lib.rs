//! secret-inject: AWS Secrets Manager secrets in Kubernetes pods, without Kubernetes Secrets.
//!
//! One binary: the mutating admission webhook (`webhook`), the offline injector (`inject`), and
//! the agent the webhook injects. The layout shows the architecture:
//!
//! - [`spec`]: the annotation grammar, parsed once into typed values (pure).
//! - [`contract`]: the plan the webhook renders into the injected container and the agent
//!   parses (pure).
//! - [`mutate`]: the JSON Patch builder shared by the webhook and `inject` (pure).
//! - [`webhook`]: HTTPS server, TLS, router, one module per endpoint, admin and metrics.
//! - [`agent`]: the injected container: plan, fetching, failures and exit codes, writing.
//! - [`offline`]: `inject` on manifests on disk, and its YAML writer.
//! - [`aws`]: the one place AWS clients are built.
//! - [`cli`]: the command line, one module per subcommand.

pub mod agent;
pub mod aws;
pub mod cli;
pub mod contract;
pub mod duration;
pub mod mutate;
pub mod offline;
pub mod signal;
pub mod spec;
pub mod webhook;
