//! The AdmissionReview wire format, for every endpoint: the envelope in (kube-core's request
//! types, read without serde `flatten`; the pods endpoint reads its own borrowed subset), and
//! the response out in the API's format, written by [`respond`] from the request's uid and a
//! [`Verdict`] without building a tree first.

use base64::Engine as _;
use json_patch::Patch;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::{Deserialize, Serialize};

/// The API version of AdmissionReview this webhook speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// What the webhook did with a review, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed with a patch.
    Mutated,
    /// Allowed unchanged.
    Skipped,
    /// Denied (bad annotations or a conflict); the message tells the user how to fix it.
    Denied,
    /// The body was not a usable AdmissionReview: HTTP 400.
    Invalid,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [
        Outcome::Mutated,
        Outcome::Skipped,
        Outcome::Denied,
        Outcome::Invalid,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Mutated => "mutated",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// Identifying fields of a review, for the log line. Never the object itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewSummary {
    /// `request.uid`.
    pub uid: String,
    /// `request.namespace`.
    pub namespace: String,
    /// `request.name`, or the object's `generateName` followed by `*` when it has no name yet.
    pub name: String,
    /// `request.operation`.
    pub operation: &'static str,
    /// Why the request was denied or invalid.
    pub reason: Option<String>,
}

/// The answer to one HTTP request carrying an AdmissionReview.
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// What happened.
    pub outcome: Outcome,
    /// HTTP status: 200, or 400 for [`Outcome::Invalid`].
    pub status: u16,
    /// The response body: an AdmissionReview (JSON), or a plain-text reason for 400.
    pub body: Vec<u8>,
    /// For the log line.
    pub summary: ReviewSummary,
}

impl<T: kube_core::Resource + serde::de::DeserializeOwned> Envelope<T> {
    /// The request of a body that must be an AdmissionReview of `T`, or why it is not.
    pub fn parse(body: &[u8]) -> Result<AdmissionRequest<T>, String> {
        serde_json::from_slice::<Envelope<T>>(body)
            .map_err(|e| {
                format!("body is not an AdmissionReview {API_VERSION} of the expected kind: {e}")
            })?
            .into_request()
    }
}

impl<T: kube_core::Resource> Envelope<T> {
    /// The request, once the envelope is an AdmissionReview of the version we speak.
    pub fn into_request(self) -> Result<AdmissionRequest<T>, String> {
        check_envelope(&self.api_version, &self.kind)?;
        self.request.ok_or_else(|| "request is missing".to_owned())
    }
}

/// Whether `apiVersion` and `kind` are those of the AdmissionReview we speak, or why not.
pub fn check_envelope(api_version: &str, kind: &str) -> Result<(), String> {
    if kind != "AdmissionReview" {
        return Err(format!(
            "kind is {kind:?}, expected AdmissionReview ({API_VERSION})"
        ));
    }
    if api_version != API_VERSION {
        return Err(format!(
            "apiVersion {api_version:?} is not supported; configure the webhook with \
             admissionReviewVersions: [\"v1\"]"
        ));
    }
    Ok(())
}

/// The log line's fields of a kube-core request.
pub fn summarize<T: kube_core::Resource>(request: &AdmissionRequest<T>) -> ReviewSummary {
    ReviewSummary::new(
        &request.uid,
        request.namespace.as_deref(),
        &request.name,
        request
            .object
            .as_ref()
            .and_then(|o| o.meta().generate_name.as_deref()),
        operation_name(&request.operation),
    )
}

/// `request.operation` as the API spells it.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

