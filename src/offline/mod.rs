//! The offline injector: the webhook's mutation applied to manifests on disk.
//!
//! YAML or JSON in (many documents, `List`s), YAML out. Pods and the pod templates of
//! workload controllers are injected with [`mutate`] — the function the webhook calls — and the
//! resulting JSON Patch is applied at the template's place in the document. Other kinds pass
//! through unchanged. Output is written by [`yaml`], which quotes every string a YAML 1.1
//! reader (kubectl) could take for something else.

pub mod yaml;

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use crate::mutate::{MutationConfig, MutationError, mutate};

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

/// Inject every pod and pod template in `input`. All documents are checked; the first error
/// fails the whole run so that nothing half-injected is ever printed.
pub fn inject_documents(input: &str, config: &MutationConfig) -> Result<Injected, InjectError> {
    let mut out = String::with_capacity(input.len() * 2);
    let mut injected = 0;
    let mut warnings = Vec::new();
    for (index, document) in yaml_serde::Deserializer::from_str(input).enumerate() {
        let number = index + 1;
        let mut value = Value::deserialize(document).map_err(|source| InjectError::Parse {
            document: number,
            source,
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let mut context = Context {
            document: number,
            config,
            injected: 0,
            warnings: &mut warnings,
        };
        context.visit(&mut value, &PointerBuf::new())?;
        injected += context.injected;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&yaml::to_string(&value));
    }
    Ok(Injected {
        yaml: out,
        injected,
        warnings,
    })
}

struct Context<'a> {
    document: usize,
    config: &'a MutationConfig,
    injected: usize,
    warnings: &'a mut Vec<String>,
}

/// Where the pod template lives in an object of this kind, relative to the object.
fn template_location(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("", "PodTemplate") => Some(&["template"]),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

impl Context<'_> {
    fn visit(&mut self, object: &mut Value, at: &PointerBuf) -> Result<(), InjectError> {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind == "List" || (kind.ends_with("List") && object.get("items").is_some()) {
            let count = object
                .get("items")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for i in 0..count {
                let mut item_at = at.clone();
                item_at.push_back("items");
                item_at.push_back(i);
                if let Some(item) = object.pointer_mut(&format!("/items/{i}")) {
                    self.visit(item, &item_at)?;
                }
            }
            return Ok(());
        }
        let Some(location) = template_location(api_version, kind) else {
            return Ok(());
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        let label = format!("{kind}/{name}");
        let template_pointer = PointerBuf::from_tokens(location.iter().copied());
        let Some(template) = object.pointer(template_pointer.as_str()) else {
            return Ok(());
        };
        let parse_error = |field: &str, what, source| InjectError::Template {
            document: self.document,
            object: label.clone(),
            field: format!("{}{}", at.concat(&template_pointer), field),
            what,
            source,
        };
        let metadata = match template.get("metadata") {
            Some(m) => {
                ObjectMeta::deserialize(m).map_err(|e| parse_error("/metadata", "ObjectMeta", e))?
            }
            None => ObjectMeta::default(),
        };
        let spec = match template.get("spec") {
            Some(s) => PodSpec::deserialize(s).map_err(|e| parse_error("/spec", "PodSpec", e))?,
            None => PodSpec::default(),
        };
        let Some(mutation) =
            mutate(&metadata, &spec, self.config).map_err(|source| InjectError::Mutation {
                document: self.document,
                object: label.clone(),
                source,
            })?
        else {
            return Ok(());
        };
        let patch = rebase(mutation.patch, &template_pointer);
        json_patch::patch(object, &patch).map_err(|e| InjectError::Apply {
            document: self.document,
            object: label.clone(),
            message: e.to_string(),
        })?;
        self.injected += 1;
        self.warnings.extend(
            mutation
                .warnings
                .into_iter()
                .map(|w| format!("document {} ({label}): {w}", self.document)),
        );
        Ok(())
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
