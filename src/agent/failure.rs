//! Why the agent failed: the kind (which decides the exit code), the AWS error code, and the
//! advice, from one table per kind; and the classification of any AWS SDK error into "retry" or
//! "fail now", generic over the SDK's error metadata so every operation shares it.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::Response as HttpResponse;

use crate::errors::{error_chain, error_sources};

/// Exit codes of the agent (also in the README).
pub mod exit {
    /// The secret was written.
    pub const OK: u8 = 0;
    /// Unexpected internal error.
    pub const INTERNAL: u8 = 1;
    /// Bad configuration: flags or environment (e.g. SECRET_ARN is not an ARN).
    pub const CONFIG: u8 = 2;
    /// STS or EKS Pod Identity refused the pod's identity, or the credentials are invalid.
    pub const CREDENTIALS: u8 = 3;
    /// Secrets Manager denied access (IAM policy).
    pub const ACCESS_DENIED: u8 = 4;
    /// The secret (or the requested version) does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// The secret exists but cannot be used: KMS decryption failure, invalid request (e.g.
    /// scheduled for deletion), no value, larger than 65,536 bytes.
    pub const UNUSABLE: u8 = 6;
    /// AWS stayed unreachable, throttled or failing until the deadline.
    pub const UNAVAILABLE: u8 = 7;
    /// The file could not be written (not in memory, I/O error, path refused).
    pub const WRITE: u8 = 8;
    /// The pod has no usable AWS identity: none at all (no IRSA, no Pod Identity, no keys), or
    /// one that is misconfigured (a token file that is missing, a role that is no ARN).
    pub const NO_IDENTITY: u8 = 9;
    /// Stopped by SIGTERM or SIGINT before the secret was written.
    pub const INTERRUPTED: u8 = 143;
}

/// What kind of failure: decides the exit code and the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Flags or environment are wrong.
    Config,
    /// The pod has no AWS identity.
    NoIdentity,
    /// STS or Pod Identity refused the identity, or the credentials are invalid.
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

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 10] = [
        FailureKind::Config,
        FailureKind::NoIdentity,
        FailureKind::Credentials,
        FailureKind::AccessDenied,
        FailureKind::NotFound,
        FailureKind::Unusable,
        FailureKind::Unavailable,
        FailureKind::Write,
        FailureKind::Interrupted,
        FailureKind::Internal,
    ];

    /// The kind as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Config => "config",
            FailureKind::NoIdentity => "no_identity",
            FailureKind::Credentials => "credentials",
            FailureKind::AccessDenied => "access_denied",
            FailureKind::NotFound => "not_found",
            FailureKind::Unusable => "unusable",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Write => "write",
            FailureKind::Interrupted => "interrupted",
            FailureKind::Internal => "internal",
        }
    }

    /// The exit code for this kind of failure.
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Config => exit::CONFIG,
            FailureKind::NoIdentity => exit::NO_IDENTITY,
            FailureKind::Credentials => exit::CREDENTIALS,
            FailureKind::AccessDenied => exit::ACCESS_DENIED,
            FailureKind::NotFound => exit::NOT_FOUND,
            FailureKind::Unusable => exit::UNUSABLE,
            FailureKind::Unavailable => exit::UNAVAILABLE,
            FailureKind::Write => exit::WRITE,
            FailureKind::Interrupted => exit::INTERRUPTED,
            FailureKind::Internal => exit::INTERNAL,
        }
    }
}

