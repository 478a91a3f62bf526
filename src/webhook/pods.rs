//! `POST /mutating-pods`: AdmissionReviews of Pods in, the [`mutate`] patch out. Parses,
//! calls the pure mutation, and answers; no I/O.

use k8s_openapi::api::core::v1::Pod;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use super::review::{API_VERSION, Envelope, Outcome, Reviewed, answer, deny, invalid, summarize};
use super::router::{Endpoint, EndpointFuture};
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

/// Review a pod admission request body.
pub fn review_pod(body: &[u8], config: &MutationConfig) -> Reviewed {
    // Fast path: a pod review parses straight into typed Pods. Anything else (another resource,
    // a malformed body) takes the slow path, which tells which it is.
    let request = match serde_json::from_slice::<Envelope<Pod>>(body) {
        Ok(review) => match review.into_request() {
            Ok(request) => request,
            Err(reason) => return invalid(reason, Default::default()),
        },
        Err(pod_error) => return review_other(body, &pod_error),
    };

    let summary = summarize(&request);
    let response = AdmissionResponse::from(&request);
    if request.operation != Operation::Create || !is_pod_request(&request) {
        return answer(Outcome::Skipped, response, None, summary);
    }
    let Some(pod) = &request.object else {
        return invalid("request.object is missing for a CREATE".to_owned(), summary);
    };
    let Some(spec) = &pod.spec else {
        return invalid("request.object.spec is missing".to_owned(), summary);
    };
    match mutate(&pod.metadata, spec, config) {
        Ok(None) => answer(Outcome::Skipped, response, None, summary),
        Ok(Some(mutation)) => {
            let mut response = response;
            if !mutation.warnings.is_empty() {
                response.warnings = Some(mutation.warnings);
            }
            answer(Outcome::Mutated, response, Some(&mutation.patch), summary)
        }
        Err(error) => deny(response, error.to_string(), summary),
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
