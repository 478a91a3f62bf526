//! `POST /mutating-pods`: AdmissionReviews of Pods in, the [`mutate`] patch out. Parses,
//! calls the pure mutation, and answers; no I/O.

use kube_core::admission::Operation;
use serde::Deserialize;

use super::review::{
    API_VERSION, ReviewSummary, Reviewed, Verdict, check_envelope, invalid, operation_name, respond,
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

/// An AdmissionReview as it arrives, read borrowed: the request's identifying fields and its
/// object as `O` (the parts of a pod the mutation reads, or only the name of another object);
/// everything else (`oldObject`, `userInfo`, the object's other fields) is skipped unbuilt.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct PodReview<'a, O> {
    #[serde(default, borrow)]
    api_version: Text<'a>,
    #[serde(default, borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    request: Option<PodRequest<'a, O>>,
}

/// `request`, as admission.k8s.io/v1 defines it (the fields read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct PodRequest<'a, O> {
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
    #[serde(default)]
    object: Option<O>,
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

/// The object of a review that is not a pod the mutation can read: only its `generateName`,
/// for the log line.
#[derive(Deserialize)]
struct OtherObject<'a> {
    #[serde(default, borrow)]
    metadata: OtherMetadata<'a>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtherMetadata<'a> {
    #[serde(default, borrow)]
    generate_name: Option<Text<'a>>,
}

/// What the review reads of a request's object.
trait Object<'a> {
    /// `metadata.generateName`, for the log line.
    fn generate_name(&self) -> Option<&str>;
    /// The pod the mutation reads, if the object was read as one.
    fn pod(&self) -> Option<&Pod<'a>>;
}

impl<'a> Object<'a> for Pod<'a> {
    fn generate_name(&self) -> Option<&str> {
        self.metadata.generate_name.as_deref()
    }
    fn pod(&self) -> Option<&Pod<'a>> {
        Some(self)
    }
}

impl<'a> Object<'a> for OtherObject<'a> {
    fn generate_name(&self) -> Option<&str> {
        self.metadata.generate_name.as_deref()
    }
    fn pod(&self) -> Option<&Pod<'a>> {
        None
    }
}

/// Review a pod admission request body.
pub fn review_pod(body: &[u8], config: &MutationConfig) -> Reviewed {
    // Fast path: a pod review parses straight into what the mutation reads. When the object is
    // not such a pod, the review is read again without it, to tell another resource (allowed
    // unchanged) from a pod Kubernetes would not send (400).
    match serde_json::from_slice::<PodReview<Pod>>(body) {
        Ok(review) => review_request(&review, None, config),
        Err(pod_error) => match serde_json::from_slice::<PodReview<OtherObject>>(body) {
            Ok(review) => review_request(&review, Some(pod_error), config),
            Err(error) => invalid(
                format!("body is not an AdmissionReview {API_VERSION}: {error}"),
                Default::default(),
            ),
        },
    }
}

