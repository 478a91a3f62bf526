//! Fetching all of a plan's secrets with as few calls as the quotas allow, and [`calls`]: the
//! one description of which AWS calls the agent makes for a plan, which [`fetch_all`] follows
//! and `secret-inject iam-policy` allows.
//!
//! - Each distinct secret (ARN and version) is fetched once, however many files or env vars it
//!   feeds.
//! - Secrets Manager, per region: when at least `batch_threshold` ([`BATCH_THRESHOLD`] unless
//!   changed) secrets want `AWSCURRENT`, they go in BatchGetSecretValue calls of up to 20; the
//!   others (other stages or versions, which the batch call cannot ask for) in parallel
//!   GetSecretValue calls. If a batch call is throttled or denied (its quota is 100/s against
//!   GetSecretValue's 10,000/s, and it needs its own IAM action), its secrets fall back to
//!   parallel GetSecretValue, logged once.
//! - Parameter Store, per region: GetParameters calls of up to 10 distinct ARNs.
//! - With a failover region, a Secrets Manager call that fails transiently in the primary
//!   region (after a few attempts) is made again for the replica in the failover region; a
//!   denial or a missing secret never fails over.
//! - As the rotation sidecar, every interval: DescribeSecret on each Secrets Manager secret not
//!   pinned to a version id ([`described`]), in the region that served it; GetParameters on the
//!   parameters again; the secrets that changed are fetched again as above.
//!
//! Every call goes through the run's [`Clients`]: one client per service and region.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::failure::{Classified, Failure, FailureKind, classify_code};
use super::fetch::{self, BATCH_SIZE, Fetched, PARAMETERS_BATCH_SIZE, RetryBudget};
use crate::aws::Clients;
use crate::contract::{Plan, SecretId, VersionSelector, defaults};

/// Attempts in the primary region before a transient failure fails over.
const PRIMARY_ATTEMPTS: u32 = 3;

/// The default batch threshold, declared with the contract's other defaults.
pub use crate::contract::defaults::BATCH_THRESHOLD;

/// What to fetch: a secret and its version.
pub type FetchKey = (SecretId, Option<VersionSelector>);

/// An AWS operation the agent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Secrets Manager: one secret's value.
    GetSecretValue,
    /// Secrets Manager: up to 20 secrets' `AWSCURRENT` values. IAM also checks
    /// GetSecretValue on each of them.
    BatchGetSecretValue,
    /// Secrets Manager: a secret's versions and stages, no value.
    DescribeSecret,
    /// Parameter Store: up to ten parameters, decrypted.
    GetParameters,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 4] = [
        Operation::GetSecretValue,
        Operation::BatchGetSecretValue,
        Operation::DescribeSecret,
        Operation::GetParameters,
    ];

    /// The API operation's name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::GetSecretValue => "GetSecretValue",
            Operation::BatchGetSecretValue => "BatchGetSecretValue",
            Operation::DescribeSecret => "DescribeSecret",
            Operation::GetParameters => "GetParameters",
        }
    }

    /// The IAM action that allows it.
    pub fn action(self) -> &'static str {
        match self {
            Operation::GetSecretValue => "secretsmanager:GetSecretValue",
            Operation::BatchGetSecretValue => "secretsmanager:BatchGetSecretValue",
            Operation::DescribeSecret => "secretsmanager:DescribeSecret",
            Operation::GetParameters => "ssm:GetParameters",
        }
    }
}

/// When the agent makes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Occasion {
    /// At start, always.
    Start,
    /// When a BatchGetSecretValue call is throttled or denied (or answers a transient error
    /// for a secret): each of its secrets with its own call.
    BatchFallback,
    /// When the primary region stays unavailable: the replica in the failover region.
    Failover,
    /// Every refresh interval, as the rotation sidecar (a secret that changed is then fetched
    /// again with its [`Occasion::Start`], [`Occasion::BatchFallback`] or
    /// [`Occasion::Failover`] calls).
    Rotation,
}

