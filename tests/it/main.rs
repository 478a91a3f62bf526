//! The integration tests, in one test binary (one link of the AWS SDK instead of one per file).
//! Each module is one layer or one part: fixtures and handlers without sockets, the real binary
//! over TLS, the agent against moto, the chart with the real helm, and the image in a chroot.

mod common;

mod agent;
mod arm64;
mod chart;
mod chart_policy;
mod controlplane;
mod golden;
mod guardrails;
mod hostile_connections;
mod hostile_pods;
mod iam_policy;
mod image;
mod image_index;
mod inject_cli;
mod manifests;
mod many_secrets;
mod monitoring;
mod node;
mod node_failures;
mod node_policy;
mod node_rotation;
mod plan_contract;
mod poc_migration;
mod policy_mode;
mod properties;
mod proxy;
mod release;
mod release_meta;
mod rotation;
mod router;
mod volume_full;
mod webhook_e2e;
mod webhook_lifecycle;
