//! The secret writer's promotion loop: a staged version becomes `AWSCURRENT` only for a Secret
//! the API server really persisted.
//!
//! `POST /mutating-secrets` cannot tell a review the API server sent from one anybody who
//! reaches the port wrote (on EKS the API server cannot present a client certificate). So the
//! endpoint only *stages*: it stores the value as a new version labelled
//! [`PENDING_STAGE`], whose id it derives from the request's uid and writes into the Secret's
//! `secrets.k8s.aws/version-id` annotation. This loop watches labelled Secrets from the API
//! server (metadata only: names, labels, annotations; never `data`) and, when a persisted Secret
//! `namespace/name` names version V, makes V `AWSCURRENT` in the secret derived from that
//! namespace and name, after checking the secret's owner tags. A forged review therefore stages
//! a version nobody reads; a Secret in the attacker's own namespace can only promote versions of
//! the attacker's own secret. Versions staged and never persisted are counted, logged, and lose
//! their staging label after the grace period (Secrets Manager deletes unlabelled versions when
//! it needs room). One exception, which Secrets Manager imposes: a secret's first version is
//! `AWSCURRENT` whatever label it is given, so a forged review for a Secret that does not exist
//! yet leaves a readable secret under that name until the grace period ends, when the loop
//! deletes it (docs/secret-writer.md weighs this).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt as _, watcher};
use tracing::{debug, info, warn};

use super::metrics::SecretWriterVersions;
use crate::mutate::secret::{
    CURRENT_STAGE, PENDING_STAGE, WriterConfig, check_owner, owner_tags, secret_name,
};
use crate::{aws, spec};

/// How often failed promotions are retried and expired staged versions swept.
const TICK: Duration = Duration::from_secs(2);

/// What the endpoint and the loop share: whether the loop has listed every labelled Secret once,
/// and the versions staged but not yet seen on a persisted Secret.
#[derive(Debug, Clone)]
pub struct Promotions(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    synced: AtomicBool,
    staged: Mutex<HashMap<String, Staged>>,
    counter: SecretWriterVersions,
}

#[derive(Debug, Clone)]
struct Staged {
    secret_name: String,
    at: Instant,
}

/// What became of a version, for `secret_inject_secret_writer_versions_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionResult {
    /// Stored with the pending label by the endpoint.
    Staged,
    /// Made `AWSCURRENT` for a persisted Secret.
    Promoted,
    /// Staged, and no persisted Secret named it within the grace period: a forged review, or a
    /// write that a later admission step denied.
    Unpersisted,
    /// A persisted Secret named a version the loop will not promote (its ARN annotation names
    /// another secret, the secret's tags say it is not this Secret's, or no such version).
    Refused,
    /// A promotion failed on an AWS error; it is retried.
    Failed,
}

impl VersionResult {
    /// Every result.
    pub const ALL: [VersionResult; 5] = [
        VersionResult::Staged,
        VersionResult::Promoted,
        VersionResult::Unpersisted,
        VersionResult::Refused,
        VersionResult::Failed,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionResult::Staged => "staged",
            VersionResult::Promoted => "promoted",
            VersionResult::Unpersisted => "unpersisted",
            VersionResult::Refused => "refused",
            VersionResult::Failed => "failed",
        }
    }
}

impl Promotions {
    /// Shared state counting into `counter`.
    pub fn new(counter: SecretWriterVersions) -> Self {
        Self(Arc::new(Shared {
            synced: AtomicBool::new(false),
            staged: Mutex::new(HashMap::new()),
            counter,
        }))
    }

    /// Whether the loop has listed every labelled Secret once (until then the endpoint refuses
    /// to stage: a version staged now might never be promoted).
    pub fn is_synced(&self) -> bool {
        self.0.synced.load(Ordering::SeqCst)
    }

    /// Mark the loop synced (the endpoint's own tests, which run no loop).
    #[cfg(test)]
    pub(crate) fn mark_synced(&self) {
        self.0.synced.store(true, Ordering::SeqCst);
    }

    /// The endpoint staged `version_id` of `secret_name`.
    pub fn staged(&self, secret_name: &str, version_id: &str) {
        self.count(VersionResult::Staged);
        self.lock().insert(
            version_id.to_owned(),
            Staged {
                secret_name: secret_name.to_owned(),
                at: Instant::now(),
            },
        );
    }