/// One call the agent makes, or may make, for a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCall {
    /// What it calls.
    pub operation: Operation,
    /// The region it calls.
    pub region: String,
    /// What it names: one secret; up to 20 (BatchGetSecretValue); up to ten parameters
    /// (GetParameters). A call in the failover region names the replicas.
    pub keys: Vec<FetchKey>,
    /// When.
    pub occasion: Occasion,
}

/// Every call the agent makes for `plan`, and when. `default_region` is the region of a secret
/// given by name without one (the SDK configuration's); `batch_threshold` is
/// `--batch-threshold` (0: never batch).
pub fn calls(plan: &Plan, default_region: &str, batch_threshold: usize) -> Vec<AwsCall> {
    let keys = distinct(plan, default_region);
    let mut regions: Vec<&str> = keys.iter().map(|(_, region, _)| region.as_str()).collect();
    regions.sort_unstable();
    regions.dedup();
    let mut calls = Vec::new();
    let mut call = |operation, region: &str, keys: Vec<FetchKey>, occasion| {
        calls.push(AwsCall {
            operation,
            region: region.to_owned(),
            keys,
            occasion,
        });
    };
    for region in regions {
        let (parameters, secrets): (Vec<FetchKey>, Vec<FetchKey>) = keys
            .iter()
            .filter(|(_, r, _)| r == region)
            .map(|(key, _, _)| key.clone())
            .partition(|(id, _)| matches!(id, SecretId::Parameter(_)));
        let (batched, single) = batched(&secrets, batch_threshold);
        for chunk in batched.chunks(BATCH_SIZE) {
            call(
                Operation::BatchGetSecretValue,
                region,
                chunk.to_vec(),
                Occasion::Start,
            );
        }
        for key in &single {
            call(
                Operation::GetSecretValue,
                region,
                vec![key.clone()],
                Occasion::Start,
            );
        }
        for key in &batched {
            call(
                Operation::GetSecretValue,
                region,
                vec![key.clone()],
                Occasion::BatchFallback,
            );
        }
        let chunks = parameter_chunks(parameters);
        for chunk in &chunks {
            call(
                Operation::GetParameters,
                region,
                chunk.clone(),
                Occasion::Start,
            );
        }
        let replicas: Vec<FetchKey> = match &plan.failover_region {
            Some(failover) => secrets
                .iter()
                .filter_map(|(id, version)| Some((replica(id, failover)?, version.clone())))
                .collect(),
            None => Vec::new(),
        };
        if let Some(failover) = &plan.failover_region {
            for key in &replicas {
                call(
                    Operation::GetSecretValue,
                    failover,
                    vec![key.clone()],
                    Occasion::Failover,
                );
            }
        }
        if plan.refresh.is_some() {
            // Where the secret was served from: the primary region, or the failover region.
            let primary = secrets.iter().map(|key| (region, key));
            let failover = plan.failover_region.as_deref();
            let replicas = replicas.iter().filter_map(|key| Some((failover?, key)));
            for (region, key) in primary.chain(replicas).filter(|(_, key)| described(key)) {
                call(
                    Operation::DescribeSecret,
                    region,
                    vec![key.clone()],
                    Occasion::Rotation,
                );
            }
            for chunk in chunks {
                call(Operation::GetParameters, region, chunk, Occasion::Rotation);
            }
        }
    }
    calls
}

/// The plan's distinct secrets (ARN or name, and version), in the plan's order: each with the
/// region it is called in and how messages name it.
fn distinct(plan: &Plan, default_region: &str) -> Vec<(FetchKey, String, String)> {
    let mut keys: Vec<(FetchKey, String, String)> = Vec::new();
    for secret in &plan.secrets {
        let key = (secret.secret.clone(), secret.version.clone());
        if keys.iter().any(|(k, _, _)| *k == key) {
            continue;
        }
        let region = secret
            .region
            .clone()
            .unwrap_or_else(|| default_region.to_owned());
        keys.push((key, region, secret.label()));
    }
    keys
}