/// What failed and how to fix it, per kind, optionally narrowed to one error code. The first
/// row that matches wins. `{secret}` and `{role}` are filled in.
const HELP: &[(FailureKind, Option<&str>, &str, &str)] = &[
    (
        FailureKind::Config,
        Some("TlsCertificateRejected"),
        "the endpoint's TLS certificate is not trusted",
        "check AWS_ENDPOINT_URL* and any HTTPS proxy; a private CA must be in the image's CA \
         bundle (SSL_CERT_FILE)",
    ),
    (
        FailureKind::Config,
        None,
        "invalid configuration",
        "fix the pod's secrets.k8s.aws/ annotations or the agent's flags",
    ),
    (
        FailureKind::NoIdentity,
        Some("WebIdentityTokenUnreadable"),
        "the pod's IRSA identity is misconfigured",
        "the ServiceAccount token named above is projected into the pod by the IRSA \
         webhook (amazon-eks-pod-identity-webhook) when the pod's ServiceAccount is annotated \
         with eks.amazonaws.com/role-arn: check that annotation and that the pod has the \
         webhook's aws-iam-token volume mounted where AWS_WEB_IDENTITY_TOKEN_FILE points (kubectl \
         get pod -o yaml), or unset AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN if you set \
         them yourself; then recreate the pod",
    ),
    (
        FailureKind::NoIdentity,
        Some("InvalidRoleArn"),
        "the pod's IRSA identity is misconfigured",
        "set the ServiceAccount's eks.amazonaws.com/role-arn annotation (or AWS_ROLE_ARN) to the \
         role's full ARN, arn:aws:iam::ACCOUNT:role/NAME (aws iam get-role --role-name NAME \
         --query Role.Arn); then recreate the pod",
    ),
    (
        FailureKind::NoIdentity,
        Some("PodIdentityTokenUnreadable"),
        "the pod's EKS Pod Identity is misconfigured",
        "the token named above is projected by EKS for a ServiceAccount with a Pod Identity \
         association: check the association (aws eks list-pod-identity-associations \
         --cluster-name CLUSTER --namespace NAMESPACE), that the EKS Pod Identity Agent add-on \
         runs on the node, and that the pod mounts the eks-pod-identity-token volume; then \
         recreate the pod",
    ),
    (
        FailureKind::NoIdentity,
        Some("IdentityMisconfigured"),
        "the pod's AWS identity is misconfigured",
        "IRSA: check the ServiceAccount's eks.amazonaws.com/role-arn annotation and the token \
         the IRSA webhook projects (AWS_WEB_IDENTITY_TOKEN_FILE); EKS Pod Identity: \
         check the association and the EKS Pod Identity Agent (AWS_CONTAINER_CREDENTIALS_FULL_URI, \
         AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE); then recreate the pod",
    ),
    (
        FailureKind::NoIdentity,
        None,
        "the pod has no AWS identity",
        "give the pod's ServiceAccount an IAM role: annotate it with eks.amazonaws.com/role-arn \
         (IRSA), or create an EKS Pod Identity association for it; then recreate the pod. The \
         node's instance role is not used unless the agent runs with --allow-instance-metadata",
    ),
    (
        FailureKind::Credentials,
        None,
        "the pod's AWS identity was refused",
        "IRSA: the trust policy of {role} must allow sts:AssumeRoleWithWebIdentity for \
         system:serviceaccount:<namespace>:<service-account> with audience sts.amazonaws.com; \
         EKS Pod Identity: the association must name this namespace and ServiceAccount",
    ),
    (
        FailureKind::AccessDenied,
        None,
        "access denied",
        "allow secretsmanager:GetSecretValue (ssm:GetParameters for a parameter) on {secret} in \
         the IAM policy of {role}, and kms:Decrypt on its KMS key if it uses a customer-managed \
         key (`secret-inject iam-policy -f MANIFEST` prints the policy)",
    ),
    (
        FailureKind::NotFound,
        None,
        "secret or version not found",
        "check the ARN (aws secretsmanager describe-secret --secret-id NAME --query ARN, or aws \
         ssm get-parameter --name NAME --query Parameter.ARN), its region and account, and that \
         the requested version stage exists",
    ),
    (
        FailureKind::Unusable,
        Some("DecryptionFailure"),
        "the secret cannot be decrypted",
        "allow kms:Decrypt on the secret's KMS key for {role}",
    ),
    (
        FailureKind::Unusable,
        Some("InvalidRequestException"),
        "the secret cannot be used",
        "the secret may be scheduled for deletion; restore it (aws secretsmanager \
         restore-secret) or use another",
    ),
    (
        FailureKind::Unusable,
        Some("TooLarge"),
        "the secret is too large",
        "Secrets Manager values are at most 65536 bytes",
    ),
    (
        FailureKind::Unusable,
        Some("KeyNotFound"),
        "the key selects nothing",
        "list the value's top-level keys (this message never names them) with `aws \
         secretsmanager get-secret-value --secret-id ARN --query SecretString --output text | jq \
         keys` (a parameter: `aws ssm get-parameter --with-decryption --name ARN --query \
         Parameter.Value --output text | jq keys`), and fix the annotation named above",
    ),
    (
        FailureKind::Unusable,
        None,
        "the secret cannot be used",
        "check the secret's value against its secret-key, secret-format and env annotations \
         named above (this message names none of the value's keys: `jq keys` lists them in the \
         same sorted order), and its state in Secrets Manager",
    ),
    (
        FailureKind::Unavailable,
        None,
        "AWS stayed unavailable until the deadline",
        "check the pod's network path to Secrets Manager and STS (VPC endpoints, NetworkPolicy, \
         proxy, DNS), or raise SECRET_INJECT_DEADLINE",
    ),
    (
        FailureKind::Write,
        Some("NotInMemory"),
        "the output directory is not in memory",
        "mount an emptyDir with medium: Memory there (the webhook does), or pass --allow-disk \
         for local testing; secrets must never touch the node's disk",
    ),
    (
        FailureKind::Write,
        Some("VolumeFull"),
        "the secret volume is full",
        "give the pod's volume the size named above: set the pod's annotation \
         secrets.k8s.aws/volume-size-limit (or the webhook's --volume-size-limit, whose default \
         auto sizes each pod's volume from its secrets), then recreate the pod; the files in \
         place are kept",
    ),
    (
        FailureKind::Write,
        None,
        "cannot write the secret",
        "the secret volume must be an emptyDir with medium: Memory mounted at the mount path; \
         check secrets.k8s.aws/mount-path and secrets.k8s.aws/secret-filename",
    ),
    (
        FailureKind::Interrupted,
        None,
        "interrupted",
        "the pod is being stopped; nothing to fix",
    ),
    (
        FailureKind::Internal,
        None,
        "internal error",
        "please report this with the log",
    ),
];

