//! Fetching the secret: GetSecretValue with the version stage sent explicitly, transient errors
//! retried with jittered exponential backoff within a deadline, everything else failing at once
//! with a classification that says what to fix.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, Instant};

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_smithy_runtime_api::client::result::ConnectorError;
use tracing::{debug, warn};

use super::{MAX_SECRET_BYTES, Plan};
use crate::annotations::SecretArn;
use crate::aws::{self, Timeouts};

/// The secret to fetch.
#[derive(Debug, Clone)]
pub enum SecretId {
    /// A full ARN.
    Arn(SecretArn),
    /// A name (stand-alone use).
    Name(String),
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretId::Arn(arn) => f.write_str(arn.as_str()),
            SecretId::Name(name) => f.write_str(name),
        }
    }
}

/// Which version to fetch.
#[derive(Debug, Clone)]
pub enum VersionSelector {
    /// A staging label, e.g. AWSCURRENT.
    Stage(String),
    /// A version id.
    Id(String),
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSelector::Stage(stage) => write!(f, "stage {stage}"),
            VersionSelector::Id(id) => write!(f, "version {id}"),
        }
    }
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Total time budget, retries included.
    pub deadline: Duration,
    /// One attempt's budget.
    pub attempt_timeout: Duration,
}

/// What kind of failure: decides the exit code and the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Flags or environment are wrong.
    Config,
    /// No credentials, or STS / Pod Identity refused them.
    Credentials,
    /// IAM denied the call.
    AccessDenied,
    /// No such secret or version.
    NotFound,
    /// The secret cannot be used (KMS, scheduled deletion, no value, too large).
    Unusable,
    /// Transient errors until the deadline.
    Unavailable,
    /// The file could not be written.
    Write,
    /// SIGTERM or SIGINT.
    Interrupted,
    /// A bug or an unexpected state.
    Internal,
}

/// A failed run: kind, an error code (AWS's where there is one) and details.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// AWS error code, or a short name of our own.
    pub code: String,
    /// What happened (never a secret value).
    pub detail: String,
}

impl Failure {
    /// A new failure.
    pub fn new(kind: FailureKind, code: impl Into<String>, detail: String) -> Self {
        Self {
            kind,
            code: code.into(),
            detail,
        }
    }

    /// The one-paragraph message for the log and the termination log: what failed, the AWS
    /// error code, the role in use where known, and the likely fix.
    pub fn message(&self, secret: &str) -> String {
        let role = std::env::var("AWS_ROLE_ARN").ok().filter(|r| !r.is_empty());
        let as_role = role
            .as_deref()
            .map(|r| format!(" as role {r}"))
            .unwrap_or_default();
        let role_or_identity = role.as_deref().unwrap_or("the pod's IAM role");
        let (what, fix) = match self.kind {
            FailureKind::Config if self.code == "TlsCertificateRejected" => (
                "the endpoint's TLS certificate is not trusted".to_owned(),
                "check AWS_ENDPOINT_URL* and any HTTPS proxy; a private CA must be in the \
                 image's CA bundle (SSL_CERT_FILE)"
                    .to_owned(),
            ),
            FailureKind::Config => (
                "invalid configuration".to_owned(),
                "fix the pod's secrets.k8s.aws/ annotations or the agent's flags".to_owned(),
            ),
            FailureKind::Credentials => (
                "no usable AWS credentials".to_owned(),
                if role.is_some() {
                    format!(
                        "IRSA: the trust policy of {role_or_identity} must allow \
                         sts:AssumeRoleWithWebIdentity for system:serviceaccount:<namespace>:<service-account> \
                         with audience sts.amazonaws.com, and STS must be reachable"
                    )
                } else {
                    "give the pod's service account an IAM role: the IRSA annotation \
                     eks.amazonaws.com/role-arn, or an EKS Pod Identity association; then recreate the pod"
                        .to_owned()
                },
            ),
            FailureKind::AccessDenied => (
                "access denied".to_owned(),
                format!(
                    "allow secretsmanager:GetSecretValue on {secret} in the IAM policy of \
                     {role_or_identity} (and kms:Decrypt on the secret's KMS key if it uses a \
                     customer-managed key)"
                ),
            ),
            FailureKind::NotFound => (
                "secret or version not found".to_owned(),
                "check the ARN (aws secretsmanager describe-secret --secret-id NAME --query ARN), \
                 its region and account, and that the requested version stage exists"
                    .to_owned(),
            ),
            FailureKind::Unusable => (
                "the secret cannot be used".to_owned(),
                match self.code.as_str() {
                    "DecryptionFailure" => {
                        format!("allow kms:Decrypt on the secret's KMS key for {role_or_identity}")
                    }
                    "InvalidRequestException" => "the secret may be scheduled for deletion; \
                         restore it (aws secretsmanager restore-secret) or use another"
                        .to_owned(),
                    "TooLarge" => "Secrets Manager values are at most 65536 bytes".to_owned(),
                    _ => "check the secret's state and value in Secrets Manager".to_owned(),
                },
            ),
            FailureKind::Unavailable => (
                "AWS stayed unavailable until the deadline".to_owned(),
                "check the pod's network path to Secrets Manager and STS (VPC endpoints, \
                 NetworkPolicy, proxy, DNS), or raise SECRET_INJECT_DEADLINE"
                    .to_owned(),
            ),
            FailureKind::Write => (
                "cannot write the secret".to_owned(),
                "the secret volume must be an emptyDir with medium: Memory mounted at the \
                 mount path; check secrets.k8s.aws/mount-path and secrets.k8s.aws/secret-filename"
                    .to_owned(),
            ),
            FailureKind::Interrupted => (
                "interrupted".to_owned(),
                "the pod is being stopped; nothing to fix".to_owned(),
            ),
            FailureKind::Internal => (
                "internal error".to_owned(),
                "please report this with the log".to_owned(),
            ),
        };
        format!(
            "secret-inject: cannot provide secret {secret}{as_role}: {what} ({}): {}. Fix: {fix}.",
            self.code,
            self.detail.trim_end_matches('.')
        )
    }
}

