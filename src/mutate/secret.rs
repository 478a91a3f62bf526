//! The secret writer's pure half: what a labelled Kubernetes Secret stores in Secrets Manager,
//! under which name (derived from cluster, namespace and Secret name, never from what the
//! request says), which tags prove a secret is the writer's own, and the JSON Patch that leaves
//! only the ARN and the staged version's id in Kubernetes. No I/O: the `/mutating-secrets`
//! endpoint calls AWS with what [`SecretConversion::for_secret`] computed, then
//! [`stored_reference`] with the ARN AWS returned; the promotion loop
//! (`webhook::promote`) makes that version current once the API server has persisted it.

use std::collections::BTreeMap;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use crate::spec::{self, MAX_SECRET_BYTES};

/// The one key a converted Secret holds.
pub const ARN_KEY: &str = "arn";
pub use crate::spec::BASE64_KEYS;
/// The staging label of a version the writer stored but the promotion loop has not yet made
/// `AWSCURRENT`: no reader asks for it (the agent reads `AWSCURRENT` unless a pod names another
/// stage), and it moves to each newer staged version.
pub const PENDING_STAGE: &str = "secret-inject-pending";
/// The staging label readers get.
pub const CURRENT_STAGE: &str = "AWSCURRENT";
/// Tag: the cluster whose writer created the secret.
pub const TAG_CLUSTER: &str = "kubernetes.io/cluster";
/// Tag: the namespace of the Kubernetes Secret it stores.
pub const TAG_NAMESPACE: &str = "kubernetes.io/namespace";
/// Tag: the name of the Kubernetes Secret it stores.
pub const TAG_NAME: &str = "kubernetes.io/name";
/// Tag: who manages the secret.
pub const TAG_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`TAG_MANAGED_BY`].
pub const MANAGED_BY: &str = "secret-inject";

/// What a Secret asks of the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRequest {
    /// Not labelled for Secrets Manager: leave it alone.
    None,
    /// Converted already (its data is only the ARN): nothing to write.
    AlreadyConverted,
    /// Store this in Secrets Manager.
    Store(SecretConversion),
}

/// What to store for one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretConversion {
    /// The Secrets Manager secret name: `<prefix>/<namespace>/<name>`.
    pub name: String,
    /// The SecretString: a JSON object of the Secret's keys.
    pub value: String,
    /// Tags for CreateSecret, and what an existing secret must carry to be written.
    pub tags: BTreeMap<String, String>,
}

/// Why a labelled Secret cannot be stored. The message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not an Opaque Secret.
    #[error(
        "Secret {name}: type {kind} cannot be stored in Secrets Manager; only Opaque Secrets \
         can (service-account tokens, TLS and registry credentials are read by Kubernetes \
         itself); remove the label {label}"
    )]
    Type {
        /// namespace/name.
        name: String,
        /// The Secret's type.
        kind: String,
        /// The label key.
        label: &'static str,
    },
    /// The stored JSON would be over the limit.
    #[error(
        "Secret {name}: its value is {size} bytes as JSON, over the {MAX_SECRET_BYTES} bytes a \
         Secrets Manager secret may hold; split it into several Secrets"
    )]
    TooLarge {
        /// namespace/name.
        name: String,
        /// The JSON's size.
        size: usize,
    },
    /// The Secret has no name yet (only `generateName`).
    #[error(
        "Secret with generateName {generate_name:?}: the secret writer names the Secrets Manager \
         secret after the Kubernetes Secret; give it metadata.name"
    )]
    NoName {
        /// The generateName.
        generate_name: String,
    },
    /// The Secret's ARN annotation names a secret other than the one the writer derives for
    /// it.
    #[error(
        "Secret {name}: annotation {annotation} is {value:?}, but the secret writer stores this \
         Secret only as {expected:?} (named after the cluster prefix, namespace and Secret); \
         remove the annotation (the writer sets it) or, to consume another secret, annotate \
         the pod instead"
    )]
    NotOwned {
        /// namespace/name.
        name: String,
        /// The annotation key.
        annotation: &'static str,
        /// What it said.
        value: String,
        /// The only name the writer uses for this Secret.
        expected: String,
    },
    /// The name would not be a valid Secrets Manager name.
    #[error(
        "Secret {name}: {secret_name:?} is not a valid Secrets Manager name (1-512 of letters, \
         digits and /_+=.@-); choose another --secret-writer-prefix"
    )]
    Name {
        /// namespace/name.
        name: String,
        /// The computed name.
        secret_name: String,
    },
}

