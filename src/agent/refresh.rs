//! Rotation: the agent as a sidecar keeps a pod's files current.
//!
//! After the first complete write, every interval (±10 % jitter) it asks for each Secrets
//! Manager secret's version with `DescribeSecret` (the version that holds the wanted stage;
//! [`sources::described`] says which secrets: those pinned to a version id never change and
//! are not asked about) and for the parameters with `GetParameters` (compared by version). Only what changed is fetched again; the whole
//! set is then rendered and written as one new `..data` set, the change logged with the old and
//! new version ids, and the pod's reload action run. Errors keep the last good files: transient
//! ones are retried sooner with backoff, permanent ones (a denial, a deleted secret) are logged
//! and the termination log is written, and checking goes on at the interval.
//!
//! A change that cannot be written (the volume is full, an I/O error) is a failure the pod's
//! owner sees: the sidecar exits with code 8 and the message in its termination log, so the
//! container's restart count moves and `kubectl describe pod` shows the message and the fix as
//! its last state. The files in place stay. The restarted sidecar finds them: when it cannot
//! write the new set either, it keeps them, logs the failure and tries again every interval,
//! rather than exiting again (a sidecar in back-off would make the pod not ready, taking every
//! replica of a workload out of service for a value they still hold).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::failure::{Failure, FailureKind};
use super::fetch;
use super::metrics;
use super::options::{Options, budget_until, fetch_options};
use super::output::{Written, version_key, write_all, write_termination_log};
use super::reload;
use super::sources::{self, FetchKey, Served};
use crate::aws::Clients;
use crate::contract::{Plan, SecretId, VersionSelector};