/// A failed run: kind, an error code (AWS's where there is one) and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// AWS error code, or a short name of our own.
    pub code: String,
    /// What happened (never a secret value).
    pub detail: String,
    /// The secret it concerns, as messages name it, when the plan has several.
    pub secret: Option<String>,
}

impl Failure {
    /// A new failure.
    pub fn new(kind: FailureKind, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.into(),
            detail: detail.into(),
            secret: None,
        }
    }

    /// The same failure, about `secret`.
    pub fn about(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// The one-paragraph message for the log and the termination log: what failed, the AWS
    /// error code, the role in use where known, and the fix, each said once.
    pub fn message(&self, secret: &str, role: Option<&str>) -> String {
        let secret = self.secret.as_deref().unwrap_or(secret);
        let (what, fix) = HELP
            .iter()
            .find(|(kind, code, _, _)| {
                *kind == self.kind && code.is_none_or(|code| code == self.code)
            })
            .map(|(_, _, what, fix)| (*what, *fix))
            .unwrap_or(("failed", "please report this with the log"));
        let fix = fix
            .replace("{secret}", secret)
            .replace("{role}", role.unwrap_or("the pod's IAM role"));
        let as_role = role.map(|r| format!(" as role {r}")).unwrap_or_default();
        format!(
            "secret-inject: cannot provide secret {secret}{as_role}: {what} ({}): {}. Fix: {fix}.",
            self.code,
            self.detail.trim_end_matches('.')
        )
    }
}