/// The settings of the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// First part of every secret name, e.g. the cluster's name.
    pub prefix: String,
    /// The cluster's name, for the tag.
    pub cluster: String,
}

impl SecretConversion {
    /// What `secret` (in `namespace`) asks for.
    pub fn for_secret(
        secret: &Secret,
        namespace: &str,
        config: &WriterConfig,
    ) -> Result<SecretRequest, SecretError> {
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(spec::STORE_LABEL))
            .is_some_and(|v| v == spec::STORE_SECRETS_MANAGER);
        if !labelled {
            return Ok(SecretRequest::None);
        }
        let Some(object_name) = secret.metadata.name.clone().filter(|n| !n.is_empty()) else {
            return Err(SecretError::NoName {
                generate_name: secret.metadata.generate_name.clone().unwrap_or_default(),
            });
        };
        let shown = format!("{namespace}/{object_name}");
        let kind = secret.type_.as_deref().unwrap_or("Opaque");
        if kind != "Opaque" {
            return Err(SecretError::Type {
                name: shown,
                kind: kind.to_owned(),
                label: spec::STORE_LABEL,
            });
        }
        // data decoded, stringData merged over it, as the API server does.
        let mut values: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            values.insert(k.clone(), v.as_bytes().to_vec());
        }
        let name = secret_name(config, namespace, &object_name);
        if !spec::is_secret_name(&name) {
            return Err(SecretError::Name {
                name: shown,
                secret_name: name,
            });
        }
        // The ARN this writer left: it must name the derived secret (anything else would let a
        // Secret in one namespace steer the write to another's); not part of the value (an
        // update by `kubectl apply` keeps it next to the new keys).
        let annotated_arn = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(spec::SECRET_ARN));
        if let Some(arn) = annotated_arn
            && !spec::SecretArn::parse(arn).is_ok_and(|parsed| parsed.names(&name))
        {
            return Err(SecretError::NotOwned {
                name: shown,
                annotation: spec::SECRET_ARN,
                value: arn.chars().take(600).collect(),
                expected: name,
            });
        }
        if let Some(arn) = annotated_arn
            && values.get(ARN_KEY).is_some_and(|v| v == arn.as_bytes())
        {
            values.remove(ARN_KEY);
            if values.is_empty() {
                return Ok(SecretRequest::AlreadyConverted);
            }
        }
        let mut object = serde_json::Map::new();
        let mut base64_keys = Vec::new();
        for (key, bytes) in values {
            let value = match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(error) => {
                    base64_keys.push(Value::String(key.clone()));
                    base64::engine::general_purpose::STANDARD.encode(error.into_bytes())
                }
            };
            object.insert(key, Value::String(value));
        }
        if !base64_keys.is_empty() {
            object.insert(BASE64_KEYS.to_owned(), Value::Array(base64_keys));
        }
        let value = Value::Object(object).to_string();
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge {
                name: shown,
                size: value.len(),
            });
        }
        Ok(SecretRequest::Store(SecretConversion {
            tags: owner_tags(config, namespace, &object_name),
            name,
            value,
        }))
    }

    /// The id of the version this admission stages, used as its ClientRequestToken: derived
    /// from the admission request's uid (which the API server keeps when it retries a call, and
    /// draws anew for every write), so a retried call is a no-op in Secrets Manager while every
    /// distinct write, a revert A → B → A included, is a version of its own. Nothing of the
    /// value goes into it: the id is written into the Secret's annotations, readable by more
    /// people than the value.
    pub fn version_id(&self, request_uid: &str) -> String {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("secret-inject/v1\0{request_uid}\0{}", self.name).as_bytes(),
        );
        digest
            .as_ref()
            .iter()
            .take(24)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The Secrets Manager secret the writer keeps for Secret `namespace/name`:
