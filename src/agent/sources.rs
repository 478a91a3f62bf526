//! Fetching all of a plan's secrets with as few calls as the quotas allow.
//!
//! - Each distinct secret (ARN and version) is fetched once, however many files or env vars it
//!   feeds.
//! - Secrets Manager, per region: when at least `batch_threshold` secrets want `AWSCURRENT`,
//!   they go in BatchGetSecretValue calls of up to 20; the others (other stages or versions,
//!   which the batch call cannot ask for) in parallel GetSecretValue calls. If a batch call is
//!   throttled or denied (its quota is 100/s against GetSecretValue's 10,000/s, and it needs
//!   its own IAM action), its secrets fall back to parallel GetSecretValue, logged once.
//! - Parameter Store, per region: GetParameters calls of up to 10 distinct ARNs.
//! - With a failover region, a Secrets Manager call that fails transiently in the primary
//!   region (after a few attempts) is made again for the replica in the failover region; a
//!   denial or a missing secret never fails over.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_config::SdkConfig;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::failure::{Classified, Failure, FailureKind, classify_code};
use super::fetch::{self, BATCH_SIZE, Fetched, PARAMETERS_BATCH_SIZE, RetryBudget};
use crate::aws;
use crate::contract::{Plan, SecretId, VersionSelector, defaults};

/// Attempts in the primary region before a transient failure fails over.
const PRIMARY_ATTEMPTS: u32 = 3;

/// What to fetch: a secret and its version.
pub type FetchKey = (SecretId, Option<VersionSelector>);

/// A fetched value and the region that served it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The value.
    pub fetched: Fetched,
    /// The region that answered.
    pub region: String,
}

/// How to fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Use BatchGetSecretValue for a region with at least this many `AWSCURRENT` secrets (0:
    /// never).
    pub batch_threshold: usize,
    /// Limits of each call.
    pub budget: RetryBudget,
}

/// Fetch every secret of the plan. The first failure (in the plan's order) is returned,
/// naming its secret.
pub async fn fetch_all(
    plan: &Plan,
    config: &SdkConfig,
    options: FetchOptions,
) -> Result<HashMap<FetchKey, Served>, Failure> {
    let mut keys: Vec<(FetchKey, String, String)> = Vec::new();
    for secret in &plan.secrets {
        let key = (secret.secret.clone(), secret.version.clone());
        if keys.iter().any(|(k, _, _)| *k == key) {
            continue;
        }
        let region = secret
            .region
            .clone()
            .or_else(|| config.region().map(|r| r.to_string()))
            .unwrap_or_default();
        keys.push((key, region, secret.label()));
    }
    let context = Arc::new(Context {
        config: config.clone(),
        failover_region: plan.failover_region.clone(),
        options,
        fell_back: AtomicBool::new(false),
    });
    let mut tasks: JoinSet<Vec<(FetchKey, Result<Served, Failure>)>> = JoinSet::new();

    // Group by service and region.
    let mut regions: Vec<String> = keys.iter().map(|(_, r, _)| r.clone()).collect();
    regions.sort();
    regions.dedup();
    for region in regions {
        let here = keys.iter().filter(|(_, r, _)| *r == region);
        let (parameters, secrets): (Vec<_>, Vec<_>) =
            here.partition(|((id, _), _, _)| matches!(id, SecretId::Parameter(_)));
        let current = |v: &Option<VersionSelector>| matches!(v, Some(VersionSelector::Stage(s)) if s == defaults::VERSION_STAGE);
        let (batchable, single): (Vec<_>, Vec<_>) =
            secrets.into_iter().partition(|((_, v), _, _)| current(v));
        let (batchable, single) =
            if options.batch_threshold > 0 && batchable.len() >= options.batch_threshold {
                (batchable, single)
            } else {
                (Vec::new(), batchable.into_iter().chain(single).collect())
            };
        for chunk in batchable.chunks(BATCH_SIZE) {
            let ids: Vec<SecretId> = chunk.iter().map(|((id, _), _, _)| id.clone()).collect();
            let (context, region) = (context.clone(), region.clone());
            tasks.spawn(async move { context.batch(&region, ids).await });
        }
        for ((id, version), _, _) in single {
            let (context, region, id, version) =
                (context.clone(), region.clone(), id.clone(), version.clone());
            tasks.spawn(async move {
                let result = context.get(&region, &id, version.as_ref()).await;
                vec![((id, version), result)]
            });
        }
        let parameters: Vec<FetchKey> = parameters.into_iter().map(|(k, _, _)| k.clone()).collect();
        for chunk in parameter_chunks(parameters) {
            let (context, region) = (context.clone(), region.clone());
            tasks.spawn(async move { context.parameters(&region, chunk).await });
        }
    }

    let mut results: HashMap<FetchKey, Result<Served, Failure>> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let batch = joined.map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                "TaskFailed",
                format!("a fetch task failed: {e}"),
            )
        })?;
        results.extend(batch);
    }
    let mut served = HashMap::with_capacity(results.len());
    for (key, _, label) in keys {
        match results.remove(&key) {
            Some(Ok(value)) => {
                served.insert(key, value);
            }
            Some(Err(failure)) => return Err(failure.about(label)),
            None => {
                return Err(Failure::new(
                    FailureKind::Internal,
                    "NotFetched",
                    "the secret was not in any answer",
                )
                .about(label));
            }
        }
    }
    Ok(served)
}

