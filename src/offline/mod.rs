//! The offline injector: the webhook's mutation applied to manifests on disk.
//!
//! YAML or JSON in (many documents, `List`s), YAML out. [`pod_templates`] finds the Pods and
//! the pod templates of workload controllers; [`inject_documents`] injects each with [`mutate`]
//! — the function the webhook calls — and applies the resulting JSON Patch at the template's
//! place in the document. Other kinds pass through unchanged. Output is written by [`yaml`],
//! which quotes every string a YAML 1.1 reader (kubectl) could take for something else.
//! [`policy`] derives the least-privilege IAM policy from the same templates.

pub mod policy;
pub mod yaml;

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use crate::mutate::{MutationConfig, MutationError, mutate};
use crate::spec::allow;

/// Why a manifest could not be injected. Names the document and the object; the cause is the
/// error's `source()` (printed after it by `{:#}`), never repeated in its own message.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The input is not YAML or JSON.
    #[error("document {document}: not valid YAML or JSON")]
    Parse {
        /// 1-based document number.
        document: usize,
        /// The parser's error.
        #[source]
        source: yaml_serde::Error,
    },
    /// A pod template is not a valid pod spec.
    #[error("document {document} ({object}): {field} is not a valid {what}")]
    Template {
        /// 1-based document number.
        document: usize,
        /// `Kind/name`.
        object: String,
        /// JSON Pointer of the field.
        field: String,
        /// What it should be.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A label or annotation value is not a string.
    #[error(transparent)]
    NotAString(Box<NotAString>),
    /// The mutation refused the pod (the webhook would deny it).
    #[error("document {document} ({object})")]
    Mutation {
        /// 1-based document number.
        document: usize,
        /// `Kind/name`.
        object: String,
        /// The cause.
        #[source]
        source: MutationError,
    },
    /// The patch did not apply (a bug: the patch was computed from this very document).
    #[error("document {document} ({object}): internal error applying the patch: {message}")]
    Apply {
        /// 1-based document number.
        document: usize,
        /// `Kind/name`.
        object: String,
        /// The cause.
        message: String,
    },
}

/// A label or annotation value that is not a string: unquoted, YAML reads `3`, `true` or an
/// empty value as a number, a boolean or null, which the API server refuses too.
#[derive(Debug, thiserror::Error)]
#[error("document {document} ({object}): {field}: {what} {key} is {found}, not a string; {fix}")]
pub struct NotAString {
    /// 1-based document number.
    pub document: usize,
    /// `Kind/name`.
    pub object: String,
    /// JSON Pointer of the labels or annotations.
    pub field: String,
    /// `annotation` or `label`.
    pub what: &'static str,
    /// The key.
    pub key: String,
    /// What the value is instead (`the number 3`).
    pub found: String,
    /// How to write it (`quote it: KEY: "3"`).
    pub fix: String,
}

/// The result of injecting a set of documents.
#[derive(Debug)]
pub struct Injected {
    /// The documents as YAML, separated by `---`.
    pub yaml: String,
    /// How many pods or pod templates were changed.
    pub injected: usize,
    /// Warnings, each prefixed with the document.
    pub warnings: Vec<String>,
}

/// A Pod, or the pod template of a workload controller, found in a manifest.
#[derive(Debug, Clone)]
pub struct PodTemplate {
    /// 1-based number of the document it is in.
    pub document: usize,
    /// `Kind/name` of the object that holds it (the item's, inside a `List`).
    pub object: String,
    /// The object's `metadata.namespace`; `default` when it has none.
    pub namespace: String,
    /// Where the template lives in its document (the root for a Pod that is a document).
    pub pointer: PointerBuf,
    /// The template's (or the Pod's) metadata.
    pub metadata: ObjectMeta,
    /// The template's (or the Pod's) spec.
    pub spec: PodSpec,
}

impl PodTemplate {
    /// The ServiceAccount its pods run as: `serviceAccountName`, else the deprecated
    /// `serviceAccount`, else `default` (what the API server fills in).
    pub fn service_account(&self) -> &str {
        [&self.spec.service_account_name, &self.spec.service_account]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|name| !name.is_empty())
            .unwrap_or("default")
    }
}

