//! secret-inject: AWS Secrets Manager secrets in Kubernetes pods, without Kubernetes Secrets.
//!
//! One binary: the mutating admission webhook (`webhook`), the offline injector (`inject`), and
//! the agent the webhook injects. The pure core is [`mutate::mutate`]; everything else is glue.

pub mod admission;
pub mod agent;
pub mod annotations;
pub mod aws;
pub mod contract;
pub mod duration;
pub mod inject;
pub mod metrics;
pub mod mutate;
pub mod server;
pub mod signal;
pub mod tls;
pub mod yaml;
