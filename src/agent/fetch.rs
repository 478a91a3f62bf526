//! Fetching secrets: each AWS call retried with jittered exponential backoff within a deadline
//! ([`retrying`], shared by every operation), everything permanent failing at once with a
//! classification that says what to fix. The client is built by [`crate::aws`] and handed in.

use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use tracing::{debug, warn};

use super::failure::{Classified, Failure, FailureKind, classify};
use crate::contract::VersionSelector;
use crate::spec::MAX_SECRET_BYTES;

/// Limits of the calls of one run.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    /// When to give up, retries included.
    pub deadline: Instant,
    /// One attempt's budget.
    pub attempt_timeout: Duration,
    /// Most attempts (fewer in a primary region that has a failover region).
    pub max_attempts: u32,
}

impl RetryBudget {
    /// Until `deadline`, attempts of at most `attempt_timeout`, as many as fit.
    pub fn new(deadline: Instant, attempt_timeout: Duration) -> Self {
        Self {
            deadline,
            attempt_timeout,
            max_attempts: u32::MAX,
        }
    }
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
            Ok(Ok(output)) => {
                super::metrics::record_call(operation, Ok(()));
                return Ok(output);
            }
            Ok(Err(error)) => classify(&error),
            Err(_) => Classified::Transient {
                code: "Timeout".to_owned(),
                detail: format!("no answer within {limit:?}"),
            },
        };
        // Every attempt of every AWS call the agent makes passes here: counted once.
        super::metrics::record_call::<()>(operation, Err(&outcome));
        let (code, detail) = match outcome {
            Classified::Permanent(failure) => return Err(failure),
            Classified::Transient { code, detail } => (code, detail),
        };
        let delay = backoff(attempt);
        if attempt >= budget.max_attempts
            || delay >= budget.deadline.saturating_duration_since(Instant::now())
        {
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

/// A fetched value: the bytes of the SecretString, the decoded SecretBinary, or the parameter's
/// value, with the version that served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The value.
    pub bytes: Vec<u8>,
    /// The version id (Secrets Manager) or number (Parameter Store), for the log.
    pub version: Option<String>,
}

/// Fetch one secret with GetSecretValue (the version stage sent explicitly).
pub async fn get_secret_value(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    version: Option<&VersionSelector>,
    budget: RetryBudget,
) -> Result<Fetched, Failure> {
    let output = retrying("GetSecretValue", budget, || {
        let request = client.get_secret_value().secret_id(secret_id);
        match version {
            Some(VersionSelector::Stage(stage)) => request.version_stage(stage),
            Some(VersionSelector::Id(id)) => request.version_id(id),
            None => request,
        }
        .send()
    })
    .await?;
    checked(
        value_of(
            output.secret_string(),
            output.secret_binary().map(|b| b.as_ref()),
        ),
        output.version_id(),
    )
}

/// The id of the version of a secret that holds `stage` now, with DescribeSecret (no value is
/// read); `None` if no version holds it.
pub async fn describe_version(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    stage: &str,
    budget: RetryBudget,
) -> Result<Option<String>, Failure> {
    let output = retrying("DescribeSecret", budget, || {
        client.describe_secret().secret_id(secret_id).send()
    })
    .await?;
    Ok(output.version_ids_to_stages().and_then(|versions| {
        versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.clone())
    }))
}

/// What BatchGetSecretValue answered for a list of secrets.
#[derive(Debug, Default)]
pub struct BatchAnswer {
    /// `(ARN, name, value)` per secret served.
    pub values: Vec<(String, String, Result<Fetched, Failure>)>,
    /// `(secret id as sent, error code, message)` per secret that failed.
    pub errors: Vec<(String, String, String)>,
}

/// Most secrets one BatchGetSecretValue call takes.
pub const BATCH_SIZE: usize = 20;

/// Fetch up to [`BATCH_SIZE`] secrets (their `AWSCURRENT` versions) with one
/// BatchGetSecretValue call (following `NextToken` if the service pages the answer).
pub async fn batch_get_secret_value(
    client: &aws_sdk_secretsmanager::Client,
    secret_ids: &[String],
    budget: RetryBudget,
) -> Result<BatchAnswer, Failure> {
    let mut answer = BatchAnswer::default();
    let mut next_token: Option<String> = None;
    loop {
        let output = retrying("BatchGetSecretValue", budget, || {
            client
                .batch_get_secret_value()
                .set_secret_id_list(Some(secret_ids.to_vec()))
                .set_next_token(next_token.clone())
                .send()
        })
        .await?;
        for value in output.secret_values() {
            answer.values.push((
                value.arn().unwrap_or_default().to_owned(),
                value.name().unwrap_or_default().to_owned(),
                checked(
                    value_of(
                        value.secret_string(),
                        value.secret_binary().map(|b| b.as_ref()),
                    ),
                    value.version_id(),
                ),
            ));
        }
        for error in output.errors() {
            answer.errors.push((
                error.secret_id().unwrap_or_default().to_owned(),
                error.error_code().unwrap_or("UnknownError").to_owned(),
                error.message().unwrap_or_default().to_owned(),
            ));
        }
        match output.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(answer),
        }
    }
}

/// Most names one GetParameters call takes.
pub const PARAMETERS_BATCH_SIZE: usize = 10;

