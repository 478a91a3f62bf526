//! The parts of a `v1.Pod` the mutation reads, and nothing else.
//!
//! The webhook deserializes these straight from the AdmissionReview's bytes: strings are
//! borrowed from the request body where they hold no escapes, and every field the mutation does
//! not read (images, commands, probes, resources, tolerations, managed fields, ...) is skipped
//! without being built. Building a whole k8s-openapi `Pod` cost more than the mutation itself.
//! The names and shapes are the API's (`spec.containers[].volumeMounts[].mountPath`), so a
//! manifest (`inject`, as a `serde_json::Value`) deserializes into the same types.
//!
//! The API server validates the pod after every mutating webhook, so fields the mutation does
//! not read are left for it to check.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use k8s_openapi::api::core::v1::{self as k8s, EnvVarSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as k8s_meta;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, Visitor};

/// A string of the request: borrowed from its bytes unless it held escapes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Text<'_> {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Text(Cow::Borrowed(text))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A pod, or the `template` of a workload.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Pod<'a> {
    /// `metadata`.
    #[serde(default, borrow)]
    pub metadata: ObjectMeta<'a>,
    /// `spec`.
    #[serde(default, borrow)]
    pub spec: Option<PodSpec<'a>>,
}

/// `metadata`: the annotations the mutation reads, and the names a log line shows.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta<'a> {
    /// `name`.
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    /// `generateName`.
    #[serde(default, borrow)]
    pub generate_name: Option<Text<'a>>,
    /// `namespace`.
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    /// `annotations`.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// `spec`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec<'a> {
    /// `containers`.
    #[serde(default, borrow)]
    pub containers: Vec<Container<'a>>,
    /// `initContainers`.
    #[serde(default, borrow)]
    pub init_containers: Option<Vec<Container<'a>>>,
    /// `volumes`.
    #[serde(default, borrow)]
    pub volumes: Option<Vec<Volume<'a>>>,
    /// `securityContext`.
    #[serde(default)]
    pub security_context: Option<PodSecurityContext>,
    /// `restartPolicy`.
    #[serde(default, borrow)]
    pub restart_policy: Option<Text<'a>>,
    /// `shareProcessNamespace`.
    #[serde(default)]
    pub share_process_namespace: Option<bool>,
    /// Whether the pod sets pod-level `resources` (their content is not read).
    #[serde(default)]
    pub resources: Option<IgnoredAny>,
    /// `os`.
    #[serde(default, borrow)]
    pub os: Option<PodOs<'a>>,
}

/// `spec.os`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PodOs<'a> {
    /// `name`: `linux` or `windows`.
    #[serde(borrow)]
    pub name: Text<'a>,
}

/// `spec.securityContext`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// `runAsGroup`.
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// `fsGroup`.
    #[serde(default)]
    pub fs_group: Option<i64>,
}

/// `spec.volumes[]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Volume<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
}

/// `spec.containers[]` and `spec.initContainers[]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `env`.
    #[serde(default, borrow)]
    pub env: Option<Vec<EnvVar<'a>>>,
    /// `volumeMounts`.
    #[serde(default, borrow)]
    pub volume_mounts: Option<Vec<VolumeMount<'a>>>,
    /// `securityContext`.
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    /// `restartPolicy` (`Always` makes an init container a native sidecar).
    #[serde(default, borrow)]
    pub restart_policy: Option<Text<'a>>,
}

/// `env[]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `value`.
    #[serde(default, borrow)]
    pub value: Option<Text<'a>>,
    /// `valueFrom`, typed (rare; copied into the agent for the AWS identity variables).
    #[serde(default)]
    pub value_from: Option<EnvVarSource>,
}

/// `volumeMounts[]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Text<'a>,
    /// `mountPath`.
    #[serde(borrow)]
    pub mount_path: Text<'a>,
}

/// A container's `securityContext`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// `runAsUser`.
    #[serde(default)]
    pub run_as_user: Option<i64>,
}

impl<'a> Pod<'a> {
    /// The pod (or template) in a manifest already read as JSON; strings are borrowed from it.
    pub fn from_value(value: &'a serde_json::Value) -> Result<Self, serde_json::Error> {
        Pod::deserialize(value)
    }
}