/// Answer a parsed review; `pod_error` says why its object could not be read as a pod.
fn review_request<'a, O: Object<'a>>(
    review: &PodReview<'a, O>,
    pod_error: Option<serde_json::Error>,
    config: &MutationConfig,
) -> Reviewed {
    if let Err(reason) = check_envelope(&review.api_version, &review.kind) {
        return invalid(reason, Default::default());
    }
    let Some(request) = &review.request else {
        return invalid("request is missing".to_owned(), Default::default());
    };
    let summary = ReviewSummary::new(
        &request.uid,
        request.namespace.as_deref(),
        request.name.as_deref().unwrap_or_default(),
        request.object.as_ref().and_then(O::generate_name),
        operation_name(&request.operation),
    );
    let uid = &*request.uid;
    // The `pods` resource itself (not a subresource such as `pods/exec`); anything else comes
    // from a misconfigured webhook rule and is allowed unchanged.
    let is_pod = request.resource.group.is_empty()
        && request.resource.version == "v1"
        && request.resource.resource == "pods"
        && request.sub_resource.is_none();
    if !is_pod {
        return respond(uid, Verdict::Allow(&[]), summary);
    }
    if let Some(error) = pod_error {
        // It is a pod, but not one Kubernetes would send.
        return invalid(
            format!("request.object is not a valid v1 Pod: {error}"),
            summary,
        );
    }
    if request.operation != Operation::Create {
        return respond(uid, Verdict::Allow(&[]), summary);
    }
    let Some(pod) = request.object.as_ref().and_then(O::pod) else {
        return invalid("request.object is missing for a CREATE".to_owned(), summary);
    };
    let Some(spec) = &pod.spec else {
        return invalid("request.object.spec is missing".to_owned(), summary);
    };
    match mutate(&pod.metadata, spec, config) {
        Ok(mutation) => match &mutation.patch {
            None => respond(uid, Verdict::Allow(&mutation.warnings), summary),
            Some(patch) => respond(uid, Verdict::json_patch(patch, &mutation.warnings), summary),
        },
        Err(error) => respond(uid, Verdict::Deny(error.to_string()), summary),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::webhook::review::Outcome;

    fn review(
        resource: &str,
        sub_resource: Option<&str>,
        operation: &str,
        object: Value,
    ) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "subResource": sub_resource, "namespace": "ns", "operation": operation,
            "userInfo": {}, "object": object}})
        .to_string()
        .into_bytes()
    }

    /// An object no pod parser reads: `spec.containers` is a number.
    fn unreadable() -> Value {
        json!({"metadata": {"generateName": "web-"}, "spec": {"containers": 7}})
    }

    #[test]
    fn another_resource_is_allowed_unchanged_whatever_its_object() {
        let config = MutationConfig::default();
        for body in [
            review("configmaps", None, "CREATE", unreadable()),
            review("pods", Some("exec"), "CONNECT", unreadable()),
            review(
                "pods",
                Some("ephemeralcontainers"),
                "UPDATE",
                json!({"spec": {}}),
            ),
        ] {
            let reviewed = review_pod(&body, &config);
            assert_eq!((reviewed.outcome, reviewed.status), (Outcome::Skipped, 200));
            assert_eq!(
                std::str::from_utf8(&reviewed.body).unwrap(),
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true}}"#
            );
        }
        let reviewed = review_pod(&review("configmaps", None, "CREATE", unreadable()), &config);
        assert_eq!(reviewed.summary.name, "web-*");
    }

    #[test]
    fn a_pod_with_a_misspelt_key_is_allowed_unchanged_with_a_warning() {
        let config = MutationConfig::default();
        let pod = json!({"metadata": {"annotations": {"secrets.k8s.aws/secret-arns": "x"}},
                         "spec": {"containers": [{"name": "app", "image": "app"}]}});
        let reviewed = review_pod(&review("pods", None, "CREATE", pod), &config);
        assert_eq!((reviewed.outcome, reviewed.status), (Outcome::Skipped, 200));
        assert_eq!(
            std::str::from_utf8(&reviewed.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"warnings":["secret-inject: annotation secrets.k8s.aws/secret-arns: is not a secret-inject annotation; did you mean secrets.k8s.aws/secret-arn?"]}}"#
        );
    }

    #[test]
    fn a_pod_kubernetes_would_not_send_is_a_400_for_any_operation() {
        let config = MutationConfig::default();
        for operation in ["CREATE", "UPDATE"] {
            let reviewed = review_pod(&review("pods", None, operation, unreadable()), &config);
            assert_eq!((reviewed.outcome, reviewed.status), (Outcome::Invalid, 400));
            let text = std::str::from_utf8(&reviewed.body).unwrap();
            assert!(
                text.contains("request.object is not a valid v1 Pod"),
                "{text}"
            );
            assert_eq!(reviewed.summary.uid, "u-1");
        }
    }

    #[test]
    fn a_pod_without_an_object_or_a_spec_is_a_400_only_when_created() {
        let config = MutationConfig::default();
        let missing = review_pod(&review("pods", None, "CREATE", Value::Null), &config);
        assert_eq!(missing.status, 400);
        let no_spec = review_pod(
            &review("pods", None, "CREATE", json!({"metadata": {}})),
            &config,
        );
        assert_eq!(no_spec.status, 400);
        let update = review_pod(&review("pods", None, "UPDATE", Value::Null), &config);
        assert_eq!(update.outcome, Outcome::Skipped);
    }
}