/// The namespace of an object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The Pods and pod templates of a set of manifests, and what was passed over and why.
#[derive(Debug, Default)]
pub struct Templates {
    /// Every Pod and pod template, in document order.
    pub templates: Vec<PodTemplate>,
    /// Documents passed over that may have been meant to be injected (no apiVersion or kind, a
    /// kind whose pod template is nowhere secret-inject looks), and an input with no document.
    pub skipped: Vec<String>,
}

/// Every Pod and pod template in `input`, in document order. The first document that does not
/// parse, or the first template that is not a valid pod, fails the whole call.
pub fn pod_templates(input: &str) -> Result<Templates, InjectError> {
    let mut found = Templates::default();
    let mut any = false;
    for document in documents(input) {
        let (number, value) = document?;
        any = true;
        walk(
            number,
            &value,
            &PointerBuf::new(),
            &mut found.skipped,
            &mut |template| {
                found.templates.push(template);
                Ok(())
            },
        )?;
    }
    if !any {
        found.skipped.push(NO_DOCUMENTS.to_owned());
    }
    Ok(found)
}

/// What the chart's namespace allow-list policy (`allowList.mode`, [`allow`]) would say of
/// `templates`: for each Pod and pod template of a namespace whose `Namespace` object is among
/// the documents of `input`, the denial the API server would give its pods, and each pattern of
/// those namespaces' annotations that can never match. Namespaces not in the input are not
/// checked (their annotations are the cluster's, unknown offline).
pub fn allow_list_warnings(
    input: &str,
    templates: &[PodTemplate],
    mode: allow::Mode,
) -> Result<Vec<String>, InjectError> {
    let mut warnings = Vec::new();
    let mut rules = BTreeMap::new();
    for document in documents(input) {
        let (number, value) = document?;
        let items = match value.get("items").and_then(Value::as_array) {
            Some(items) if value.get("kind").and_then(Value::as_str) == Some("List") => {
                items.iter().collect()
            }
            _ => vec![&value],
        };
        for object in items {
            if object.get("kind").and_then(Value::as_str) != Some("Namespace")
                || object.get("apiVersion").and_then(Value::as_str) != Some("v1")
            {
                continue;
            }
            let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let annotations: BTreeMap<String, String> = object
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
            let rule = allow::NamespaceRule::new(mode, name, &annotations);
            for problem in rule
                .allow_list()
                .map(allow::AllowList::problems)
                .unwrap_or_default()
            {
                warnings.push(format!("document {number} (Namespace/{name}): {problem}"));
            }
            rules.insert(name.to_owned(), rule);
        }
    }
    let empty = BTreeMap::new();
    for template in templates {
        let Some(rule) = rules.get(&template.namespace) else {
            continue;
        };
        let annotations = template.metadata.annotations.as_ref().unwrap_or(&empty);
        if let Err(denial) = rule.check_pod(annotations) {
            warnings.push(format!(
                "document {} ({}): the API server would refuse its pods (the chart's allow-list \
                 policy, allowList.mode {}): {denial}",
                template.document,
                template.object,
                mode.as_str()
            ));
        }
    }
    Ok(warnings)
}

/// What is said of an input without a single document.
const NO_DOCUMENTS: &str =
    "no documents (the input is empty or holds only comments): nothing to do";