impl ReviewSummary {
    /// The summary of a request: the object's `generateName` followed by `*` stands in for a
    /// name it does not have yet.
    pub fn new(
        uid: &str,
        namespace: Option<&str>,
        name: &str,
        generate_name: Option<&str>,
        operation: &'static str,
    ) -> Self {
        let name = match (name, generate_name) {
            ("", Some(generate_name)) => format!("{generate_name}*"),
            (name, _) => name.to_owned(),
        };
        ReviewSummary {
            uid: uid.to_owned(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name,
            operation,
            reason: None,
        }
    }
}

/// Deny the request with `message`, shown to the user by `kubectl`.
pub fn deny(response: AdmissionResponse, message: String, summary: ReviewSummary) -> Reviewed {
    respond(&response.uid, Verdict::Deny(message), summary)
}

/// An unusable body: HTTP 400 with the reason.
pub fn invalid(reason: String, mut summary: ReviewSummary) -> Reviewed {
    let body = format!("invalid AdmissionReview: {reason}\n").into_bytes();
    summary.reason = Some(reason);
    Reviewed {
        outcome: Outcome::Invalid,
        status: 400,
        body,
        summary,
    }
}

/// An AdmissionReview as it arrives. kube-core's `AdmissionReview` flattens its `TypeMeta`,
/// which makes serde buffer the whole document before parsing it; reading `apiVersion` and
/// `kind` as plain fields parses the request once. The request itself is kube-core's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T: kube_core::Resource> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<AdmissionRequest<T>>,
}

/// What the webhook answers to one request.
#[derive(Debug, Clone)]
pub enum Verdict<'a> {
    /// Allowed, with the JSON text of a JSON Patch ([`Outcome::Mutated`]) or without
    /// ([`Outcome::Skipped`]), and warnings for the user.
    Allow(Option<Vec<u8>>, &'a [String]),
    /// Denied with this message, shown to the user by `kubectl` ([`Outcome::Denied`]).
    Deny(String),
}

/// The AdmissionReview on the wire, written straight from the verdict: `response.patch` is the
/// base64 of the JSON Patch, as the API requires (kube-core would write its `Vec<u8>` as an
/// array of numbers, kube-rs issue #1781).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WireStatus<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
}

/// The `metav1.Status` of a denial.
#[derive(Serialize)]
struct WireStatus<'a> {
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    code: u16,
}

/// The response to the request with `uid`.
pub fn respond(uid: &str, verdict: Verdict<'_>, mut summary: ReviewSummary) -> Reviewed {
    let (outcome, response) = match &verdict {
        Verdict::Allow(patch, warnings) => (
            if patch.is_some() {
                Outcome::Mutated
            } else {
                Outcome::Skipped
            },
            WireResponse {
                uid,
                allowed: true,
                status: None,
                warnings,
                patch: patch
                    .as_ref()
                    .map(|json| base64::engine::general_purpose::STANDARD.encode(json)),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
            },
        ),
        Verdict::Deny(message) => (
            Outcome::Denied,
            WireResponse {
                uid,
                allowed: false,
                status: Some(WireStatus {
                    status: "Failure",
                    message,
                    reason: "BadRequest",
                    code: 400,
                }),
                warnings: &[],
                patch: None,
                patch_type: None,
            },
        ),
    };
    let wire = WireReview {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response,
    };
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, &wire) {
        Ok(()) => {
            if let Verdict::Deny(message) = verdict {
                summary.reason = Some(message);
            }
            Reviewed {
                outcome,
                status: 200,
                body,
                summary,
            }
        }
        Err(error) => invalid(
            format!("could not serialize the response: {error}"),
            summary,
        ),
    }
}

/// Allow the request answered by kube-core's `response` (its uid and warnings), with `patch`.
pub fn answer(
    outcome: Outcome,
    response: AdmissionResponse,
    patch: Option<&Patch>,
    summary: ReviewSummary,
) -> Reviewed {
    debug_assert!(response.patch.is_none());
    debug_assert_eq!(outcome == Outcome::Mutated, patch.is_some());
    let warnings = response.warnings.as_deref().unwrap_or_default();
    // A Patch of operations with string pointers and JSON values always serializes.
    let patch = patch.map(|p| serde_json::to_vec(p).unwrap_or_default());
    respond(&response.uid, Verdict::Allow(patch, warnings), summary)
}
