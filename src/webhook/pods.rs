//! `POST /mutating-pods`: AdmissionReviews of Pods in, the [`mutate`] patch out. Parses,
//! calls the pure mutation, and answers; no I/O.

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::Deserialize;

use super::review::{
    API_VERSION, Envelope, Outcome, ReviewSummary, Reviewed, Verdict, answer, check_envelope,
    invalid, operation_name, respond, summarize,
};
use super::router::{Endpoint, EndpointFuture};
use crate::mutate::pod::{Pod, Text};
use crate::mutate::{MutationConfig, mutate};

/// Path of the pod-mutating webhook (seed contract).
pub const PATH: &str = "/mutating-pods";

/// The endpoint: every pod is mutated with one configuration.
#[derive(Debug, Clone)]
pub struct Pods {
    config: MutationConfig,
}

impl Pods {
    /// The endpoint with this mutation configuration.
    pub fn new(config: MutationConfig) -> Self {
        Self { config }
    }
}

impl Endpoint for Pods {
    fn name(&self) -> &'static str {
        "pods"
    }

    fn review(&self, body: hyper::body::Bytes) -> EndpointFuture<'_> {
        Box::pin(std::future::ready(review_pod(&body, &self.config)))
    }
}

/// An AdmissionReview of a pod as it arrives, read borrowed: the request's identifying fields
/// and the parts of the pod the mutation reads; everything else (`oldObject`, `userInfo`, the
/// pod's other fields) is skipped unbuilt.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodReview<'a> {
    #[serde(default, borrow)]
    api_version: Text<'a>,
    #[serde(default, borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    request: Option<PodRequest<'a>>,
}

/// `request`, as admission.k8s.io/v1 defines it (the fields read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodRequest<'a> {
    #[serde(borrow)]
    uid: Text<'a>,
    #[serde(borrow)]
    resource: GroupVersionResource<'a>,
    #[serde(default, borrow)]
    sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    namespace: Option<Text<'a>>,
    operation: Operation,
    #[serde(default, borrow)]
    object: Option<Pod<'a>>,
}

#[derive(Deserialize)]
struct GroupVersionResource<'a> {
    #[serde(default, borrow)]
    group: Text<'a>,
    #[serde(default, borrow)]
    version: Text<'a>,
    #[serde(default, borrow)]
    resource: Text<'a>,
}

/// Review a pod admission request body.
pub fn review_pod(body: &[u8], config: &MutationConfig) -> Reviewed {
    // Fast path: a pod review parses straight into what the mutation reads. Anything else
    // (another resource, a malformed body) takes the slow path, which tells which it is.
    let request = match serde_json::from_slice::<PodReview>(body) {
        Ok(review) => match check_envelope(&review.api_version, &review.kind) {
            Ok(()) => match review.request {
                Some(request) => request,
                None => return invalid("request is missing".to_owned(), Default::default()),
            },
            Err(reason) => return invalid(reason, Default::default()),
        },
        Err(pod_error) => return review_other(body, &pod_error),
    };

    let pod = request.object.as_ref();
    let summary = ReviewSummary::new(
        &request.uid,
        request.namespace.as_deref(),
        request.name.as_deref().unwrap_or_default(),
        pod.and_then(|p| p.metadata.generate_name.as_deref()),
        operation_name(&request.operation),
    );
    let is_pod = request.resource.group.is_empty()
        && request.resource.version == "v1"
        && request.resource.resource == "pods"
        && request.sub_resource.is_none();
    let uid = &*request.uid;
    if request.operation != Operation::Create || !is_pod {
        return respond(uid, Verdict::Allow(None, &[]), summary);
    }
    let Some(pod) = pod else {
        return invalid("request.object is missing for a CREATE".to_owned(), summary);
    };
    let Some(spec) = &pod.spec else {
        return invalid("request.object.spec is missing".to_owned(), summary);
    };
    match mutate(&pod.metadata, spec, config) {
        Ok(None) => respond(uid, Verdict::Allow(None, &[]), summary),
        Ok(Some(mutation)) => respond(
            uid,
            // Add operations with string pointers and serialized values always serialize.
            Verdict::Allow(
                Some(serde_json::to_vec(&mutation.patch).unwrap_or_default()),
                &mutation.warnings,
            ),
            summary,
        ),
        Err(error) => respond(uid, Verdict::Deny(error.to_string()), summary),
    }
}

/// The body did not parse as a review of pods: find out why.
fn review_other(body: &[u8], pod_error: &serde_json::Error) -> Reviewed {
    let request = match serde_json::from_slice::<Envelope<DynamicObject>>(body) {
        Ok(review) => match review.into_request() {
            Ok(request) => request,
            Err(reason) => return invalid(reason, Default::default()),
        },
        Err(error) => {
            return invalid(
                format!("body is not an AdmissionReview {API_VERSION}: {error}"),
                Default::default(),
            );
        }
    };
    let summary = summarize(&request);
    if is_pod_request(&request) {
        // It is a pod, but not one Kubernetes would send.
        return invalid(
            format!("request.object is not a valid v1 Pod: {pod_error}"),
            summary,
        );
    }
    // Another resource (a misconfigured webhook rule): allow it unchanged.
    answer(
        Outcome::Skipped,
        AdmissionResponse::from(&request),
        None,
        summary,
    )
}

/// A request about the `pods` resource itself (not a subresource such as `pods/exec`).
fn is_pod_request<T: kube_core::Resource>(request: &AdmissionRequest<T>) -> bool {
    let resource = &request.resource;
    resource.group.is_empty()
        && resource.version == "v1"
        && resource.resource == "pods"
        && request.sub_resource.is_none()
}
