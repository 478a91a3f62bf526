//! `POST /mutating-secrets`: the secret writer (the seed's second webhook). A Kubernetes Secret
//! labelled `secrets.k8s.aws/store: secretsmanager` is stored in Secrets Manager (CreateSecret,
//! or PutSecretValue for a new value), and Kubernetes keeps only its ARN. Off unless the webhook
//! runs with `--secret-writer`.
//!
//! Nothing reaches etcd in plaintext through us: any AWS failure, a timeout or a value over the
//! limit denies the request. A dry run calls nothing. Values are never logged.

use std::time::Duration;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::Tag;
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kube_core::admission::Operation;

use super::promote::Promotions;
use super::review::{Envelope, Reviewed, Verdict, invalid, respond, summarize};
use super::router::{Endpoint, EndpointFuture};
use crate::mutate::secret::{
    PENDING_STAGE, SecretConversion, SecretRequest, WriterConfig, check_owner, stored_reference,
};
/// Path of the secret writer.
pub const PATH: &str = "/mutating-secrets";

/// The endpoint.
#[derive(Debug, Clone)]
pub struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    config: WriterConfig,
    kms_key_id: Option<String>,
    aws_timeout: Duration,
    promotions: Promotions,
}

impl Secrets {
    /// The writer with its Secrets Manager client (built by [`crate::aws`]), its naming, an
    /// AWS time budget that must end before the API server's webhook timeout, and the
    /// promotion loop's shared state (what was staged, whether the loop has synced).
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        config: WriterConfig,
        kms_key_id: Option<String>,
        aws_timeout: Duration,
        promotions: Promotions,
    ) -> Self {
        Self {
            client,
            config,
            kms_key_id,
            aws_timeout,
            promotions,
        }
    }
}

impl Endpoint for Secrets {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn review(&self, body: Bytes) -> EndpointFuture<'_> {
        Box::pin(self.review_secret(body))
    }
}

impl Secrets {
    async fn review_secret(&self, body: Bytes) -> Reviewed {
        let request = match Envelope::<Secret>::parse(&body) {
            Ok(request) => request,
            Err(reason) => return invalid(reason, Default::default()),
        };
        let summary = summarize(&request);
        let uid = request.uid.as_str();
        let is_secret = request.resource.group.is_empty()
            && request.resource.resource == "secrets"
            && request.sub_resource.is_none();
        let (true, Operation::Create | Operation::Update, Some(secret)) =
            (is_secret, &request.operation, &request.object)
        else {
            return respond(uid, Verdict::Allow(&[]), summary);
        };
        // The namespace the request claims. A forged review may claim any: what it stores is
        // only ever staged, and made current only for a Secret the API server persisted in
        // that namespace (webhook::promote).
        let namespace = request.namespace.clone().unwrap_or_default();
        let conversion = match SecretConversion::for_secret(secret, &namespace, &self.config) {
            Ok(SecretRequest::Store(conversion)) => conversion,
            Ok(SecretRequest::None | SecretRequest::AlreadyConverted) => {
                return respond(uid, Verdict::Allow(&[]), summary);
            }
            Err(error) => return respond(uid, Verdict::Deny(error.to_string()), summary),
        };
        if request.dry_run {
            // No AWS call: show what would be stored.
            let warnings = [format!(
                "secret-inject: dry run, nothing was written to Secrets Manager; the value would \
                 be staged as a new version of {} and made current once the Secret is stored \
                 (data.arn shows the name: the ARN is assigned by Secrets Manager)",
                conversion.name,
            )];
            let patch = stored_reference(secret, &conversion.name, None);
            return respond(uid, Verdict::patch(&patch, &warnings), summary);
        }
        if !self.promotions.is_synced() {
            return respond(
                uid,
                Verdict::Deny(format!(
                    "secret-inject: cannot store Secret {namespace}/{} yet: the secret writer has \
                     not finished listing labelled Secrets from the API server (it makes stored \
                     versions current only for Secrets the API server persisted); retry in a few \
                     seconds, and if this persists check the webhook's log and its RBAC (list and \
                     watch on secrets); nothing was stored in Kubernetes",
                    secret.metadata.name.as_deref().unwrap_or("")
                )),
                summary,
            );
        }
        let version_id = conversion.version_id(&request.uid);
        let stored = tokio::time::timeout(self.aws_timeout, self.stage(&conversion, &version_id))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "Secrets Manager did not answer within {:?}",
                    self.aws_timeout
                ))
            });
        match stored {
            Ok(arn) => {
                self.promotions.staged(&conversion.name, &version_id);
                let patch = stored_reference(secret, &arn, Some(&version_id));
                respond(uid, Verdict::patch(&patch, &[]), summary)
            }
            Err(reason) => respond(
                uid,
                Verdict::Deny(format!(
                    "secret-inject: cannot store Secret {namespace}/{} in Secrets Manager as {}: \
                     {reason}; nothing was stored in Kubernetes",
                    secret.metadata.name.as_deref().unwrap_or(""),
                    conversion.name
                )),
                summary,
            ),
        }
    }

    /// Stage the value as version `version_id` of the derived secret, labelled
    /// [`PENDING_STAGE`] (never `AWSCURRENT`: a review is only a claim until the API server
    /// persists the Secret); returns the secret's ARN. A missing secret is created without a
    /// value, so nothing is readable before a promotion. An existing one is written only if its
    /// tags say this writer created it for this cluster, namespace and Secret.
    async fn stage(
        &self,
        conversion: &SecretConversion,
        version_id: &str,
    ) -> Result<String, String> {
        let arn = match self.owned_arn(conversion).await? {
            Some(arn) => arn,
            None => {
                let tags: Vec<Tag> = conversion
                    .tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect();
                let created = self
                    .client
                    .create_secret()
                    .name(&conversion.name)
                    .set_kms_key_id(self.kms_key_id.clone())
                    .set_tags(Some(tags))
                    .description("Stored by secret-inject from a Kubernetes Secret")
                    .send()
                    .await;
                match created {
                    Ok(output) => output.arn().map(str::to_owned).ok_or_else(no_arn)?,
                    // Created meanwhile (another replica, a retried call): check it as any other.
                    Err(error) if error.code() == Some("ResourceExistsException") => self
                        .owned_arn(conversion)
                        .await?
                        .ok_or_else(|| "the secret was created and then vanished".to_owned())?,
                    Err(error) => return Err(crate::aws::describe_error(&error)),
                }
            }
        };
        self.client
            .put_secret_value()
            .secret_id(&arn)
            .secret_string(&conversion.value)
            .client_request_token(version_id)
            .version_stages(PENDING_STAGE)
            .send()
            .await
            .map_err(|e| crate::aws::describe_error(&e))?;
        Ok(arn)
    }

    /// The ARN of the derived secret when it exists and is this writer's own for this Secret;
    /// `None` when it does not exist; `Err` (nothing written) when its tags say otherwise.
    async fn owned_arn(&self, conversion: &SecretConversion) -> Result<Option<String>, String> {
        match self
            .client
            .describe_secret()
            .secret_id(&conversion.name)
            .send()
            .await
        {
            Ok(described) => {
                let tags = described
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
                check_owner(&conversion.tags, tags).map_err(|why| {
                    format!(
                        "refusing to write to {}: {why}; the secret writer writes only to \
                         secrets it created for this cluster, namespace and Secret (rename the \
                         Secret, or tag the secret if it really is this Secret's)",
                        conversion.name
                    )
                })?;
                described
                    .arn()
                    .map(str::to_owned)
                    .map(Some)
                    .ok_or_else(no_arn)
            }
            Err(error) if error.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(error) => Err(crate::aws::describe_error(&error)),
        }
    }
}