/// `<prefix>/<namespace>/<name>`.
pub fn secret_name(config: &WriterConfig, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", config.prefix.trim_end_matches('/'))
}

/// The tags the writer puts on the secret it creates for Secret `namespace/name`, and what it
/// requires of a secret before writing to it.
pub fn owner_tags(config: &WriterConfig, namespace: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_CLUSTER.to_owned(), config.cluster.clone()),
        (TAG_NAMESPACE.to_owned(), namespace.to_owned()),
        (TAG_NAME.to_owned(), name.to_owned()),
        (TAG_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// Whether a secret carrying `tags` is the writer's own for these `expected` tags; `Err` says
/// which tag differs (tag values are names, never secret values).
pub fn check_owner<'a>(
    expected: &BTreeMap<String, String>,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    let found: BTreeMap<&str, &str> = tags.into_iter().collect();
    for (key, want) in expected {
        match found.get(key.as_str()) {
            Some(have) if have == want => {}
            Some(have) => {
                return Err(format!(
                    "its tag {key} is {:?}, not {want:?}",
                    have.chars().take(256).collect::<String>()
                ));
            }
            None => {
                return Err(format!(
                    "it has no tag {key} (the writer did not create it)"
                ));
            }
        }
    }
    Ok(())
}

/// The annotation `kubectl apply` (client-side) keeps the last applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A last-applied manifest without `data` and `stringData`; one that is not a JSON object
/// (nothing `kubectl` writes) is replaced by an empty object rather than kept.
fn without_values(applied: &str) -> String {
    let mut manifest = match serde_json::from_str::<Value>(applied) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    manifest.remove("data");
    manifest.remove("stringData");
    let mut text = Value::Object(manifest).to_string();
    text.push('\n');
    text
}