/// Inject every pod and pod template in `input`. All documents are checked; the first error
/// fails the whole run so that nothing half-injected is ever printed.
pub fn inject_documents(input: &str, config: &MutationConfig) -> Result<Injected, InjectError> {
    let mut out = String::with_capacity(input.len() * 2);
    let mut injected = 0;
    let mut warnings = Vec::new();
    let mut any = false;
    for document in documents(input) {
        let (number, mut value) = document?;
        any = true;
        // Found first, patched after: a patch only adds inside its own template, so the other
        // templates' pointers stay valid.
        let mut mutations = Vec::new();
        walk(
            number,
            &value,
            &PointerBuf::new(),
            &mut warnings,
            &mut |template| {
                let mutation = mutate(
                    &(&template.metadata).into(),
                    &(&template.spec).into(),
                    config,
                )
                .map_err(|source| InjectError::Mutation {
                    document: number,
                    object: template.object.clone(),
                    source,
                })?;
                mutations.push((template, mutation));
                Ok(())
            },
        )?;
        for (template, mutation) in mutations {
            if let Some(patch) = &mutation.patch {
                let patch = rebase(patch.to_patch(), &template.pointer);
                json_patch::patch(&mut value, &patch).map_err(|e| InjectError::Apply {
                    document: number,
                    object: template.object.clone(),
                    message: e.to_string(),
                })?;
                injected += 1;
            }
            warnings.extend(
                mutation
                    .warnings
                    .into_iter()
                    .map(|w| format!("document {number} ({}): {w}", template.object)),
            );
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&yaml::to_string(&value));
    }
    if !any {
        warnings.push(NO_DOCUMENTS.to_owned());
    }
    Ok(Injected {
        yaml: out,
        injected,
        warnings,
    })
}

/// The non-empty documents of `input` with their 1-based numbers (an empty document, e.g.
/// after a trailing `---`, keeps its number but is skipped).
fn documents(input: &str) -> impl Iterator<Item = Result<(usize, Value), InjectError>> + '_ {
    yaml_serde::Deserializer::from_str(input)
        .enumerate()
        .filter_map(|(index, document)| {
            let number = index + 1;
            match Value::deserialize(document) {
                Ok(Value::Null) => None,
                Ok(value) => Some(Ok((number, value))),
                Err(source) => Some(Err(InjectError::Parse {
                    document: number,
                    source,
                })),
            }
        })
}

/// Where the pod template lives in `object`, of this kind, relative to the object: where the
/// built-in kinds keep it, and for any other kind (Argo Rollouts, OpenKruise CloneSets, ...)
/// `spec.template` when that holds a pod spec with containers.
fn template_location(
    api_version: &str,
    kind: &str,
    object: &Value,
) -> Option<&'static [&'static str]> {
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("", "PodTemplate") => Some(&["template"]),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ if object
            .pointer("/spec/template/spec/containers")
            .is_some_and(Value::is_array) =>
        {
            Some(&["spec", "template"])
        }
        _ => None,
    }
}

/// Whether `value` holds a `secrets.k8s.aws/` key anywhere: annotations meant for a pod.
fn asks_for_secrets(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.starts_with(crate::spec::PREFIX) || asks_for_secrets(value)),
        Value::Array(items) => items.iter().any(asks_for_secrets),
        _ => false,
    }
}