/// Fetch the secret's bytes: SecretString as is, SecretBinary decoded.
pub async fn fetch(plan: &Plan, options: &FetchOptions) -> Result<Vec<u8>, Failure> {
    let started = Instant::now();
    let deadline = started + options.deadline;
    let config = aws::sdk_config(
        plan.region.clone(),
        Timeouts {
            connect: options.attempt_timeout.min(Duration::from_secs(5)),
            attempt: options.attempt_timeout,
        },
    )
    .await;
    if config.region().is_none() {
        return Err(Failure::new(
            FailureKind::Config,
            "NoRegion",
            format!(
                "no AWS region for secret name {}: give the full ARN, or set AWS_REGION or --region",
                plan.secret
            ),
        ));
    }
    let client = aws::secrets_manager(&config);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let mut request = client.get_secret_value().secret_id(plan.secret.to_string());
        request = match &plan.version {
            VersionSelector::Stage(stage) => request.version_stage(stage),
            VersionSelector::Id(id) => request.version_id(id),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = remaining.min(options.attempt_timeout);
        let outcome = match tokio::time::timeout(budget, request.send()).await {
            Ok(Ok(output)) => return value_of(output, plan),
            Ok(Err(error)) => classify(&error),
            Err(_) => Classified::Transient {
                code: "Timeout".to_owned(),
                detail: format!("no answer within {budget:?}"),
            },
        };
        match outcome {
            Classified::Permanent(failure) => return Err(failure),
            Classified::Transient { code, detail } => {
                let backoff = backoff(attempt);
                let remaining = deadline.saturating_duration_since(Instant::now());
                if backoff >= remaining {
                    return Err(Failure::new(
                        FailureKind::Unavailable,
                        code,
                        format!(
                            "{attempt} attempts in {:.1?}, the last: {detail}",
                            started.elapsed()
                        ),
                    ));
                }
                warn!(attempt, %code, %detail, retry_in_ms = backoff.as_millis() as u64, "transient error; retrying");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn value_of(
    output: aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput,
    plan: &Plan,
) -> Result<Vec<u8>, Failure> {
    let bytes = if let Some(string) = output.secret_string() {
        string.as_bytes().to_vec()
    } else if let Some(binary) = output.secret_binary() {
        binary.as_ref().to_vec()
    } else {
        return Err(Failure::new(
            FailureKind::Unusable,
            "NoValue",
            format!(
                "the secret has neither SecretString nor SecretBinary for {}",
                plan.version
            ),
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

/// Full-jitter exponential backoff: uniform in [0, min(5 s, 100 ms × 2^attempt)].
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(5));
    let fraction = (super::random() % 1_000_001) as f64 / 1_000_000.0;
    ceiling.mul_f64(fraction).max(Duration::from_millis(10))
}

enum Classified {
    Transient { code: String, detail: String },
    Permanent(Failure),
}

/// Error codes worth retrying.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

fn classify(
    error: &SdkError<GetSecretValueError, aws_smithy_runtime_api::http::Response>,
) -> Classified {
    let chain = error_chain(error);
    // A certificate the trust store rejects will not fix itself: say so at once.
    if error_sources(error).any(|e| {
        e.downcast_ref::<rustls::Error>().is_some_and(is_certificate_error)
            || e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(is_certificate_error)
            // The TLS error may arrive type-erased; rustls's wording is stable.
            || e.to_string().contains("invalid peer certificate")
    }) {
        return Classified::Permanent(Failure::new(
            FailureKind::Config,
            "TlsCertificateRejected",
            chain,
        ));
    }
    if let Some(credentials) = find::<CredentialsError>(error) {
        return classify_credentials(credentials, &chain);
    }
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            // A JSON error has its code parsed; an XML one (from a proxy, or moto's IAM
            // enforcement) is read here.
            let code = error
                .code()
                .map(str::to_owned)
                .or_else(|| xml_error_code(context.raw().body().bytes().unwrap_or_default()))
                .unwrap_or_default();
            let message = error.message().unwrap_or("").to_owned();
            let detail = if message.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {message}")
            };
            let code_or = |fallback: &str| {
                if code.is_empty() {
                    fallback.to_owned()
                } else {
                    code.clone()
                }
            };
            if TRANSIENT_CODES.contains(&code.as_str()) || status >= 500 || status == 429 {
                return Classified::Transient {
                    code: code_or(&format!("HTTP{status}")),
                    detail,
                };
            }
            let kind = match code.as_str() {
                "AccessDeniedException" | "AccessDenied" => FailureKind::AccessDenied,
                "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "SignatureDoesNotMatch" => FailureKind::Credentials,
                "ResourceNotFoundException" => FailureKind::NotFound,
                "DecryptionFailure" | "InvalidRequestException" | "InvalidParameterException" => {
                    FailureKind::Unusable
                }
                _ if status == 403 => FailureKind::AccessDenied,
                _ if status == 404 => FailureKind::NotFound,
                _ => FailureKind::Internal,
            };
            Classified::Permanent(Failure::new(
                kind,
                code_or(&format!("HTTP{status}")),
                detail,
            ))
        }
        SdkError::TimeoutError(_) => Classified::Transient {
            code: "Timeout".to_owned(),
            detail: chain,
        },
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            Classified::Permanent(Failure::new(FailureKind::Config, "DispatchFailure", chain))
        }
        SdkError::DispatchFailure(_) => Classified::Transient {
            code: "ConnectionError".to_owned(),
            detail: chain,
        },
        SdkError::ResponseError(_) => Classified::Transient {
            code: "ResponseError".to_owned(),
            detail: chain,
        },
        _ => Classified::Permanent(Failure::new(
            FailureKind::Config,
            "ConstructionFailure",
            chain,
        )),
    }
}

fn is_certificate_error(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    )
}

/// `<Code>…</Code>` of an XML error body.
fn xml_error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    let code = text[start..end].trim();
    (!code.is_empty()
        && code.len() < 100
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
    .then(|| code.to_owned())
}

fn classify_credentials(error: &CredentialsError, chain: &str) -> Classified {
    let transient = || Classified::Transient {
        code: "CredentialsUnavailable".to_owned(),
        detail: chain.to_owned(),
    };
    match error {
        CredentialsError::CredentialsNotLoaded(_) => Classified::Permanent(Failure::new(
            FailureKind::Credentials,
            "CredentialsNotLoaded",
            "the AWS SDK's default chain found no credentials (no IRSA web identity token, no \
             EKS Pod Identity, no environment credentials)"
                .to_owned(),
        )),
        CredentialsError::ProviderTimedOut(_) => transient(),
        _ => {
            // A connection problem or an overloaded STS is worth retrying; a refusal is not.
            let connection = error_sources(error).any(|e| {
                e.downcast_ref::<ConnectorError>()
                    .is_some_and(|c| c.is_io() || c.is_timeout())
                    || e.downcast_ref::<std::io::Error>().is_some()
            });
            let overloaded = TRANSIENT_CODES.iter().any(|code| chain.contains(code))
                || chain.contains("dispatch failure")
                || chain.contains("timed out")
                || chain.contains("timeout");
            if connection || overloaded {
                transient()
            } else {
                Classified::Permanent(Failure::new(
                    FailureKind::Credentials,
                    credentials_code(chain),
                    chain.to_owned(),
                ))
            }
        }
    }
}

/// The STS or Pod Identity error code in a credentials error, when it names one.
fn credentials_code(chain: &str) -> String {
    for code in [
        "AccessDenied",
        "InvalidIdentityToken",
        "ExpiredTokenException",
        "IDPCommunicationError",
        "IDPRejectedClaim",
        "InvalidClientTokenId",
    ] {
        if chain.contains(code) {
            return code.to_owned();
        }
    }
    "CredentialsError".to_owned()
}

fn error_sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    error_sources(error).find_map(|e| e.downcast_ref::<T>())
}

/// "outer: inner: innermost", without repeating messages that already contain their cause.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in error_sources(error) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let mut joined = parts.join(": ");
    if joined.len() > 1500 {
        let mut end = 1500;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        joined.truncate(end);
        joined.push_str("...");
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_error_codes_are_read() {
        let body = b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>";
        assert_eq!(xml_error_code(body).as_deref(), Some("AccessDenied"));
        assert_eq!(xml_error_code(b"{\"__type\":\"x\"}"), None);
        assert_eq!(xml_error_code(b"<Code><script></Code>"), None);
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

    #[test]
    fn messages_name_the_secret_code_and_fix() {
        let failure = Failure::new(
            FailureKind::AccessDenied,
            "AccessDeniedException",
            "HTTP 400: no".into(),
        );
        let message =
            failure.message("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf");
        assert!(message.contains("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"));
        assert!(message.contains("AccessDeniedException"));
        assert!(message.contains("secretsmanager:GetSecretValue"));
    }
}