/// The batch rule: of one region's Secrets Manager secrets, `(batched, single)`. Those at
/// `AWSCURRENT` are batched once there are at least `threshold` of them (0: never); the others
/// (other stages or versions, which BatchGetSecretValue cannot ask for) are fetched one by one.
fn batched(secrets: &[FetchKey], threshold: usize) -> (Vec<FetchKey>, Vec<FetchKey>) {
    let current = |v: &Option<VersionSelector>| matches!(v, Some(VersionSelector::Stage(s)) if s == defaults::VERSION_STAGE);
    let (batchable, single): (Vec<FetchKey>, Vec<FetchKey>) =
        secrets.iter().cloned().partition(|(_, v)| current(v));
    if threshold > 0 && batchable.len() >= threshold {
        (batchable, single)
    } else {
        (Vec::new(), batchable.into_iter().chain(single).collect())
    }
}

/// The rotation rule: whether the sidecar asks DescribeSecret about a secret every interval.
/// Parameters are fetched again instead (the answer carries their version), and a secret
/// pinned to a version id never changes.
pub fn described((id, version): &FetchKey) -> bool {
    !matches!(id, SecretId::Parameter(_)) && !matches!(version, Some(VersionSelector::Id(_)))
}

/// The failover rule: the secret's replica in `region` (Secrets Manager replication keeps the
/// ARN and changes its region); a name or a parameter has none.
pub fn replica(id: &SecretId, region: &str) -> Option<SecretId> {
    match id {
        SecretId::Arn(arn) => Some(SecretId::Arn(arn.in_region(region))),
        SecretId::Name(_) | SecretId::Parameter(_) => None,
    }
}

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

