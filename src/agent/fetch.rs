//! Fetching secrets: each AWS call retried with jittered exponential backoff within a deadline
//! ([`retrying`], shared by every operation), everything permanent failing at once with a
//! classification that says what to fix. The client is built by [`crate::aws`] and handed in.

use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use tracing::{debug, warn};

use super::MAX_SECRET_BYTES;
use super::failure::{Classified, Failure, FailureKind, classify};
use crate::contract::{Plan, VersionSelector};

/// Limits of the calls of one run.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    /// When to give up, retries included.
    pub deadline: Instant,
    /// One attempt's budget.
    pub attempt_timeout: Duration,
}

/// Run `call` until it succeeds, fails permanently, or the deadline leaves no room for another
/// attempt. Each retry logs one line: attempt, code, next delay.
pub async fn retrying<T, E, F, Fut>(
    operation: &'static str,
    budget: RetryBudget,
    mut call: F,
) -> Result<T, Failure>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let remaining = budget.deadline.saturating_duration_since(Instant::now());
        let limit = remaining.min(budget.attempt_timeout);
        let outcome = match tokio::time::timeout(limit, call()).await {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(error)) => classify(&error),
            Err(_) => Classified::Transient {
                code: "Timeout".to_owned(),
                detail: format!("no answer within {limit:?}"),
            },
        };
        let (code, detail) = match outcome {
            Classified::Permanent(failure) => return Err(failure),
            Classified::Transient { code, detail } => (code, detail),
        };
        let delay = backoff(attempt);
        if delay >= budget.deadline.saturating_duration_since(Instant::now()) {
            return Err(Failure::new(
                FailureKind::Unavailable,
                code,
                format!(
                    "{operation}: {attempt} attempts in {:.1?}, the last: {detail}",
                    started.elapsed()
                ),
            ));
        }
        warn!(
            operation,
            attempt,
            %code,
            retry_in_ms = delay.as_millis() as u64,
            "transient error; retrying"
        );
        debug!(operation, attempt, %detail, "transient error detail");
        tokio::time::sleep(delay).await;
    }
}

/// Fetch the plan's secret with GetSecretValue (the version stage sent explicitly): the bytes of
/// the SecretString, or the decoded SecretBinary.
pub async fn get_secret_value(
    client: &aws_sdk_secretsmanager::Client,
    plan: &Plan,
    budget: RetryBudget,
) -> Result<Vec<u8>, Failure> {
    let output = retrying("GetSecretValue", budget, || {
        let request = client.get_secret_value().secret_id(plan.secret.to_string());
        match &plan.version {
            VersionSelector::Stage(stage) => request.version_stage(stage),
            VersionSelector::Id(id) => request.version_id(id),
        }
        .send()
    })
    .await?;
    value_of(output, &plan.version)
}

fn value_of(output: GetSecretValueOutput, version: &VersionSelector) -> Result<Vec<u8>, Failure> {
    let bytes = if let Some(string) = output.secret_string() {
        string.as_bytes().to_vec()
    } else if let Some(binary) = output.secret_binary() {
        binary.as_ref().to_vec()
    } else {
        return Err(Failure::new(
            FailureKind::Unusable,
            "NoValue",
            format!("the secret has neither SecretString nor SecretBinary for {version}"),
        ));
    };
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(Failure::new(
            FailureKind::Unusable,
            "TooLarge",
            format!(
                "the value is {} bytes, more than the {MAX_SECRET_BYTES} bytes a secret may hold",
                bytes.len()
            ),
        ));
    }
    debug!(bytes = bytes.len(), "secret fetched");
    Ok(bytes)
}

/// Full-jitter exponential backoff: uniform in [10 ms, min(5 s, 100 ms × 2^attempt)].
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(5));
    let fraction = (super::random() % 1_000_001) as f64 / 1_000_000.0;
    ceiling.mul_f64(fraction).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    //! The SDK's real client and error handling, driven by canned HTTP responses
    //! ([`crate::aws::canned`]).

    use super::*;
    use crate::aws::canned::Canned;
    use crate::spec::SecretArn;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";

    fn error(code: &str) -> (u16, String) {
        let status = if code == "SomethingNew" { 403 } else { 400 };
        (
            status,
            format!(r#"{{"__type":"{code}","message":"canned"}}"#),
        )
    }

    fn value(json: &str) -> (u16, String) {
        (200, json.to_owned())
    }

    async fn fetch_with(script: Vec<(u16, String)>) -> (Result<Vec<u8>, Failure>, Vec<String>) {
        let canned = Canned::new(script.into_iter().map(Some).collect());
        let plan = crate::contract::Plan::for_arn(SecretArn::parse(ARN).unwrap());
        let budget = RetryBudget {
            deadline: Instant::now() + Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(5),
        };
        let result = get_secret_value(&canned.secrets_manager(), &plan, budget).await;
        (result, canned.requests())
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried_to_success() {
        let (result, requests) = fetch_with(vec![
            error("ThrottlingException"),
            (503, String::new()),
            value(r#"{"ARN":"x","SecretString":"s3cret"}"#),
        ])
        .await;
        assert_eq!(result.unwrap(), b"s3cret");
        assert_eq!(requests.len(), 3);
        for request in requests {
            let request: serde_json::Value = serde_json::from_str(&request).unwrap();
            assert_eq!(request["SecretId"], ARN);
            assert_eq!(request["VersionStage"], "AWSCURRENT");
        }
    }

    #[tokio::test]
    async fn permanent_errors_fail_at_once_with_their_kind() {
        for (code, kind) in [
            ("AccessDeniedException", FailureKind::AccessDenied),
            ("ResourceNotFoundException", FailureKind::NotFound),
            ("DecryptionFailure", FailureKind::Unusable),
            ("UnrecognizedClientException", FailureKind::Credentials),
            ("SomethingNew", FailureKind::AccessDenied),
        ] {
            let (result, requests) = fetch_with(vec![error(code), error(code)]).await;
            let failure = result.unwrap_err();
            assert_eq!((failure.kind, failure.code.as_str()), (kind, code));
            assert_eq!(requests.len(), 1, "{code} was retried");
        }
    }

    #[tokio::test]
    async fn values_are_checked() {
        let (result, _) = fetch_with(vec![value(r#"{"SecretBinary":"AJ//"}"#)]).await;
        assert_eq!(result.unwrap(), [0u8, 159, 255]);
        let (result, _) = fetch_with(vec![value(r#"{"ARN":"x"}"#)]).await;
        assert_eq!(result.unwrap_err().code, "NoValue");
        let large = format!(
            r#"{{"SecretString":"{}"}}"#,
            "x".repeat(MAX_SECRET_BYTES + 1)
        );
        let (result, _) = fetch_with(vec![value(&large)]).await;
        assert_eq!(result.unwrap_err().code, "TooLarge");
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for attempt in 1..30 {
            let b = backoff(attempt);
            assert!(b >= Duration::from_millis(10));
            assert!(b <= Duration::from_secs(5));
        }
        // Jitter: not always the same.
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(samples.len() > 1);
    }
}