    fn count(&self, result: VersionResult) {
        self.0.counter.observe(result);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Staged>> {
        self.0.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A persisted Secret names `version_id`: it is no longer awaited.
    fn persisted(&self, version_id: &str) {
        self.lock().remove(version_id);
    }

    /// Staged versions older than `grace`, removed from the awaited set.
    fn expired(&self, grace: Duration) -> Vec<(String, Staged)> {
        let mut staged = self.lock();
        let now = Instant::now();
        let expired: Vec<String> = staged
            .iter()
            .filter(|(_, s)| now.duration_since(s.at) >= grace)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|id| staged.remove(&id).map(|s| (id, s)))
            .collect()
    }
}

/// The loop's settings and clients.
#[derive(Clone)]
pub struct PromotionLoop {
    /// Secrets Manager, in the writer's region (built by [`crate::aws`]).
    pub client: aws_sdk_secretsmanager::Client,
    /// The API server, read with the webhook's ServiceAccount (`list` and `watch` on secrets).
    pub kube: kube::Client,
    /// Naming and cluster tag.
    pub config: WriterConfig,
    /// Shared with the endpoint.
    pub promotions: Promotions,
    /// How long a staged version may wait for its Secret to be persisted.
    pub grace: Duration,
    /// Time budget of one promotion's AWS calls.
    pub aws_timeout: Duration,
}

/// A persisted Secret that names a staged version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    namespace: String,
    name: String,
    version_id: String,
}

/// What one promotion attempt did.
#[derive(Debug)]
enum Attempt {
    /// The version is now `AWSCURRENT`.
    Promoted,
    /// It already was.
    Unchanged,
    /// It will not be, whatever is retried; why.
    Refused(String),
}