/// Parameters in chunks of up to ten, each ARN at most once per chunk (the answer names
/// parameters by ARN without the version selector).
fn parameter_chunks(mut keys: Vec<FetchKey>) -> Vec<Vec<FetchKey>> {
    let mut chunks: Vec<Vec<FetchKey>> = Vec::new();
    while !keys.is_empty() {
        let mut chunk: Vec<FetchKey> = Vec::new();
        keys.retain(|key| {
            let clash = chunk.iter().any(|k| k.0 == key.0);
            if chunk.len() < PARAMETERS_BATCH_SIZE && !clash {
                chunk.push(key.clone());
                false
            } else {
                true
            }
        });
        chunks.push(chunk);
    }
    chunks
}

struct Context {
    config: SdkConfig,
    failover_region: Option<String>,
    options: FetchOptions,
    fell_back: AtomicBool,
}

impl Context {
    fn budget(&self, primary: bool) -> RetryBudget {
        let mut budget = self.options.budget;
        if primary && self.failover_region.is_some() {
            budget.max_attempts = PRIMARY_ATTEMPTS;
        }
        budget
    }

    /// One secret with GetSecretValue, failing over when it may.
    async fn get(
        &self,
        region: &str,
        id: &SecretId,
        version: Option<&VersionSelector>,
    ) -> Result<Served, Failure> {
        let client = aws::secrets_manager_in(&self.config, region);
        let result =
            fetch::get_secret_value(&client, &id.to_string(), version, self.budget(true)).await;
        match (result, &self.failover_region, id) {
            (Ok(fetched), _, _) => Ok(Served {
                fetched,
                region: region.to_owned(),
            }),
            (Err(failure), Some(failover), SecretId::Arn(arn))
                if failure.kind == FailureKind::Unavailable =>
            {
                warn!(
                    secret = %arn,
                    region,
                    failover_region = %failover,
                    code = %failure.code,
                    "primary region unavailable; failing over"
                );
                let client = aws::secrets_manager_in(&self.config, failover);
                let replica = arn.in_region(failover);
                let fetched =
                    fetch::get_secret_value(&client, replica.as_str(), version, self.budget(false))
                        .await?;
                Ok(Served {
                    fetched,
                    region: failover.clone(),
                })
            }
            (Err(failure), _, _) => Err(failure),
        }
    }