/// One parameter GetParameters served.
#[derive(Debug)]
pub struct ParameterValue {
    /// Its ARN (without a version selector).
    pub arn: String,
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: Result<Fetched, Failure>,
}

/// What GetParameters answered.
#[derive(Debug, Default)]
pub struct ParametersAnswer {
    /// The parameters served, in no particular order.
    pub values: Vec<ParameterValue>,
    /// The names (as sent) the service did not find.
    pub invalid: Vec<String>,
}

/// Fetch up to [`PARAMETERS_BATCH_SIZE`] parameters (ARNs, optionally with a `:version` or
/// `:label` selector) with one GetParameters call, decrypting SecureStrings.
pub async fn get_parameters(
    client: &aws_sdk_ssm::Client,
    names: &[String],
    budget: RetryBudget,
) -> Result<ParametersAnswer, Failure> {
    let output = retrying("GetParameters", budget, || {
        client
            .get_parameters()
            .set_names(Some(names.to_vec()))
            .with_decryption(true)
            .send()
    })
    .await?;
    let mut answer = ParametersAnswer {
        invalid: output.invalid_parameters().to_vec(),
        ..Default::default()
    };
    for parameter in output.parameters() {
        answer.values.push(ParameterValue {
            arn: parameter.arn().unwrap_or_default().to_owned(),
            name: parameter.name().unwrap_or_default().to_owned(),
            value: checked(
                value_of(parameter.value(), None),
                Some(parameter.version().to_string()).as_deref(),
            ),
        });
    }
    Ok(answer)
}

fn value_of(string: Option<&str>, binary: Option<&[u8]>) -> Result<Vec<u8>, Failure> {
    if let Some(string) = string {
        Ok(string.as_bytes().to_vec())
    } else if let Some(binary) = binary {
        Ok(binary.to_vec())
    } else {
        Err(Failure::new(
            FailureKind::Unusable,
            "NoValue",
            "the secret has neither SecretString nor SecretBinary",
        ))
    }
}

fn checked(bytes: Result<Vec<u8>, Failure>, version: Option<&str>) -> Result<Fetched, Failure> {
    let bytes = bytes?;
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
    Ok(Fetched {
        bytes,
        version: version.map(str::to_owned),
    })
}

/// Full-jitter exponential backoff: uniform in [10 ms, min(5 s, 100 ms × 2^attempt)].
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(5));
    let fraction = fastrand::u64(..=1_000_000) as f64 / 1_000_000.0;
    ceiling.mul_f64(fraction).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    //! The SDK's real client and error handling, driven by canned HTTP responses
    //! ([`crate::aws::canned`]).

    use super::*;
    use crate::aws::canned::Canned;

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
        let budget = RetryBudget::new(
            Instant::now() + Duration::from_secs(20),
            Duration::from_secs(5),
        );
        let stage = VersionSelector::Stage("AWSCURRENT".to_owned());
        let result = get_secret_value(&canned.secrets_manager(), ARN, Some(&stage), budget).await;
        (result.map(|f| f.bytes), canned.requests())
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

    #[tokio::test]
    async fn get_parameters_decrypts_and_reports_invalid_names() {
        let canned = Canned::new(vec![Some((
            200,
            r#"{"Parameters":[{"Name":"/app/db","ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db","Value":"v","Version":3,"Type":"SecureString"}],"InvalidParameters":["arn:aws:ssm:us-east-1:123456789012:parameter/gone"]}"#.to_owned(),
        ))]);
        let budget = RetryBudget::new(
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let names = [
            "arn:aws:ssm:us-east-1:123456789012:parameter/app/db:3".to_owned(),
            "arn:aws:ssm:us-east-1:123456789012:parameter/gone".to_owned(),
        ];
        let answer = get_parameters(&canned.ssm(), &names, budget).await.unwrap();
        assert_eq!(answer.invalid, [names[1].clone()]);
        assert_eq!(answer.values.len(), 1);
        let fetched = answer.values[0].value.as_ref().unwrap();
        assert_eq!(
            (fetched.bytes.as_slice(), fetched.version.as_deref()),
            (b"v".as_slice(), Some("3"))
        );
        let request: serde_json::Value = serde_json::from_str(&canned.requests()[0]).unwrap();
        assert_eq!(request["WithDecryption"], true);
        assert_eq!(request["Names"][0], names[0]);
    }

    #[tokio::test]
    async fn an_xml_denial_of_get_parameters_fails_at_once() {
        // What moto's IAM enforcement (and a proxy) answers: HTTP 403 with an XML body, which
        // the awsJson protocol cannot parse.
        let xml = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User is not \
                   authorized to perform: ssm:GetParameters</Message></Error></Errors></ErrorResponse>";
        let canned = Canned::new(vec![
            Some((403, xml.to_owned())),
            Some((403, xml.to_owned())),
        ]);
        let budget = RetryBudget::new(
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let names = ["arn:aws:ssm:us-east-1:123456789012:parameter/app/db".to_owned()];
        let failure = get_parameters(&canned.ssm(), &names, budget)
            .await
            .unwrap_err();
        assert_eq!(
            (failure.kind, failure.code.as_str()),
            (FailureKind::AccessDenied, "AccessDenied")
        );
        assert_eq!(canned.requests().len(), 1, "a denial is not retried");
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