/// The versions of the set in place (`..data/..versions`), if any.
fn versions_in_place(dir: &Path) -> Option<BTreeMap<String, String>> {
    let bytes = std::fs::read(
        dir.join(super::write::DATA_LINK)
            .join(crate::contract::VERSIONS_FILE_NAME),
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn versions_of(served: &HashMap<FetchKey, Served>) -> BTreeMap<String, String> {
    served
        .iter()
        .map(|(key, value)| {
            (
                version_key(key),
                value.fetched.version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Fetch and write, then keep the files current until SIGTERM or SIGINT.
pub(crate) async fn run(
    plan: &Plan,
    clients: &Clients,
    options: &Options,
) -> Result<Written, Failure> {
    let Some(refresh) = &plan.refresh else {
        unreachable!("refresh::run is only called for a plan with a refresh interval");
    };
    let dir = Path::new(plan.output_dir.as_str());
    let mut stop = std::pin::pin!(crate::signal::shutdown_signal());
    let first = tokio::select! {
        result = sources::fetch_all(plan, clients, fetch_options(options, budget_until(options, options.deadline))) => result?,
        signal = &mut stop => return Err(Failure::new(
            FailureKind::Interrupted,
            signal,
            "stopped before the secrets were written; no file was written",
        )),
    };
    sources::log_served(plan, &first);
    metrics::checked(plan, |_| true);
    let mut values = first;
    // A restarted sidecar, or the classic sidecar after the init container, finds the same set
    // in place: it is not written again.
    let in_place = versions_in_place(dir);
    // A write that failed while files are in place, retried every interval: the failure.
    let mut unwritten: Option<Failure> = None;
    let mut written = if in_place.as_ref() == Some(&versions_of(&values)) {
        info!("the files in place are current");
        None
    } else {
        match write_all(plan, &values, options) {
            Ok(done) => Some(done),
            // A restarted sidecar (the previous one exited on this failure): keep the files.
            Err(failure) if failure.kind == FailureKind::Write && in_place.is_some() => {
                report(&failure, plan, options);
                unwritten = Some(failure);
                None
            }
            Err(failure) => return Err(failure),
        }
    };
    if let Some(written) = &written {
        metrics::changed(plan, |_| true);
        info!(files = written.files, "secrets written");
        write_termination_log(&options.termination_log, &written.summary);
    }
    let mut retry_after: Option<Duration> = None;
    let mut failures: u32 = 0;
    loop {
        let wait = retry_after.unwrap_or_else(|| jittered(refresh.interval));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            signal = &mut stop => {
                info!(signal, "stopped");
                if let Some(failure) = &unwritten {
                    // The termination log keeps saying what is wrong, not what was written last.
                    return Ok(Written {
                        set: dir.to_owned(),
                        files: 0,
                        secrets: plan.secrets.len(),
                        summary: failure.message(&plan.secrets[0].secret.to_string(), None),
                        exit_code: super::failure::exit::OK,
                    });
                }
                return Ok(written.unwrap_or_else(|| Written {
                    set: dir.to_owned(),
                    files: 0,
                    secrets: plan.secrets.len(),
                    summary: "secret-inject: stopped; the files in place were current.".to_owned(),
                    exit_code: super::failure::exit::OK,
                }));
            }
        }
        let deadline = options.deadline.min(refresh.interval);
        let round = check(plan, clients, &values, options, deadline).await;
        // What changed is written, whatever else failed; a set not written yet is tried again.
        if !round.changed.is_empty() || unwritten.is_some() {
            for (key, (old, new)) in &round.versions {
                info!(
                    secret = %key.0,
                    old_version = old.as_str(),
                    new_version = new.as_str(),
                    "secret changed"
                );
            }
            let mut next = values.clone();
            let changed: Vec<FetchKey> = round.changed.keys().cloned().collect();
            next.extend(round.changed);
            match write_all(plan, &next, options) {
                Ok(mut done) => {
                    info!(files = done.files, "secrets updated");
                    metrics::changed(plan, |s| changed.contains(&key_of(s)));
                    values = next;
                    unwritten = None;
                    reload::after_change(refresh).await;
                    if refresh.restart {
                        // The RestartAllContainers rule restarts the pod's containers in
                        // place; they read the new env file when they start.
                        info!(
                            exit_code = crate::contract::RESTART_EXIT_CODE,
                            "exiting to restart the pod's containers"
                        );
                        done.summary = format!(
                            "{} Exited with {} to restart the pod's containers.",
                            done.summary,
                            crate::contract::RESTART_EXIT_CODE
                        );
                        done.exit_code = crate::contract::RESTART_EXIT_CODE as u8;
                        return Ok(done);
                    }
                    written = Some(done);
                }
                // Held since this sidecar started: said already, by the exit before it.
                Err(failure) if unwritten.is_some() => {
                    metrics::record_failure(&failure);
                    report(&failure, plan, options);
                    unwritten = Some(failure);
                }
                // A change this sidecar cannot write: exit, so the pod's owner sees it.
                Err(failure) if failure.kind == FailureKind::Write => {
                    metrics::record_failure(&failure);
                    error!(
                        code = %failure.code,
                        exit_code = failure.kind.exit_code(),
                        "cannot write the changed secrets; exiting so the container's restart \
                         count and last state show it (the files in place are kept)"
                    );
                    return Err(failure);
                }
                Err(failure) => {
                    metrics::record_failure(&failure);
                    report(&failure, plan, options);
                }
            }
        } else {
            debug!("no secret changed");
        }
        metrics::checked(plan, |s| round.checked.contains(&key_of(s)));
        if let Some(failure) = &round.failure {
            metrics::record_failure(failure);
        }
        match round.failure {
            None => {
                retry_after = None;
                failures = 0;
            }
            Some(failure) if failure.kind == FailureKind::Unavailable => {
                failures += 1;
                let delay = Duration::from_secs(1u64 << failures.min(8)).min(refresh.interval);
                warn!(
                    code = %failure.code,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot check for new versions; keeping the files in place"
                );
                retry_after = Some(delay);
            }
            Some(failure) => {
                report(&failure, plan, options);
                retry_after = None;
            }
        }
    }
}

fn report(failure: &Failure, plan: &Plan, options: &Options) {
    let message = failure.message(&plan.secrets[0].secret.to_string(), None);
    error!(code = %failure.code, "keeping the files in place: {message}");
    write_termination_log(&options.termination_log, &message);
}

/// What one round found.
struct Round {
    /// New values of the secrets that changed.
    changed: HashMap<FetchKey, Served>,
    /// Old and new version of each change.
    versions: Vec<(FetchKey, (String, String))>,
    /// The first failure of the round, if any.
    failure: Option<Failure>,
    /// The secrets whose current version the round learned.
    checked: Vec<FetchKey>,
}

/// A plan's secret as fetched.
fn key_of(secret: &crate::contract::SecretPlan) -> FetchKey {
    (secret.secret.clone(), secret.version.clone())
}

/// Look for new versions; fetch what changed.
async fn check(
    plan: &Plan,
    clients: &Clients,
    values: &HashMap<FetchKey, Served>,
    options: &Options,
    deadline: Duration,
) -> Round {
    let budget = budget_until(options, deadline);
    let mut round = Round {
        changed: HashMap::new(),
        versions: Vec::new(),
        failure: None,
        checked: Vec::new(),
    };
    let mut describe: JoinSet<(FetchKey, Result<Option<String>, Failure>)> = JoinSet::new();
    let mut parameters: Vec<(FetchKey, String)> = Vec::new();
    for (key, served) in values {
        if let (SecretId::Parameter(_), _) = key {
            parameters.push((key.clone(), served.region.clone()));
        } else if sources::described(key) {
            let client = clients.secrets_manager(&served.region);
            let stage = match &key.1 {
                Some(VersionSelector::Stage(stage)) => stage.clone(),
                _ => crate::contract::defaults::VERSION_STAGE.to_owned(),
            };
            // The replica's ARN where the failover region served it.
            let secret_id = sources::replica(&key.0, &served.region)
                .unwrap_or_else(|| key.0.clone())
                .to_string();
            let key = key.clone();
            describe.spawn(async move {
                let result = fetch::describe_version(&client, &secret_id, &stage, budget).await;
                (key, result)
            });
        } else {
            // Pinned to a version id: its version is known without asking, every round.
            round.checked.push(key.clone());
        }
    }
    let mut stale: Vec<FetchKey> = Vec::new();
    while let Some(joined) = describe.join_next().await {
        let Ok((key, result)) = joined else { continue };
        let known = values[&key].fetched.version.clone().unwrap_or_default();
        match result {
            Ok(Some(current)) if current != known => {
                round.versions.push((key.clone(), (known, current)));
                stale.push(key);
            }
            Ok(_) => round.checked.push(key),
            Err(failure) => {
                round
                    .failure
                    .get_or_insert(failure.about(key.0.to_string()));
            }
        }
    }
    // Parameters: the answer holds the values, compared by version.
    let mut regions: Vec<&str> = parameters.iter().map(|(_, r)| r.as_str()).collect();
    regions.sort();
    regions.dedup();
    for region in regions {
        let keys: Vec<FetchKey> = parameters
            .iter()
            .filter(|(_, r)| r == region)
            .map(|(k, _)| k.clone())
            .collect();
        let sub = sub_plan(plan, &keys, region);
        match sources::fetch_all(&sub, clients, fetch_options(options, budget)).await {
            Ok(fetched) => {
                for (key, served) in fetched {
                    round.checked.push(key.clone());
                    let known = values[&key].fetched.version.clone().unwrap_or_default();
                    let current = served.fetched.version.clone().unwrap_or_default();
                    if current != known {
                        round.versions.push((key.clone(), (known, current)));
                        round.changed.insert(key, served);
                    }
                }
            }
            Err(failure) => {
                round.failure.get_or_insert(failure);
            }
        }
    }
    if !stale.is_empty() {
        let sub = Plan {
            secrets: plan
                .secrets
                .iter()
                .filter(|s| stale.contains(&(s.secret.clone(), s.version.clone())))
                .cloned()
                .collect(),
            refresh: None,
            ..plan.clone()
        };
        match sources::fetch_all(&sub, clients, fetch_options(options, budget)).await {
            Ok(fetched) => {
                round.checked.extend(fetched.keys().cloned());
                round.changed.extend(fetched);
            }
            Err(failure) => {
                // Not fetched: not changed this round, tried again at the next.
                round.versions.retain(|(key, _)| !stale.contains(key));
                round.failure.get_or_insert(failure);
            }
        }
    }
    round
}

/// The plan's secrets among `keys`, fetched from `region` (where they were served last).
fn sub_plan(plan: &Plan, keys: &[FetchKey], region: &str) -> Plan {
    Plan {
        secrets: plan
            .secrets
            .iter()
            .filter(|s| keys.contains(&(s.secret.clone(), s.version.clone())))
            .map(|s| {
                let mut s = s.clone();
                s.region = Some(region.to_owned());
                s
            })
            .collect(),
        refresh: None,
        ..plan.clone()
    }
}

/// `interval` ± 10 %.
fn jittered(interval: Duration) -> Duration {
    let fraction = fastrand::u64(..=2000) as f64 / 10_000.0; // 0 ..= 0.2
    interval.mul_f64(0.9 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(300);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(interval)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= Duration::from_secs(270) && *d <= Duration::from_secs(330))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 10, "jitter must vary");
    }
}