/// Call `found` for each pod template in `object` (at `at` in document `document`), descending
/// into `List`s, in order.
/// Objects passed over that may have been meant to be injected are described in `skipped`.
fn walk(
    document: usize,
    object: &Value,
    at: &PointerBuf,
    skipped: &mut Vec<String>,
    found: &mut dyn FnMut(PodTemplate) -> Result<(), InjectError>,
) -> Result<(), InjectError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let place = if at.is_root() {
        format!("document {document}")
    } else {
        format!("document {document} at {at}")
    };
    if kind.is_empty() || api_version.is_empty() {
        let missing = match (api_version.is_empty(), kind.is_empty()) {
            (true, true) => "apiVersion and kind",
            (true, false) => "apiVersion",
            _ => "kind",
        };
        let kind = if kind.is_empty() {
            String::new()
        } else {
            format!(" ({kind})")
        };
        skipped.push(format!(
            "{place}{kind}: skipped: it has no {missing}, so it is no Kubernetes object \
             (kubectl refuses it too); left unchanged"
        ));
        return Ok(());
    }
    if kind == "List" || (kind.ends_with("List") && object.get("items").is_some()) {
        let items = object.get("items").and_then(Value::as_array);
        for (i, item) in items.into_iter().flatten().enumerate() {
            let mut item_at = at.clone();
            item_at.push_back("items");
            item_at.push_back(i);
            walk(document, item, &item_at, skipped, found)?;
        }
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let label = format!("{kind}/{name}");
    let Some(location) = template_location(api_version, kind, object) else {
        // A kind with its pods elsewhere (an Argo Workflow's templates, a KEDA ScaledJob's
        // jobTargetRef) whose annotations below its own metadata ask for secrets.
        let below = object
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.as_str() != "metadata")
            .any(|(_, value)| asks_for_secrets(value));
        if below {
            skipped.push(format!(
                "{place} ({label}): skipped: it asks for secrets ({}* annotations), but a \
                 {kind} keeps no pod template where secret-inject looks (a Pod; spec.template \
                 with spec.containers; a CronJob's spec.jobTemplate.spec.template), so nothing \
                 was injected; inject the Pods it creates with the webhook instead",
                crate::spec::PREFIX
            ));
        }
        return Ok(());
    };
    let template_pointer = PointerBuf::from_tokens(location.iter().copied());
    let Some(template) = object.pointer(template_pointer.as_str()) else {
        return Ok(());
    };
    let pointer = at.concat(&template_pointer);
    let parse_error = |field: &str, what, source| InjectError::Template {
        document,
        object: label.clone(),
        field: format!("{pointer}{field}"),
        what,
        source,
    };
    let metadata = match template.get("metadata") {
        Some(m) => {
            check_string_values(m).map_err(|(what, key, value)| {
                let (found, fix) = not_a_string(key, value);
                InjectError::NotAString(Box::new(NotAString {
                    document,
                    object: label.clone(),
                    field: format!("{pointer}/metadata/{what}s"),
                    what,
                    key: key.to_owned(),
                    found,
                    fix,
                }))
            })?;
            ObjectMeta::deserialize(m).map_err(|e| parse_error("/metadata", "ObjectMeta", e))?
        }
        None => ObjectMeta::default(),
    };
    let spec = match template.get("spec") {
        Some(s) => PodSpec::deserialize(s).map_err(|e| parse_error("/spec", "PodSpec", e))?,
        None => PodSpec::default(),
    };
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned();
    found(PodTemplate {
        document,
        object: label,
        namespace,
        pointer,
        metadata,
        spec,
    })
}

/// The first label or annotation of `metadata` whose value is not a string, as
/// `(annotation|label, key, value)`.
fn check_string_values(metadata: &Value) -> Result<(), (&'static str, &str, &Value)> {
    for (what, field) in [("annotation", "annotations"), ("label", "labels")] {
        let entries = metadata.get(field).and_then(Value::as_object);
        if let Some((key, value)) = entries
            .into_iter()
            .flatten()
            .find(|(_, value)| !value.is_string())
        {
            return Err((what, key, value));
        }
    }
    Ok(())
}

/// What a value that should have been a string is, and how to write it as one.
fn not_a_string(key: &str, value: &Value) -> (String, String) {
    let quote_it = |text: &str| format!("quote it: {key}: \"{text}\"");
    match value {
        Value::Number(number) => (
            format!("the number {number}"),
            quote_it(&number.to_string()),
        ),
        Value::Bool(boolean) => (
            format!("the boolean {boolean}"),
            quote_it(&boolean.to_string()),
        ),
        Value::Null => (
            "empty (null)".to_owned(),
            format!("give it a value in quotes, or {key}: \"\" for an empty string"),
        ),
        Value::Array(_) => ("a list".to_owned(), "give one string".to_owned()),
        _ => ("a map".to_owned(), "give one string".to_owned()),
    }
}

/// Move a patch rooted at a pod under `prefix` (where the pod template lives).
fn rebase(patch: Patch, prefix: &PointerBuf) -> Patch {
    if prefix.is_root() {
        return patch;
    }
    Patch(
        patch
            .0
            .into_iter()
            .map(|mut op| {
                let rebased = |path: &PointerBuf| prefix.concat(path);
                match &mut op {
                    PatchOperation::Add(o) => o.path = rebased(&o.path),
                    PatchOperation::Remove(o) => o.path = rebased(&o.path),
                    PatchOperation::Replace(o) => o.path = rebased(&o.path),
                    PatchOperation::Test(o) => o.path = rebased(&o.path),
                    PatchOperation::Move(o) => {
                        o.from = rebased(&o.from);
                        o.path = rebased(&o.path);
                    }
                    PatchOperation::Copy(o) => {
                        o.from = rebased(&o.from);
                        o.path = rebased(&o.path);
                    }
                }
                op
            })
            .collect(),
    )
}