    /// Up to 20 `AWSCURRENT` secrets with one BatchGetSecretValue call; on throttling or
    /// denial of the call, parallel GetSecretValue calls instead.
    async fn batch(
        self: Arc<Self>,
        region: &str,
        ids: Vec<SecretId>,
    ) -> Vec<(FetchKey, Result<Served, Failure>)> {
        let stage = Some(VersionSelector::Stage(defaults::VERSION_STAGE.to_owned()));
        let key = |id: &SecretId| (id.clone(), stage.clone());
        let sent: Vec<String> = ids.iter().map(SecretId::to_string).collect();
        let client = aws::secrets_manager_in(&self.config, region);
        let mut budget = self.budget(true);
        // Throttling of the batch call means its quota is spent: fall back at once.
        budget.max_attempts = budget.max_attempts.min(PRIMARY_ATTEMPTS);
        let answer = match fetch::batch_get_secret_value(&client, &sent, budget).await {
            Ok(answer) => answer,
            Err(failure) => {
                let falls_back = failure.kind == FailureKind::AccessDenied
                    || is_throttling(&failure.code)
                    || failure.kind == FailureKind::Unavailable;
                if !falls_back {
                    return ids
                        .iter()
                        .map(|id| (key(id), Err(failure.clone())))
                        .collect();
                }
                if failure.kind == FailureKind::Unavailable && self.failover_region.is_some() {
                    // The primary region is down: its replicas, without asking it again.
                    return self.each_in_failover(region, ids, &failure).await;
                }
                if !self.fell_back.swap(true, Ordering::SeqCst) {
                    warn!(
                        region,
                        code = %failure.code,
                        secrets = ids.len(),
                        "BatchGetSecretValue failed; fetching each secret with GetSecretValue \
                         instead"
                    );
                }
                return self.each(region, ids).await;
            }
        };
        let mut results = Vec::with_capacity(ids.len());
        let mut retry = Vec::new();
        for (id, sent) in ids.iter().zip(&sent) {
            if let Some((_, _, value)) = answer
                .values
                .iter()
                .find(|(arn, name, _)| same_secret(sent, arn, name))
            {
                results.push((
                    key(id),
                    value.clone().map(|fetched| Served {
                        fetched,
                        region: region.to_owned(),
                    }),
                ));
            } else if let Some((_, code, message)) = answer
                .errors
                .iter()
                .find(|(secret_id, _, _)| secret_id == sent)
            {
                match classify_code(code.clone(), None, message.clone()) {
                    Classified::Permanent(failure) => results.push((key(id), Err(failure))),
                    // A transient error of one secret: fetch it on its own, with retries.
                    Classified::Transient { .. } => retry.push(id.clone()),
                }
            } else {
                retry.push(id.clone());
            }
        }
        if !retry.is_empty() {
            results.extend(self.each(region, retry).await);
        }
        results
    }

    /// Each secret with its own GetSecretValue call, in parallel.
    async fn each(
        self: Arc<Self>,
        region: &str,
        ids: Vec<SecretId>,
    ) -> Vec<(FetchKey, Result<Served, Failure>)> {
        let stage = Some(VersionSelector::Stage(defaults::VERSION_STAGE.to_owned()));
        let mut tasks = JoinSet::new();
        for id in ids {
            let (context, region, stage) = (self.clone(), region.to_owned(), stage.clone());
            tasks.spawn(async move {
                let result = context.get(&region, &id, stage.as_ref()).await;
                ((id, stage), result)
            });
        }
        join_all(tasks).await
    }

    /// Each secret's replica in the failover region with GetSecretValue, in parallel: the
    /// primary region stayed unavailable for a batch call.
    async fn each_in_failover(
        self: Arc<Self>,
        region: &str,
        ids: Vec<SecretId>,
        failure: &Failure,
    ) -> Vec<(FetchKey, Result<Served, Failure>)> {
        let stage = Some(VersionSelector::Stage(defaults::VERSION_STAGE.to_owned()));
        let Some(failover) = self.failover_region.clone() else {
            return ids
                .into_iter()
                .map(|id| ((id, stage.clone()), Err(failure.clone())))
                .collect();
        };
        warn!(region, failover_region = %failover, code = %failure.code, "primary region unavailable; failing over");
        let mut tasks = JoinSet::new();
        for id in ids {
            let (context, failover, stage, primary_failure) = (
                self.clone(),
                failover.clone(),
                stage.clone(),
                failure.clone(),
            );
            tasks.spawn(async move {
                let result = match &id {
                    SecretId::Arn(arn) => {
                        let client = aws::secrets_manager_in(&context.config, &failover);
                        let replica = arn.in_region(&failover);
                        fetch::get_secret_value(
                            &client,
                            replica.as_str(),
                            stage.as_ref(),
                            context.budget(false),
                        )
                        .await
                        .map(|fetched| Served {
                            fetched,
                            region: failover.clone(),
                        })
                    }
                    // A name has no replica ARN: the primary's failure stands.
                    _ => Err(primary_failure),
                };
                ((id, stage), result)
            });
        }
        join_all(tasks).await
    }