/// The patch that leaves only the ARN in the Secret: `data` replaced by `{arn}`, `stringData`
/// removed, the ARN annotation set (pods consume it with the pod annotations) and, when a
/// version was staged, its id in the `version-id` annotation: the promotion loop makes that
/// version `AWSCURRENT` once it sees the persisted Secret carry it.
pub fn stored_reference(secret: &Secret, arn: &str, version_id: Option<&str>) -> Patch {
    let encoded = base64::engine::general_purpose::STANDARD.encode(arn);
    let data = json!({ ARN_KEY: encoded });
    let mut ops = vec![if secret.data.is_some() {
        PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(["data"]),
            value: data,
        })
    } else {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["data"]),
            value: data,
        })
    }];
    if secret.string_data.is_some() {
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(["stringData"]),
        }));
    }
    let mut annotations = vec![(spec::SECRET_ARN, arn.to_owned())];
    annotations.extend(version_id.map(|id| (spec::VERSION_ID, id.to_owned())));
    // `kubectl apply` copies the whole manifest, data included, into this annotation: keep
    // the annotation (apply's three-way merge reads it) without the values.
    if let Some(applied) = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED))
    {
        annotations.push((LAST_APPLIED, without_values(applied)));
    }
    match &secret.metadata.annotations {
        Some(_) => {
            for (key, value) in annotations {
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["metadata", "annotations", key]),
                    value: Value::String(value),
                }));
            }
        }
        None => ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: Value::Object(
                annotations
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v)))
                    .collect(),
            ),
        })),
    }
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn config() -> WriterConfig {
        WriterConfig {
            prefix: "prod-eu".to_owned(),
            cluster: "prod-eu".to_owned(),
        }
    }

    fn secret(data: &[(&str, &[u8])], string_data: &[(&str, &str)]) -> Secret {
        let mut secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "db", "labels": {spec::STORE_LABEL: spec::STORE_SECRETS_MANAGER}},
            "type": "Opaque"
        }))
        .unwrap();
        if !data.is_empty() {
            secret.data = Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            );
        }
        if !string_data.is_empty() {
            secret.string_data = Some(
                string_data
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
        }
        secret
    }

    fn store(secret: &Secret) -> SecretConversion {
        match SecretConversion::for_secret(secret, "payments", &config()).unwrap() {
            SecretRequest::Store(conversion) => conversion,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_and_string_data_become_one_json_object() {
        let conversion = store(&secret(
            &[("user", b"admin"), ("password", b"old")],
            &[("password", "new")],
        ));
        assert_eq!(conversion.name, "prod-eu/payments/db");
        let value: Value = serde_json::from_str(&conversion.value).unwrap();
        assert_eq!(value, json!({"user": "admin", "password": "new"}));
        assert_eq!(conversion.version_id("uid-1").len(), 48);
        assert_eq!(conversion.tags["kubernetes.io/namespace"], "payments");
    }

    #[test]
    fn binary_values_are_base64_with_a_marker_and_round_trip() {
        let bytes: &[u8] = &[0, 159, 146, 150, 255];
        let conversion = store(&secret(&[("key.der", bytes), ("text", b"plain")], &[]));
        let value: Value = serde_json::from_str(&conversion.value).unwrap();
        assert_eq!(value[BASE64_KEYS], json!(["key.der"]));
        assert_eq!(value["text"], "plain");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value["key.der"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, bytes);
    }

    #[test]
    fn the_version_id_follows_the_request_not_the_value() {
        let one = store(&secret(&[("password", b"one")], &[]));
        let two = store(&secret(&[("password", b"two")], &[]));
        // A retried call (same request uid): the same version, a no-op in Secrets Manager.
        assert_eq!(one.version_id("uid-a"), one.version_id("uid-a"));
        // A revert A -> B -> A: the third write has its own request uid, so its own version.
        assert_ne!(one.version_id("uid-a"), one.version_id("uid-c"));
        // Nothing of the value in it (it is written into the Secret's annotations).
        assert_eq!(one.version_id("uid-a"), two.version_id("uid-a"));
        let mut elsewhere = secret(&[("password", b"one")], &[]);
        elsewhere.metadata.name = Some("other".to_owned());
        let other = match SecretConversion::for_secret(&elsewhere, "payments", &config()) {
            Ok(SecretRequest::Store(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_ne!(one.version_id("uid-a"), other.version_id("uid-a"));
    }

    #[test]
    fn an_arn_annotation_naming_any_other_secret_is_refused() {
        let own = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/attacker/db-AbCdEf";
        for foreign in [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/payments/db-AbCdEf",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/payments/db",
            "prod-eu/payments/db",
            "prod-eu/attacker/db",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/attacker/db-AbCdEf-x",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/attacker/dbx-AbCdEf",
        ] {
            let mut attacker = secret(&[("password", b"mine")], &[]);
            attacker.metadata.annotations =
                Some([(spec::SECRET_ARN.to_owned(), foreign.to_owned())].into());
            let err = SecretConversion::for_secret(&attacker, "attacker", &config()).unwrap_err();
            assert!(
                matches!(err, SecretError::NotOwned { .. }),
                "{foreign}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains("prod-eu/attacker/db"), "{message}");
            assert!(message.contains(spec::SECRET_ARN), "{message}");
        }
        // Its own ARN, full or partial, is fine.
        for arn in [
            own,
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/attacker/db",
        ] {
            let mut mine = secret(&[("password", b"mine")], &[]);
            mine.metadata.annotations =
                Some([(spec::SECRET_ARN.to_owned(), arn.to_owned())].into());
            assert!(matches!(
                SecretConversion::for_secret(&mine, "attacker", &config()),
                Ok(SecretRequest::Store(_))
            ));
        }
    }

    #[test]
    fn only_a_secret_with_all_four_owner_tags_is_the_writers() {
        let expected = owner_tags(&config(), "payments", "db");
        let tags = |pairs: &[(&'static str, &'static str)]| pairs.to_vec();
        let all = tags(&[
            (TAG_CLUSTER, "prod-eu"),
            (TAG_NAMESPACE, "payments"),
            (TAG_NAME, "db"),
            (TAG_MANAGED_BY, MANAGED_BY),
            ("team", "payments"),
        ]);
        assert_eq!(check_owner(&expected, all.iter().copied()), Ok(()));
        let other_ns = tags(&[
            (TAG_CLUSTER, "prod-eu"),
            (TAG_NAMESPACE, "attacker"),
            (TAG_NAME, "db"),
            (TAG_MANAGED_BY, MANAGED_BY),
        ]);
        let err = check_owner(&expected, other_ns.iter().copied()).unwrap_err();
        assert!(
            err.contains(TAG_NAMESPACE) && err.contains("attacker"),
            "{err}"
        );
        let untagged: Vec<(&str, &str)> = Vec::new();
        let err = check_owner(&expected, untagged).unwrap_err();
        assert!(err.contains("did not create it"), "{err}");
    }

    #[test]
    fn unlabelled_converted_typed_and_oversized_secrets() {
        let mut plain = secret(&[("a", b"b")], &[]);
        plain.metadata.labels = None;
        assert_eq!(
            SecretConversion::for_secret(&plain, "ns", &config()),
            Ok(SecretRequest::None)
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/ns/db-AbCdEf";
        let mut converted = secret(&[(ARN_KEY, arn.as_bytes())], &[]);
        converted.metadata.annotations =
            Some([(spec::SECRET_ARN.to_owned(), arn.to_owned())].into());
        assert_eq!(
            SecretConversion::for_secret(&converted, "ns", &config()),
            Ok(SecretRequest::AlreadyConverted)
        );
        // Updated by `kubectl apply` after conversion: the ARN key stays beside the new value.
        let mut updated = secret(&[(ARN_KEY, arn.as_bytes()), ("password", b"new")], &[]);
        updated.metadata.annotations = converted.metadata.annotations.clone();
        let SecretRequest::Store(conversion) =
            SecretConversion::for_secret(&updated, "ns", &config()).unwrap()
        else {
            panic!("an update with a new value is stored");
        };
        assert_eq!(conversion.value, r#"{"password":"new"}"#);
        let mut tls = secret(&[("tls.crt", b"x")], &[]);
        tls.type_ = Some("kubernetes.io/tls".to_owned());
        let err = SecretConversion::for_secret(&tls, "ns", &config()).unwrap_err();
        assert!(err.to_string().contains("only Opaque Secrets"), "{err}");
        let big = vec![b'x'; MAX_SECRET_BYTES];
        let err = SecretConversion::for_secret(&secret(&[("big", &big)], &[]), "ns", &config())
            .unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn the_patch_leaves_only_the_arn() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/ns/db-AbCdEf";
        let original = secret(&[("password", b"p")], &[("user", "u")]);
        let mut object = serde_json::to_value(&original).unwrap();
        json_patch::patch(&mut object, &stored_reference(&original, arn, Some("v-1"))).unwrap();
        assert_eq!(
            object["data"],
            json!({"arn": base64::engine::general_purpose::STANDARD.encode(arn)})
        );
        assert!(object.get("stringData").is_none());
        assert_eq!(object["metadata"]["annotations"][spec::SECRET_ARN], arn);
        assert_eq!(object["metadata"]["annotations"][spec::VERSION_ID], "v-1");

        // What `kubectl apply` left in its annotation loses the values, not the rest.
        let mut applied = original.clone();
        let manifest = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "labels": {"team": "a"}},
            "data": {"password": "cA=="}, "stringData": {"user": "u"}});
        applied.metadata.annotations =
            Some([(LAST_APPLIED.to_owned(), manifest.to_string())].into());
        let mut object = serde_json::to_value(&applied).unwrap();
        json_patch::patch(&mut object, &stored_reference(&applied, arn, Some("v-2"))).unwrap();
        let kept: Value = serde_json::from_str(
            object["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            kept,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "db", "labels": {"team": "a"}}})
        );
        let converted: Secret = serde_json::from_value(object).unwrap();
        assert_eq!(
            SecretConversion::for_secret(&converted, "ns", &config()),
            Ok(SecretRequest::AlreadyConverted)
        );
    }
}
