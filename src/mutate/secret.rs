//! The secret writer's pure half: what a labelled Kubernetes Secret stores in Secrets Manager,
//! and the JSON Patch that leaves only the ARN in Kubernetes. No I/O: the `/mutating-secrets`
//! endpoint calls AWS with what [`SecretConversion::for_secret`] computed, then
//! [`stored_reference`] with the ARN AWS returned.

use std::collections::BTreeMap;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use crate::spec;

/// The one key a converted Secret holds.
pub const ARN_KEY: &str = "arn";
/// Top-level key of the stored JSON listing the keys whose values are base64 (they were not
/// UTF-8); a consumer decodes exactly those.
pub const BASE64_KEYS: &str = "secrets.k8s.aws/base64-keys";
/// Largest value Secrets Manager stores.
pub const MAX_VALUE_BYTES: usize = 65_536;

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
    /// Idempotency token derived from the name and the value: a retried or re-invoked
    /// admission of the same content never makes a second version.
    pub client_request_token: String,
    /// Tags for CreateSecret.
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
        "Secret {name}: its value is {size} bytes as JSON, over the {MAX_VALUE_BYTES} bytes a \
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
        // The ARN this writer left: not part of the value (an update by `kubectl apply` keeps it
        // next to the new keys).
        let annotated_arn = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(spec::SECRET_ARN));
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
        if value.len() > MAX_VALUE_BYTES {
            return Err(SecretError::TooLarge {
                name: shown,
                size: value.len(),
            });
        }
        let name = format!(
            "{}/{namespace}/{object_name}",
            config.prefix.trim_end_matches('/')
        );
        if !spec::is_secret_name(&name) {
            return Err(SecretError::Name {
                name: shown,
                secret_name: name,
            });
        }
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("{name}\n{value}").as_bytes());
        let client_request_token: String = digest
            .as_ref()
            .iter()
            .take(24)
            .map(|b| format!("{b:02x}"))
            .collect();
        let tags = BTreeMap::from([
            ("kubernetes.io/cluster".to_owned(), config.cluster.clone()),
            ("kubernetes.io/namespace".to_owned(), namespace.to_owned()),
            ("kubernetes.io/name".to_owned(), object_name),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "secret-inject".to_owned(),
            ),
        ]);
        Ok(SecretRequest::Store(SecretConversion {
            name,
            value,
            client_request_token,
            tags,
        }))
    }
}

/// The patch that leaves only the ARN in the Secret: `data` replaced by `{arn}`, `stringData`
/// removed, the ARN annotation set (pods consume it with the pod annotations).
pub fn stored_reference(secret: &Secret, arn: &str) -> Patch {
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
    ops.push(match &secret.metadata.annotations {
        Some(_) => PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations", spec::SECRET_ARN]),
            value: Value::String(arn.to_owned()),
        }),
        None => PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: json!({ spec::SECRET_ARN: arn }),
        }),
    });
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
        assert_eq!(conversion.client_request_token.len(), 48);
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
    fn the_token_follows_the_content() {
        let a = store(&secret(&[("password", b"one")], &[]));
        let b = store(&secret(&[("password", b"one")], &[]));
        let c = store(&secret(&[("password", b"two")], &[]));
        assert_eq!(a.client_request_token, b.client_request_token);
        assert_ne!(a.client_request_token, c.client_request_token);
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
        let big = vec![b'x'; MAX_VALUE_BYTES];
        let err = SecretConversion::for_secret(&secret(&[("big", &big)], &[]), "ns", &config())
            .unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn the_patch_leaves_only_the_arn() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/ns/db-AbCdEf";
        let original = secret(&[("password", b"p")], &[("user", "u")]);
        let mut object = serde_json::to_value(&original).unwrap();
        json_patch::patch(&mut object, &stored_reference(&original, arn)).unwrap();
        assert_eq!(
            object["data"],
            json!({"arn": base64::engine::general_purpose::STANDARD.encode(arn)})
        );
        assert!(object.get("stringData").is_none());
        assert_eq!(object["metadata"]["annotations"][spec::SECRET_ARN], arn);
        let converted: Secret = serde_json::from_value(object).unwrap();
        assert_eq!(
            SecretConversion::for_secret(&converted, "ns", &config()),
            Ok(SecretRequest::AlreadyConverted)
        );
    }
}