impl PromotionLoop {
    /// Watch labelled Secrets until the stream ends (never, in practice: the watcher re-lists
    /// with backoff after errors).
    pub async fn run(self) {
        // Api<PartialObjectMeta<_>>: metadata-only requests; the data never leaves the API server.
        let api: Api<PartialObjectMeta<Secret>> = Api::all(self.kube.clone());
        let selector = format!("{}={}", spec::STORE_LABEL, spec::STORE_SECRETS_MANAGER);
        let stream = watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        // Per Secret, the version last seen current, so a re-list costs no AWS call for a
        // Secret whose version was already handled.
        let mut handled: HashMap<(String, String), String> = HashMap::new();
        let mut retry: BTreeMap<(String, String), Target> = BTreeMap::new();
        let mut watch_failed: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(Event::Apply(object) | Event::InitApply(object))) => {
                        if let Some(target) = self.target(&object) {
                            let key = (target.namespace.clone(), target.name.clone());
                            if handled.get(&key) != Some(&target.version_id) {
                                retry.remove(&key);
                                if self.handle(&target).await {
                                    handled.insert(key, target.version_id);
                                } else {
                                    retry.insert(key, target);
                                }
                            }
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        if !self.promotions.0.synced.swap(true, Ordering::SeqCst) {
                            info!(secrets = handled.len(), "secret writer: listed labelled Secrets; staging writes");
                        }
                    }
                    Some(Ok(Event::Init)) => {}
                    Some(Ok(Event::Delete(object))) => {
                        let key = (
                            object.metadata.namespace.clone().unwrap_or_default(),
                            object.metadata.name.clone().unwrap_or_default(),
                        );
                        handled.remove(&key);
                        retry.remove(&key);
                    }
                    Some(Err(error)) => {
                        watch_failed = Some(Instant::now());
                        warn!(%error, "secret writer: watching labelled Secrets failed; retrying");
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let due: Vec<_> = std::mem::take(&mut retry).into_iter().collect();
                    for (key, target) in due {
                        if self.handle(&target).await {
                            handled.insert(key, target.version_id);
                        } else {
                            retry.insert(key, target);
                        }
                    }
                    let persisted: Vec<_> = handled.keys().chain(retry.keys()).collect();
                    // After a watch failure the loop may have missed a persisted Secret: until a
                    // grace period has passed without one, nothing is deleted.
                    let may_delete =
                        watch_failed.is_none_or(|at| at.elapsed() >= self.grace);
                    self.sweep(&persisted, may_delete).await;
                }
            }
        }
    }

    /// The version a persisted Secret names, or `None` when it names none (or names one the
    /// loop refuses).
    fn target(&self, object: &PartialObjectMeta<Secret>) -> Option<Target> {
        let meta = &object.metadata;
        let annotations = meta.annotations.as_ref()?;
        let version_id = annotations.get(spec::VERSION_ID)?.clone();
        // Whether or not this replica staged it, the persisted Secret is what counts now.
        self.promotions.persisted(&version_id);
        let namespace = meta.namespace.clone()?;
        let name = meta.name.clone()?;
        // The endpoint refused a foreign ARN annotation at admission; one stored while the
        // webhook was bypassed is refused here. The secret is always derived, never read from it.
        let derived = secret_name(&self.config, &namespace, &name);
        if let Some(arn) = annotations.get(spec::SECRET_ARN)
            && !spec::SecretArn::parse(arn).is_ok_and(|parsed| parsed.names(&derived))
        {
            self.promotions.count(VersionResult::Refused);
            warn!(
                %namespace,
                %name,
                secret = %derived,
                "secret writer: not promoting: the Secret's {} annotation names another secret",
                spec::SECRET_ARN
            );
            return None;
        }
        Some(Target {
            namespace,
            name,
            version_id,
        })
    }

    /// Promote one target; `false` when it should be retried.
    async fn handle(&self, target: &Target) -> bool {
        let derived = secret_name(&self.config, &target.namespace, &target.name);
        let attempt = tokio::time::timeout(self.aws_timeout, self.promote(&derived, target)).await;
        let result = attempt.unwrap_or_else(|_| {
            Err(format!(
                "Secrets Manager did not answer within {:?}",
                self.aws_timeout
            ))
        });
        match result {
            Ok(Attempt::Promoted) => {
                self.promotions.count(VersionResult::Promoted);
                info!(
                    namespace = %target.namespace,
                    name = %target.name,
                    secret = %derived,
                    version_id = %target.version_id,
                    "secret writer: version made current"
                );
                true
            }
            Ok(Attempt::Unchanged) => {
                debug!(secret = %derived, version_id = %target.version_id, "already current");
                true
            }
            Ok(Attempt::Refused(why)) => {
                self.promotions.count(VersionResult::Refused);
                warn!(
                    namespace = %target.namespace,
                    name = %target.name,
                    secret = %derived,
                    version_id = %target.version_id,
                    "secret writer: not promoting: {why}"
                );
                true
            }
            Err(error) => {
                self.promotions.count(VersionResult::Failed);
                warn!(
                    secret = %derived,
                    version_id = %target.version_id,
                    %error,
                    "secret writer: promotion failed; retrying"
                );
                false
            }
        }
    }

    async fn promote(&self, derived: &str, target: &Target) -> Result<Attempt, String> {
        let described = match self
            .client
            .describe_secret()
            .secret_id(derived)
            .send()
            .await
        {
            Ok(described) => described,
            Err(error) if error.code() == Some("ResourceNotFoundException") => {
                return Ok(Attempt::Refused(format!("{derived} does not exist")));
            }
            Err(error) => return Err(aws::describe_error(&error)),
        };
        let expected = owner_tags(&self.config, &target.namespace, &target.name);
        let tags = described
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
        if let Err(why) = check_owner(&expected, tags) {
            return Ok(Attempt::Refused(format!("{derived}: {why}")));
        }
        let stages = described
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default();
        let holding = |stage: &str| {
            stages
                .iter()
                .find(|(_, labels)| labels.iter().any(|l| l == stage))
                .map(|(id, _)| id.clone())
        };
        if !stages.contains_key(&target.version_id) {
            return Ok(Attempt::Refused(format!(
                "{derived} has no version {}",
                target.version_id
            )));
        }
        let current = holding(CURRENT_STAGE);
        let mut result = Attempt::Unchanged;
        if current.as_deref() != Some(target.version_id.as_str()) {
            self.client
                .update_secret_version_stage()
                .secret_id(derived)
                .version_stage(CURRENT_STAGE)
                .move_to_version_id(&target.version_id)
                .set_remove_from_version_id(current)
                .send()
                .await
                .map_err(|e| aws::describe_error(&e))?;
            result = Attempt::Promoted;
        }
        if let Some(pending) = holding(PENDING_STAGE) {
            self.remove_pending(derived, &pending).await?;
        }
        Ok(result)
    }

    async fn remove_pending(&self, secret: &str, version_id: &str) -> Result<(), String> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret)
            .version_stage(PENDING_STAGE)
            .remove_from_version_id(version_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws::describe_error(&e))
    }

    /// Versions staged longer than the grace period ago that no persisted Secret named: counted,
    /// logged, and made harmless. A staged version loses its pending label. The first version
    /// of a secret is the exception: Secrets Manager makes a secret's first version
    /// `AWSCURRENT` whatever label it is given, so a review creating a Secret that was never
    /// persisted leaves a readable secret; the writer deletes it (no recovery window: it never
    /// held a value the API server accepted) unless a persisted Secret has claimed it since.
    async fn sweep(&self, persisted: &[&(String, String)], may_delete: bool) {
        for (version_id, staged) in self.promotions.expired(self.grace) {
            self.promotions.count(VersionResult::Unpersisted);
            warn!(
                secret = %staged.secret_name,
                %version_id,
                grace_period = ?self.grace,
                "secret writer: a version was staged for a review the API server never \
                 persisted (a forged review, or a write a later admission step denied); it was \
                 never made current by the writer"
            );
            let claimed = !may_delete
                || persisted
                    .iter()
                    .any(|(ns, name)| secret_name(&self.config, ns, name) == staged.secret_name);
            let cleanup = self.clean_up(&staged.secret_name, &version_id, claimed);
            match tokio::time::timeout(self.aws_timeout, cleanup).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(secret = %staged.secret_name, %error, "secret writer: cannot clean up an unpersisted version");
                }
                Err(_) => {
                    warn!(secret = %staged.secret_name, "secret writer: cleaning up an unpersisted version timed out");
                }
            }
        }
    }

    async fn clean_up(&self, secret: &str, version_id: &str, claimed: bool) -> Result<(), String> {
        let described = match self.client.describe_secret().secret_id(secret).send().await {
            Ok(described) => described,
            Err(error) if error.code() == Some("ResourceNotFoundException") => return Ok(()),
            Err(error) => return Err(aws::describe_error(&error)),
        };
        let stages = described
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default();
        let labels = stages.get(version_id).cloned().unwrap_or_default();
        let only_version = stages.len() == 1 && stages.contains_key(version_id);
        let ours = described.tags().iter().any(|t| {
            t.key() == Some(crate::mutate::secret::TAG_MANAGED_BY)
                && t.value() == Some(crate::mutate::secret::MANAGED_BY)
        });
        if only_version && ours && !claimed && labels.iter().any(|l| l == CURRENT_STAGE) {
            self.client
                .delete_secret()
                .secret_id(secret)
                .force_delete_without_recovery(true)
                .send()
                .await
                .map_err(|e| aws::describe_error(&e))?;
            info!(
                secret,
                "secret writer: deleted a secret that only an unpersisted review created"
            );
        } else if labels.iter().any(|l| l == PENDING_STAGE) {
            self.remove_pending(secret, version_id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::metrics::Metrics;

    #[test]
    fn a_staged_version_is_awaited_until_persisted_or_expired_and_counted() {
        let metrics = Metrics::new();
        let promotions = Promotions::new(metrics.secret_writer_versions());
        assert!(!promotions.is_synced());
        promotions.staged("p/ns/a", "v-a");
        promotions.staged("p/ns/b", "v-b");
        // Persisted: no longer awaited, never reported.
        promotions.persisted("v-a");
        assert!(promotions.expired(Duration::from_secs(3600)).is_empty());
        let expired = promotions.expired(Duration::ZERO);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, "v-b");
        assert_eq!(expired[0].1.secret_name, "p/ns/b");
        // Reported once.
        assert!(promotions.expired(Duration::ZERO).is_empty());
        let text = metrics.encode();
        assert!(
            text.contains("secret_inject_secret_writer_versions_total{result=\"staged\"} 2"),
            "{text}"
        );
        assert!(text.contains("secret_inject_secret_writer_versions_total{result=\"promoted\"} 0"));
    }
}