    /// Up to ten parameters with one GetParameters call.
    async fn parameters(
        self: Arc<Self>,
        region: &str,
        keys: Vec<FetchKey>,
    ) -> Vec<(FetchKey, Result<Served, Failure>)> {
        let names: Vec<String> = keys
            .iter()
            .map(|(id, version)| match version {
                Some(VersionSelector::Stage(label)) => format!("{id}:{label}"),
                Some(VersionSelector::Id(number)) => format!("{id}:{number}"),
                None => id.to_string(),
            })
            .collect();
        let client = aws::ssm_in(&self.config, region);
        let answer = match fetch::get_parameters(&client, &names, self.budget(false)).await {
            Ok(answer) => answer,
            Err(failure) => {
                return keys
                    .into_iter()
                    .map(|k| (k, Err(failure.clone())))
                    .collect();
            }
        };
        keys.into_iter()
            .zip(names)
            .map(|(key, name)| {
                let arn = key.0.to_string();
                let result = if answer.invalid.contains(&name) {
                    Err(Failure::new(
                        FailureKind::NotFound,
                        "ParameterNotFound",
                        format!("GetParameters reports {name} as an invalid parameter: it does not exist, or not in that version or label"),
                    ))
                } else if let Some(found) = answer
                    .values
                    .iter()
                    .find(|found| found.arn == arn || found.name == arn)
                {
                    found.value.clone().map(|fetched| Served {
                        fetched,
                        region: region.to_owned(),
                    })
                } else {
                    Err(Failure::new(
                        FailureKind::NotFound,
                        "ParameterNotFound",
                        format!("GetParameters did not return {name}"),
                    ))
                };
                (key, result)
            })
            .collect()
    }
}

/// The results of every task (a task that panicked has none: its secret is then reported as
/// not fetched).
async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    results
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded"
    )
}

/// Whether a BatchGetSecretValue answer (`arn`, `name`) is the secret sent as `sent`: its full
/// ARN, its ARN without the random suffix, or its name.
fn same_secret(sent: &str, arn: &str, name: &str) -> bool {
    sent == arn
        || sent == name
        || arn
            .strip_prefix(sent)
            .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
}

/// Log what was fetched: per secret, the version and the region.
pub fn log_served(plan: &Plan, served: &HashMap<FetchKey, Served>) {
    for secret in &plan.secrets {
        if let Some(value) = served.get(&(secret.secret.clone(), secret.version.clone())) {
            info!(
                secret = %secret.secret,
                name = secret.name.as_ref().map(|n| n.as_str()).unwrap_or(""),
                version = value.fetched.version.as_deref().unwrap_or(""),
                region = %value.region,
                "secret fetched"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_match_full_and_partial_arns_and_names() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert!(same_secret(arn, arn, "db"));
        assert!(same_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
            arn,
            "db"
        ));
        assert!(same_secret("db", arn, "db"));
        assert!(!same_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:d",
            arn,
            "db"
        ));
    }

    #[test]
    fn parameter_chunks_hold_ten_distinct_arns() {
        use crate::spec::ParameterArn;
        let arn = |i: usize| {
            SecretId::Parameter(
                ParameterArn::parse(&format!(
                    "arn:aws:ssm:us-east-1:123456789012:parameter/p{i}"
                ))
                .unwrap(),
            )
        };
        let mut keys: Vec<FetchKey> = (0..25).map(|i| (arn(i), None)).collect();
        keys.push((arn(0), Some(VersionSelector::Id("2".into()))));
        let chunks = parameter_chunks(keys);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 6]);
        for chunk in &chunks {
            for (i, a) in chunk.iter().enumerate() {
                assert!(chunk[i + 1..].iter().all(|b| b.0 != a.0));
            }
        }
    }
}
