//! The AdmissionReview wire format, for every endpoint: the envelope in (kube-core's request
//! types, read without serde `flatten`), the response out in the API's format.
//!
//! The response starts from the request (`AdmissionResponse::from(&request)`, which keeps the
//! uid), but its patch is serialized here: the API requires `response.patch` to be a base64
//! string, while kube-core serializes its `Vec<u8>` as an array of numbers (kube-rs issue #1781).

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
        if self.kind != "AdmissionReview" {
            return Err(format!(
                "kind is {:?}, expected AdmissionReview ({API_VERSION})",
                self.kind
            ));
        }
        if self.api_version != API_VERSION {
            return Err(format!(
                "apiVersion {:?} is not supported; configure the webhook with \
                 admissionReviewVersions: [\"v1\"]",
                self.api_version
            ));
        }
        self.request.ok_or_else(|| "request is missing".to_owned())
    }
}

pub fn summarize<T: kube_core::Resource>(request: &AdmissionRequest<T>) -> ReviewSummary {
    let name = if request.name.is_empty() {
        request
            .object
            .as_ref()
            .and_then(|o| o.meta().generate_name.as_deref())
            .map(|g| format!("{g}*"))
            .unwrap_or_default()
    } else {
        request.name.clone()
    };
    ReviewSummary {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name,
        operation: match request.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        },
        reason: None,
    }
}

/// Deny the request with `message`, shown to the user by `kubectl`.
pub fn deny(response: AdmissionResponse, message: String, mut summary: ReviewSummary) -> Reviewed {
    summary.reason = Some(message.clone());
    let mut response = response.deny(message);
    response.result.status = Some(kube_core::response::StatusSummary::Failure);
    response.result.code = 400;
    response.result.reason = "BadRequest".to_owned();
    answer(Outcome::Denied, response, None, summary)
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

/// The AdmissionReview on the wire.
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
    /// uid, allowed, status, warnings from kube-core's response (its `patch` is always `None`).
    #[serde(flatten)]
    base: &'a AdmissionResponse,
    /// base64 of the JSON Patch, as the API requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
}

pub fn answer(
    outcome: Outcome,
    response: AdmissionResponse,
    patch: Option<&Patch>,
    summary: ReviewSummary,
) -> Reviewed {
    debug_assert!(response.patch.is_none());
    let patch = patch.map(|p| {
        // A Patch of operations with string pointers and JSON values always serializes.
        let json = serde_json::to_vec(p).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    let wire = WireReview {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: WireResponse {
            base: &response,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
        },
    };
    match serde_json::to_vec(&wire) {
        Ok(body) => Reviewed {
            outcome,
            status: 200,
            body,
            summary,
        },
        Err(error) => invalid(
            format!("could not serialize the response: {error}"),
            summary,
        ),
    }
}