fn no_arn() -> String {
    "Secrets Manager answered without an ARN".to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::aws::canned::Canned;
    use crate::spec;
    use crate::webhook::review::Outcome;

    /// The writer over a Secrets Manager that never answers, its promotion loop synced or not.
    fn endpoint_synced(synced: bool) -> Secrets {
        let promotions =
            Promotions::new(crate::webhook::metrics::Metrics::new().secret_writer_versions());
        if synced {
            promotions.mark_synced();
        }
        Secrets::new(
            Canned::new(vec![None, None]).secrets_manager(),
            WriterConfig {
                prefix: "test".to_owned(),
                cluster: "test".to_owned(),
            },
            None,
            Duration::from_millis(200),
            promotions,
        )
    }

    fn endpoint() -> Secrets {
        endpoint_synced(true)
    }

    #[tokio::test]
    async fn before_the_loop_has_listed_secrets_nothing_is_staged() {
        // The stalled client would time the review out if it were called.
        let reviewed = endpoint_synced(false).review(review(false)).await;
        assert_eq!(reviewed.outcome, Outcome::Denied);
        let body: Value = serde_json::from_slice(&reviewed.body).unwrap();
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("list and watch on secrets"), "{message}");
        assert!(message.contains("nothing was stored"), "{message}");
    }

    fn review(dry_run: bool) -> Bytes {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "ns",
                         "labels": {spec::STORE_LABEL: spec::STORE_SECRETS_MANAGER}},
            "data": {"password": "c2VjcmV0LXZhbHVl"}});
        Bytes::from(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Secret"},
                "resource": {"group": "", "version": "v1", "resource": "secrets"},
                "namespace": "ns", "name": "db", "operation": "CREATE", "userInfo": {},
                "object": secret, "dryRun": dry_run}})
            .to_string(),
        )
    }

    #[tokio::test]
    async fn an_aws_call_that_would_outlast_the_timeout_is_a_denial() {
        let started = std::time::Instant::now();
        let reviewed = endpoint().review(review(false)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(reviewed.outcome, Outcome::Denied);
        let body: Value = serde_json::from_slice(&reviewed.body).unwrap();
        assert_eq!(body["response"]["allowed"], false);
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("did not answer within 200ms"), "{message}");
        assert!(
            message.contains("nothing was stored in Kubernetes"),
            "{message}"
        );
        assert!(!message.contains("secret-value"), "{message}");
    }

    #[tokio::test]
    async fn a_dry_run_calls_nothing() {
        // The stalled client would time the review out if it were called.
        let reviewed = endpoint().review(review(true)).await;
        assert_eq!(reviewed.outcome, Outcome::Mutated);
        let body: Value = serde_json::from_slice(&reviewed.body).unwrap();
        assert!(
            body["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("dry run")
        );
    }

    #[tokio::test]
    async fn a_dry_run_answers_in_the_api_wire_format() {
        let reviewed = endpoint().review(review(true)).await;
        let text = std::str::from_utf8(&reviewed.body).unwrap();
        // The bytes: the uid kept, the patch a base64 string (not an array of numbers, kube-rs
        // #1781) with its type, the warning beside it.
        assert!(
            text.starts_with(
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"warnings":["secret-inject: dry run"#
            ),
            "{text}"
        );
        assert!(text.contains(r#","patch":""#), "{text}");
        assert!(text.ends_with(r#"","patchType":"JSONPatch"}}"#), "{text}");
        let body: Value = serde_json::from_str(text).unwrap();
        let patch = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            body["response"]["patch"].as_str().unwrap(),
        )
        .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert!(!patch.as_array().unwrap().is_empty());
        // The value never travels back in the patch.
        assert!(!patch.to_string().contains("c2VjcmV0LXZhbHVl"), "{patch}");
    }
}