// Views of k8s-openapi's typed objects (a manifest `inject` has validated as a whole PodSpec,
// tests that build pods): the strings are borrowed from them.

fn text(s: &str) -> Text<'_> {
    Text(Cow::Borrowed(s))
}

impl<'a> From<&'a k8s_meta::ObjectMeta> for ObjectMeta<'a> {
    fn from(meta: &'a k8s_meta::ObjectMeta) -> Self {
        ObjectMeta {
            name: meta.name.as_deref().map(text),
            generate_name: meta.generate_name.as_deref().map(text),
            namespace: meta.namespace.as_deref().map(text),
            annotations: meta.annotations.clone(),
        }
    }
}

impl<'a> From<&'a k8s::PodSpec> for PodSpec<'a> {
    fn from(spec: &'a k8s::PodSpec) -> Self {
        let containers = |list: &'a [k8s::Container]| list.iter().map(Container::from).collect();
        PodSpec {
            containers: containers(&spec.containers),
            init_containers: spec.init_containers.as_deref().map(containers),
            volumes: spec.volumes.as_ref().map(|volumes| {
                volumes
                    .iter()
                    .map(|v| Volume {
                        name: text(&v.name),
                    })
                    .collect()
            }),
            security_context: spec.security_context.as_ref().map(|s| PodSecurityContext {
                run_as_user: s.run_as_user,
                run_as_group: s.run_as_group,
                fs_group: s.fs_group,
            }),
            restart_policy: spec.restart_policy.as_deref().map(text),
            share_process_namespace: spec.share_process_namespace,
            resources: spec.resources.as_ref().map(|_| IgnoredAny),
            os: spec.os.as_ref().map(|os| PodOs {
                name: text(&os.name),
            }),
        }
    }
}

impl<'a> From<&'a k8s::Container> for Container<'a> {
    fn from(c: &'a k8s::Container) -> Self {
        Container {
            name: text(&c.name),
            env: c.env.as_ref().map(|env| {
                env.iter()
                    .map(|e| EnvVar {
                        name: text(&e.name),
                        value: e.value.as_deref().map(text),
                        value_from: e.value_from.clone(),
                    })
                    .collect()
            }),
            volume_mounts: c.volume_mounts.as_ref().map(|mounts| {
                mounts
                    .iter()
                    .map(|m| VolumeMount {
                        name: text(&m.name),
                        mount_path: text(&m.mount_path),
                    })
                    .collect()
            }),
            security_context: c.security_context.as_ref().map(|s| SecurityContext {
                run_as_user: s.run_as_user,
            }),
            restart_policy: c.restart_policy.as_deref().map(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_borrowed_unless_escaped_and_unread_fields_are_skipped() {
        let body = br#"{"metadata":{"name":"web","annotations":{"a":"b"},"managedFields":[{"x":1}]},
            "spec":{"containers":[{"name":"app","image":"nginx","command":["sh"],
            "env":[{"name":"A\u0042","value":"v"}],"volumeMounts":[{"name":"d","mountPath":"/d","readOnly":true}]}],
            "tolerations":[{"key":"k"}]}}"#;
        let pod: Pod = serde_json::from_slice(body).unwrap();
        let spec = pod.spec.unwrap();
        let app = &spec.containers[0];
        assert!(matches!(app.name.0, Cow::Borrowed("app")));
        let env = &app.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "AB");
        assert!(matches!(env.name.0, Cow::Owned(_)));
        assert_eq!(app.volume_mounts.as_ref().unwrap()[0].mount_path, "/d");
        assert_eq!(pod.metadata.annotations.unwrap()["a"], "b");
        assert!(spec.init_containers.is_none());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_an_error_naming_it() {
        let body = br#"{"spec":{"containers":[{"name":"app","volumeMounts":{"name":"x"}}]}}"#;
        let error = serde_json::from_slice::<Pod>(body).unwrap_err().to_string();
        assert!(error.contains("expected a sequence"), "{error}");
    }

    #[test]
    fn a_manifest_value_deserializes_borrowed() {
        let value = serde_json::json!({"spec": {"containers": [{"name": "app"}]}});
        let pod = Pod::from_value(&value).unwrap();
        assert!(matches!(
            pod.spec.unwrap().containers[0].name.0,
            Cow::Borrowed("app")
        ));
    }
}
