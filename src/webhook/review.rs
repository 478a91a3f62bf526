//! The AdmissionReview wire format, for every endpoint: the envelope in (kube-core's request
//! types, read without serde `flatten`; the pods endpoint reads its own borrowed subset), and
//! the response out in the API's format, written by [`respond`] from the request's uid and a
//! [`Verdict`] without building a tree first.

use base64::Engine as _;
use kube_core::admission::{AdmissionRequest, Operation};
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
    /// Allowed unchanged, with warnings for the user ([`Outcome::Skipped`]).
    Allow(&'a [String]),
    /// Allowed with the JSON text of a JSON Patch, and warnings for the user
    /// ([`Outcome::Mutated`]).
    Patch(Vec<u8>, &'a [String]),
    /// Denied with this message, shown to the user by `kubectl` ([`Outcome::Denied`]).
    Deny(String),
}

impl<'a> Verdict<'a> {
    /// Allowed with `patch` (a JSON Patch), and `warnings` for the user.
    pub fn patch(patch: &impl Serialize, warnings: &'a [String]) -> Self {
        Self::serialized(serde_json::to_vec(patch), warnings)
    }

    /// Allowed with a pod's JSON Patch, serialized into one buffer of its exact length.
    pub fn json_patch(patch: &crate::mutate::JsonPatch, warnings: &'a [String]) -> Self {
        let mut json = Vec::with_capacity(patch.json_len());
        Self::serialized(
            serde_json::to_writer(&mut json, patch).map(|()| json),
            warnings,
        )
    }

    fn serialized(json: serde_json::Result<Vec<u8>>, warnings: &'a [String]) -> Self {
        match json {
            Ok(json) => Verdict::Patch(json, warnings),
            // Operations with string pointers and JSON values always serialize; were one not
            // to, nothing is admitted that the webhook meant to change.
            Err(error) => Verdict::Deny(format!(
                "secret-inject: cannot serialize the JSON Patch: {error}"
            )),
        }
    }
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

/// The response to the request with `uid`: every endpoint's one writer of a review's answer.
pub fn respond(uid: &str, verdict: Verdict<'_>, mut summary: ReviewSummary) -> Reviewed {
    let (outcome, response) = match &verdict {
        Verdict::Allow(warnings) => (
            Outcome::Skipped,
            WireResponse {
                uid,
                allowed: true,
                status: None,
                warnings,
                patch: None,
                patch_type: None,
            },
        ),
        Verdict::Patch(json, warnings) => (
            Outcome::Mutated,
            WireResponse {
                uid,
                allowed: true,
                status: None,
                warnings,
                patch: Some(base64::engine::general_purpose::STANDARD.encode(json)),
                patch_type: Some("JSONPatch"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ReviewSummary {
        ReviewSummary::new("u-1", Some("ns"), "", Some("web-"), "CREATE")
    }

    fn wire(reviewed: &Reviewed) -> &str {
        std::str::from_utf8(&reviewed.body).unwrap()
    }

    #[test]
    fn every_verdict_is_written_byte_for_byte_in_the_api_format() {
        let allowed = respond("u-1", Verdict::Allow(&[]), summary());
        assert_eq!((allowed.outcome, allowed.status), (Outcome::Skipped, 200));
        assert_eq!(
            wire(&allowed),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true}}"#
        );
        // Allowed unchanged, with warnings (issue 19 item 5).
        let warnings = ["typo".to_owned()];
        let warned = respond("u-1", Verdict::Allow(&warnings), summary());
        assert_eq!((warned.outcome, warned.status), (Outcome::Skipped, 200));
        assert_eq!(
            wire(&warned),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"warnings":["typo"]}}"#
        );

        // The patch is the base64 of its JSON text, a string (not an array of numbers, kube-rs
        // #1781), with its type; warnings go with it.
        let operations = serde_json::json!([{"op": "add", "path": "/a", "value": 1}]);
        let warnings = ["careful".to_owned()];
        let patched = respond("u-1", Verdict::patch(&operations, &warnings), summary());
        assert_eq!((patched.outcome, patched.status), (Outcome::Mutated, 200));
        assert_eq!(
            wire(&patched),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"warnings":["careful"],"patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL2EiLCJ2YWx1ZSI6MX1d","patchType":"JSONPatch"}}"#
        );
        assert_eq!(patched.summary.name, "web-*");

        let denied = respond("u-1", Verdict::Deny("bad \"x\"".to_owned()), summary());
        assert_eq!((denied.outcome, denied.status), (Outcome::Denied, 200));
        assert_eq!(
            wire(&denied),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":false,"status":{"status":"Failure","message":"bad \"x\"","reason":"BadRequest","code":400}}}"#
        );
        assert_eq!(denied.summary.reason.as_deref(), Some("bad \"x\""));
    }

    #[test]
    fn an_unusable_body_is_a_plain_400() {
        let reviewed = invalid("request is missing".to_owned(), Default::default());
        assert_eq!((reviewed.outcome, reviewed.status), (Outcome::Invalid, 400));
        assert_eq!(
            wire(&reviewed),
            "invalid AdmissionReview: request is missing\n"
        );
    }
}