/// An AWS error, sorted.
#[derive(Debug)]
pub enum Classified {
    /// Worth retrying: throttling, 5xx, timeouts, connection errors, an identity endpoint that
    /// does not answer yet.
    Transient {
        /// The AWS error code or a short name of ours.
        code: String,
        /// What happened (logged at debug level on retries, in the final message otherwise).
        detail: String,
    },
    /// Retrying cannot help.
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

/// Sort an AWS error code (of a call, or of one secret in a BatchGetSecretValue answer), with
/// the HTTP status where there is one.
pub fn classify_code(code: String, status: Option<u16>, detail: String) -> Classified {
    let status = status.unwrap_or(400);
    if TRANSIENT_CODES.contains(&code.as_str()) || status >= 500 || status == 429 {
        return Classified::Transient { code, detail };
    }
    let kind = match code.as_str() {
        "AccessDeniedException" | "AccessDenied" => FailureKind::AccessDenied,
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "SignatureDoesNotMatch" => FailureKind::Credentials,
        "ResourceNotFoundException" | "ParameterNotFound" | "ParameterVersionNotFound" => {
            FailureKind::NotFound
        }
        "DecryptionFailure"
        | "InvalidRequestException"
        | "InvalidParameterException"
        | "InvalidKeyId" => FailureKind::Unusable,
        _ if status == 403 => FailureKind::AccessDenied,
        _ if status == 404 => FailureKind::NotFound,
        _ => FailureKind::Internal,
    };
    Classified::Permanent(Failure::new(kind, code, detail))
}

/// Sort an error of any Secrets Manager (or other SDK) operation.
pub fn classify<E>(error: &SdkError<E, HttpResponse>) -> Classified
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
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
                .unwrap_or_else(|| format!("HTTP{status}"));
            let detail = match error.message() {
                Some(message) if !message.is_empty() => format!("HTTP {status}: {message}"),
                _ => format!("HTTP {status}"),
            };
            classify_code(code, Some(status), detail)
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
        // An answer the protocol could not read: a 4xx from something in between (moto's IAM
        // enforcement, a proxy) answering in XML to a JSON protocol. Its status and XML code
        // decide, as for a service error; anything else (a cut body, a 5xx) is retried.
        SdkError::ResponseError(context)
            if context.raw().status().is_client_error()
                && context.raw().status().as_u16() != 429 =>
        {
            let status = context.raw().status().as_u16();
            let code = xml_error_code(context.raw().body().bytes().unwrap_or_default())
                .unwrap_or_else(|| format!("HTTP{status}"));
            classify_code(code, Some(status), format!("HTTP {status}: {chain}"))
        }
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
            FailureKind::NoIdentity,
            "NoCredentials",
            "no provider of the credentials chain (environment keys, profile, IRSA web \
             identity, EKS Pod Identity) found credentials",
        )),
        CredentialsError::ProviderTimedOut(_) => transient(),
        // The provider's settings are wrong (a Pod Identity URI or token that cannot be used):
        // no retry fixes that.
        CredentialsError::InvalidConfiguration(_) => Classified::Permanent(Failure::new(
            FailureKind::NoIdentity,
            "IdentityMisconfigured",
            chain,
        )),
        // A token file the provider could not read: its I/O error is the provider's own
        // cause, not a connection's (those arrive inside a dispatch failure).
        CredentialsError::ProviderError(_)
            if error
                .source()
                .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some()) =>
        {
            Classified::Permanent(Failure::new(
                FailureKind::NoIdentity,
                "IdentityMisconfigured",
                chain,
            ))
        }
        _ => {
            // A connection problem or an overloaded STS is worth retrying (an EKS Pod Identity
            // agent that is not answering yet on a new node); a refusal is not.
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
                    chain,
                ))
            }
        }
    }
}

/// The STS or Pod Identity error code in a credentials error, when it names one.
fn credentials_code(chain: &str) -> &'static str {
    [
        "AccessDenied",
        "InvalidIdentityToken",
        "ExpiredTokenException",
        "IDPCommunicationError",
        "IDPRejectedClaim",
        "InvalidClientTokenId",
    ]
    .into_iter()
    .find(|code| chain.contains(code))
    .unwrap_or("CredentialsError")
}

fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    error_sources(error).find_map(|e| e.downcast_ref::<T>())
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
    fn messages_name_the_secret_code_role_and_fix_once() {
        let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let failure = Failure::new(
            FailureKind::AccessDenied,
            "AccessDeniedException",
            "HTTP 400: no",
        );
        let message = failure.message(secret, Some("arn:aws:iam::123456789012:role/app"));
        assert!(message.contains(secret));
        assert!(message.contains("AccessDeniedException"));
        assert!(message.contains("secretsmanager:GetSecretValue"));
        assert!(message.contains("as role arn:aws:iam::123456789012:role/app"));
        assert_eq!(message.matches("Fix:").count(), 1, "{message}");
        let message = failure.message(secret, None);
        assert!(
            message.contains("the IAM policy of the pod's IAM role"),
            "{message}"
        );
    }

    #[test]
    fn every_kind_has_help() {
        for kind in FailureKind::ALL {
            assert!(
                HELP.iter()
                    .any(|(k, code, _, _)| *k == kind && code.is_none()),
                "{kind:?} has no general row"
            );
        }
        // A specific row wins over the kind's general one.
        let message =
            Failure::new(FailureKind::Unusable, "TooLarge", "70000 bytes").message("s", None);
        assert!(message.contains("at most 65536 bytes"), "{message}");
    }
}