/// Fetch every secret of the plan with its [`Occasion::Start`] calls (and, as they fail, its
/// fallback and failover calls). The first failure (in the plan's order) is returned, naming
/// its secret.
pub async fn fetch_all(
    plan: &Plan,
    clients: &Clients,
    options: FetchOptions,
) -> Result<HashMap<FetchKey, Served>, Failure> {
    let default_region = clients.region().unwrap_or_default();
    let context = Arc::new(Context {
        clients: clients.clone(),
        failover_region: plan.failover_region.clone(),
        options,
        fell_back: AtomicBool::new(false),
    });
    let mut tasks: JoinSet<Vec<(FetchKey, Result<Served, Failure>)>> = JoinSet::new();
    for call in calls(plan, default_region, options.batch_threshold) {
        let AwsCall {
            operation,
            region,
            keys,
            occasion: Occasion::Start,
        } = call
        else {
            continue;
        };
        let context = context.clone();
        match operation {
            Operation::BatchGetSecretValue => {
                let ids = keys.into_iter().map(|(id, _)| id).collect();
                tasks.spawn(async move { context.batch(&region, ids).await });
            }
            Operation::GetParameters => {
                tasks.spawn(async move { context.parameters(&region, keys).await });
            }
            Operation::GetSecretValue | Operation::DescribeSecret => {
                for (id, version) in keys {
                    let (context, region) = (context.clone(), region.clone());
                    tasks.spawn(async move {
                        let result = context.get(&region, &id, version.as_ref()).await;
                        vec![((id, version), result)]
                    });
                }
            }
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
    let keys = distinct(plan, default_region);
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
    clients: Clients,
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
        let client = self.clients.secrets_manager(region);
        let result =
            fetch::get_secret_value(&client, &id.to_string(), version, self.budget(true)).await;
        let replica = self
            .failover_region
            .as_deref()
            .and_then(|failover| Some((failover, replica(id, failover)?)));
        match (result, replica) {
            (Ok(fetched), _) => Ok(Served {
                fetched,
                region: region.to_owned(),
            }),
            (Err(failure), Some((failover, replica)))
                if failure.kind == FailureKind::Unavailable =>
            {
                warn!(
                    secret = %id,
                    region,
                    failover_region = %failover,
                    code = %failure.code,
                    "primary region unavailable; failing over"
                );
                let client = self.clients.secrets_manager(failover);
                let fetched = fetch::get_secret_value(
                    &client,
                    &replica.to_string(),
                    version,
                    self.budget(false),
                )
                .await?;
                Ok(Served {
                    fetched,
                    region: failover.to_owned(),
                })
            }
            (Err(failure), _) => Err(failure),
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
        let client = self.clients.secrets_manager(region);
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
                .find(|(arn, name, _)| same_secret(id, arn, name))
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
                let result = match replica(&id, &failover) {
                    Some(replica) => {
                        let client = context.clients.secrets_manager(&failover);
                        fetch::get_secret_value(
                            &client,
                            &replica.to_string(),
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
                    None => Err(primary_failure),
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
        let client = self.clients.ssm(region);
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
/// ARN, its partial ARN, or its name.
fn same_secret(sent: &SecretId, arn: &str, name: &str) -> bool {
    match sent {
        SecretId::Arn(sent) => sent.is_arn_of(arn),
        SecretId::Name(sent) => sent == name || sent == arn,
        SecretId::Parameter(_) => false,
    }
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

    fn arn(value: &str) -> SecretId {
        SecretId::Arn(crate::spec::SecretArn::parse(value).unwrap())
    }

    #[test]
    fn batch_answers_match_full_and_partial_arns_and_names() {
        let full = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert!(same_secret(&arn(full), full, "db"));
        assert!(same_secret(
            &arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:db"),
            full,
            "db"
        ));
        assert!(same_secret(&SecretId::Name("db".into()), full, "db"));
        assert!(!same_secret(
            &arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:d"),
            full,
            "db"
        ));
    }

    fn secret(id: SecretId, version: Option<VersionSelector>) -> crate::contract::SecretPlan {
        let mut secret = crate::contract::SecretPlan::for_arn(
            crate::spec::SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",
            )
            .unwrap(),
        );
        secret.region = match &id {
            SecretId::Arn(arn) => Some(arn.region().to_owned()),
            SecretId::Parameter(arn) => Some(arn.region().to_owned()),
            SecretId::Name(_) => None,
        };
        secret.secret = id;
        secret.version = version;
        secret
    }

    fn stage(stage: &str) -> Option<VersionSelector> {
        Some(VersionSelector::Stage(stage.to_owned()))
    }

    /// `(operation, region, what it names, occasion)` of each call.
    fn summary(calls: &[AwsCall]) -> Vec<(Operation, &str, Vec<String>, Occasion)> {
        calls
            .iter()
            .map(|c| {
                let keys = c.keys.iter().map(|(id, _)| id.to_string()).collect();
                (c.operation, c.region.as_str(), keys, c.occasion)
            })
            .collect()
    }

    #[test]
    fn the_calls_of_a_plan_batch_fall_back_fail_over_and_rotate() {
        use Occasion::*;
        use Operation::*;
        let a = "arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf";
        let b = "arn:aws:secretsmanager:us-east-1:123456789012:secret:b";
        let pinned = "arn:aws:secretsmanager:us-east-1:123456789012:secret:c-AbCdEf";
        let west = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:w-AbCdEf";
        let url = "arn:aws:ssm:us-east-1:123456789012:parameter/url";
        let parameter = SecretId::Parameter(crate::spec::ParameterArn::parse(url).unwrap());
        let mut plan = Plan::for_arn(crate::spec::SecretArn::parse(a).unwrap());
        plan.secrets = vec![
            secret(arn(a), stage("AWSCURRENT")),
            // The same secret and version again: one call.
            secret(arn(a), stage("AWSCURRENT")),
            secret(arn(b), stage("AWSCURRENT")),
            secret(arn(pinned), Some(VersionSelector::Id("v1".into()))),
            secret(arn(west), stage("AWSCURRENT")),
            secret(parameter, None),
            secret(SecretId::Name("by-name".into()), stage("AWSCURRENT")),
        ];
        let replica = |arn: &str| arn.replace(":us-east-1:", ":us-west-2:");
        let start = [
            (BatchGetSecretValue, "us-east-1", vec![a, b], Start),
            (GetSecretValue, "us-east-1", vec![pinned], Start),
            (GetSecretValue, "us-east-1", vec![a], BatchFallback),
            (GetSecretValue, "us-east-1", vec![b], BatchFallback),
            (GetParameters, "us-east-1", vec![url], Start),
        ];
        let owned = |calls: &[(Operation, &'static str, Vec<&str>, Occasion)]| {
            calls
                .iter()
                .map(|(o, r, k, w)| (*o, *r, k.iter().map(|k| k.to_string()).collect(), *w))
                .collect::<Vec<_>>()
        };
        let mut expected = vec![(GetSecretValue, "eu-west-1", vec![west], Start)];
        expected.extend(start.clone());
        expected.push((GetSecretValue, "us-east-2", vec!["by-name"], Start));
        assert_eq!(
            summary(&calls(&plan, "us-east-2", BATCH_THRESHOLD)),
            owned(&expected)
        );
        // Never batching: each secret on its own, in the plan's order.
        let never = calls(&plan, "us-east-2", 0);
        assert!(never.iter().all(|c| c.operation != BatchGetSecretValue));
        assert!(never.iter().all(|c| c.occasion == Start));
        // A failover region and rotation.
        plan.failover_region = Some("us-west-2".to_owned());
        plan.refresh = Some(crate::contract::Refresh {
            interval: std::time::Duration::from_secs(60),
            signal: None,
            url: None,
            restart: false,
            metrics_port: None,
            metrics_address: None,
        });
        let all = calls(&plan, "us-east-2", BATCH_THRESHOLD);
        let (ra, rb, rp) = (replica(a), replica(b), replica(pinned));
        let failover: Vec<_> = summary(&all)
            .into_iter()
            .filter(|c| c.3 == Failover || c.3 == Rotation)
            .collect();
        let rwest = west.replace(":eu-west-1:", ":us-west-2:");
        assert_eq!(
            failover,
            owned(&[
                (GetSecretValue, "us-west-2", vec![rwest.as_str()], Failover),
                (DescribeSecret, "eu-west-1", vec![west], Rotation),
                (DescribeSecret, "us-west-2", vec![rwest.as_str()], Rotation),
                (GetSecretValue, "us-west-2", vec![ra.as_str()], Failover),
                (GetSecretValue, "us-west-2", vec![rb.as_str()], Failover),
                (GetSecretValue, "us-west-2", vec![rp.as_str()], Failover),
                // Not the pinned one, not the parameter: GetParameters again instead.
                (DescribeSecret, "us-east-1", vec![a], Rotation),
                (DescribeSecret, "us-east-1", vec![b], Rotation),
                (DescribeSecret, "us-west-2", vec![ra.as_str()], Rotation),
                (DescribeSecret, "us-west-2", vec![rb.as_str()], Rotation),
                (GetParameters, "us-east-1", vec![url], Rotation),
                // A name has no replica.
                (DescribeSecret, "us-east-2", vec!["by-name"], Rotation),
            ])
        );
    }

    #[test]
    fn batches_hold_twenty_secrets_and_need_the_threshold_in_one_region() {
        let arn_of = |i: usize| {
            arn(&format!(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:s{i}"
            ))
        };
        let mut plan = Plan::for_arn(
            crate::spec::SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:s0",
            )
            .unwrap(),
        );
        plan.secrets = (0..45)
            .map(|i| secret(arn_of(i), stage("AWSCURRENT")))
            .collect();
        let batches: Vec<usize> = calls(&plan, "", BATCH_THRESHOLD)
            .iter()
            .filter(|c| c.operation == Operation::BatchGetSecretValue)
            .map(|c| c.keys.len())
            .collect();
        assert_eq!(batches, [20, 20, 5]);
        // One AWSCURRENT secret and one at another stage: below the threshold.
        plan.secrets = vec![
            secret(arn_of(0), stage("AWSCURRENT")),
            secret(arn_of(1), stage("AWSPREVIOUS")),
        ];
        let all = calls(&plan, "", BATCH_THRESHOLD);
        assert!(all.iter().all(|c| c.operation == Operation::GetSecretValue));
        assert_eq!(all.len(), 2);
        assert_eq!(
            calls(&plan, "", 1)[0].operation,
            Operation::BatchGetSecretValue
        );
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
