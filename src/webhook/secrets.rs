//! `POST /mutating-secrets`: the secret writer (the seed's second webhook). A Kubernetes Secret
//! labelled `secrets.k8s.aws/store: secretsmanager` is stored in Secrets Manager (CreateSecret,
//! or PutSecretValue for a new value), and Kubernetes keeps only its ARN. Off unless the webhook
//! runs with `--secret-writer`.
//!
//! Nothing reaches etcd in plaintext through us: any AWS failure, a timeout or a value over the
//! limit denies the request. A dry run calls nothing. Values are never logged.

use std::time::Duration;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kube_core::admission::{AdmissionResponse, Operation};

use super::review::{Envelope, Outcome, Reviewed, answer, deny, invalid, summarize};
use super::router::{Endpoint, EndpointFuture};
use crate::mutate::secret::{SecretConversion, SecretRequest, WriterConfig, stored_reference};
use crate::spec;

/// Path of the secret writer.
pub const PATH: &str = "/mutating-secrets";

/// The endpoint.
#[derive(Debug, Clone)]
pub struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    config: WriterConfig,
    kms_key_id: Option<String>,
    aws_timeout: Duration,
}

impl Secrets {
    /// The writer with its Secrets Manager client (built by [`crate::aws`]), its naming and an
    /// AWS time budget that must end before the API server's webhook timeout.
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        config: WriterConfig,
        kms_key_id: Option<String>,
        aws_timeout: Duration,
    ) -> Self {
        Self {
            client,
            config,
            kms_key_id,
            aws_timeout,
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
        let response = AdmissionResponse::from(&request);
        let is_secret = request.resource.group.is_empty()
            && request.resource.resource == "secrets"
            && request.sub_resource.is_none();
        let (true, Operation::Create | Operation::Update, Some(secret)) =
            (is_secret, &request.operation, &request.object)
        else {
            return answer(Outcome::Skipped, response, None, summary);
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let conversion = match SecretConversion::for_secret(secret, &namespace, &self.config) {
            Ok(SecretRequest::Store(conversion)) => conversion,
            Ok(SecretRequest::None | SecretRequest::AlreadyConverted) => {
                return answer(Outcome::Skipped, response, None, summary);
            }
            Err(error) => return deny(response, error.to_string(), summary),
        };
        let existing_arn = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(spec::SECRET_ARN))
            .cloned();
        if request.dry_run {
            // No AWS call: show what would be stored.
            let shown = existing_arn
                .clone()
                .unwrap_or_else(|| conversion.name.clone());
            let mut response = response;
            response.warnings = Some(vec![format!(
                "secret-inject: dry run, nothing was written to Secrets Manager; the value would \
                 be stored as {}{}",
                conversion.name,
                if existing_arn.is_some() {
                    ""
                } else {
                    " (its ARN is assigned by CreateSecret, so data.arn shows the name)"
                }
            )]);
            let patch = stored_reference(secret, &shown);
            return answer(Outcome::Mutated, response, Some(&patch), summary);
        }
        let stored = tokio::time::timeout(
            self.aws_timeout,
            self.store(&conversion, existing_arn.as_deref()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "Secrets Manager did not answer within {:?}",
                self.aws_timeout
            ))
        });
        match stored {
            Ok(arn) => {
                let patch = stored_reference(secret, &arn);
                answer(Outcome::Mutated, response, Some(&patch), summary)
            }
            Err(reason) => deny(
                response,
                format!(
                    "secret-inject: cannot store Secret {namespace}/{} in Secrets Manager as {}: \
                     {reason}; nothing was stored in Kubernetes",
                    secret.metadata.name.as_deref().unwrap_or(""),
                    conversion.name
                ),
                summary,
            ),
        }
    }

    /// Write the value; returns the secret's ARN. A new Secret is created; an existing one (by
    /// the ARN this writer left, or by name) gets a new AWSCURRENT version. The content-derived
    /// ClientRequestToken makes a retry of the same content a no-op.
    async fn store(
        &self,
        conversion: &SecretConversion,
        existing_arn: Option<&str>,
    ) -> Result<String, String> {
        if existing_arn.is_none() {
            let tags: Vec<Tag> = conversion
                .tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            let created = self
                .client
                .create_secret()
                .name(&conversion.name)
                .secret_string(&conversion.value)
                .client_request_token(&conversion.client_request_token)
                .set_kms_key_id(self.kms_key_id.clone())
                .set_tags(Some(tags))
                .description("Stored by secret-inject from a Kubernetes Secret")
                .send()
                .await;
            match created {
                Ok(output) => return output.arn().map(str::to_owned).ok_or_else(no_arn),
                Err(error) if error.code() == Some("ResourceExistsException") => {}
                Err(error) => return Err(describe(&error)),
            }
        }
        let target = existing_arn.unwrap_or(&conversion.name);
        self.client
            .put_secret_value()
            .secret_id(target)
            .secret_string(&conversion.value)
            .client_request_token(&conversion.client_request_token)
            .send()
            .await
            .map_err(|e| describe(&e))?
            .arn()
            .map(str::to_owned)
            .ok_or_else(no_arn)
    }
}

fn no_arn() -> String {
    "Secrets Manager answered without an ARN".to_owned()
}

/// The AWS error code and message, or the kind of failure; never a value.
fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("ServiceError"),
                err.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "the call to Secrets Manager timed out".to_owned(),
        other => {
            let text = aws_smithy_types::error::display::DisplayErrorContext(other).to_string();
            text.chars().take(300).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::aws::canned::Canned;

    /// The writer over a Secrets Manager that never answers.
    fn endpoint() -> Secrets {
        Secrets::new(
            Canned::new(vec![None, None]).secrets_manager(),
            WriterConfig {
                prefix: "test".to_owned(),
                cluster: "test".to_owned(),
            },
            None,
            Duration::from_millis(200),
        )
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
}
