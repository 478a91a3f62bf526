//! How the agent runs (not what it fetches: that is the [`Plan`](crate::contract::Plan)), and
//! the retry budgets and fetch options a run or a rotation round derives from it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::fetch::RetryBudget;
use super::sources::FetchOptions;
use crate::contract::AgentSettings;

/// What the agent's command line gives besides the plan and the settings: how this host runs it.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Allow writing to a disk-backed directory (local testing only).
    pub allow_disk: bool,
    /// Let the credentials chain use the node's instance metadata (IMDS).
    pub allow_instance_metadata: bool,
    /// Where the outcome goes (Kubernetes shows it in `kubectl describe pod`).
    pub termination_log: PathBuf,
}

/// How the agent runs (not what it fetches: that is the [`Plan`](crate::contract::Plan)).
#[derive(Debug, Clone)]
pub struct Options {
    /// Give up after this long, retrying transient errors.
    pub deadline: Duration,
    /// Longest time for one attempt.
    pub attempt_timeout: Duration,
    /// Allow writing to a disk-backed directory (local testing only).
    pub allow_disk: bool,
    /// Let the credentials chain use the node's instance metadata (IMDS).
    pub allow_instance_metadata: bool,
    /// Where the failure message goes (Kubernetes shows it in `kubectl describe pod`).
    pub termination_log: PathBuf,
    /// Use BatchGetSecretValue for a region with at least this many secrets (0: never).
    pub batch_threshold: usize,
}

impl Options {
    /// The validated settings ([`crate::contract::SettingsFields::parse`]) on this launch.
    pub fn new(settings: AgentSettings, launch: Launch) -> Options {
        let AgentSettings {
            deadline,
            attempt_timeout,
            batch_threshold,
        } = settings;
        let Launch {
            allow_disk,
            allow_instance_metadata,
            termination_log,
        } = launch;
        Options {
            deadline,
            attempt_timeout,
            allow_disk,
            allow_instance_metadata,
            termination_log,
            batch_threshold,
        }
    }
}

/// How the fetches of one run (or one rotation round) go: the agent's batch rule, `budget`.
pub(crate) fn fetch_options(options: &Options, budget: RetryBudget) -> FetchOptions {
    FetchOptions {
        batch_threshold: options.batch_threshold,
        budget,
    }
}

/// The budget of a run that ends `deadline` from now.
pub(crate) fn budget_until(options: &Options, deadline: Duration) -> RetryBudget {
    RetryBudget::new(Instant::now() + deadline, options.attempt_timeout)
}
