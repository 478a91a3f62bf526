//! The annotation grammar on arbitrary annotations: parsed or refused, never a panic; what it
//! accepts, the mutation turns into a patch that applies to the pod.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use secret_inject::mutate::{MutationConfig, mutate};
use secret_inject::spec::{self, InjectionSpec};

/// Keys the fuzzer can name with one byte, so it reaches the grammar quickly.
const KEYS: &[&str] = &[
    spec::INJECTOR_WEBHOOK,
    spec::SECRET_ARN,
    spec::MOUNT_PATH,
    spec::SECRET_FILENAME,
    spec::INIT_CONTAINER_POSITION,
    spec::STATUS,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Lines of `K=value`, K a key's index or a literal key.
    let mut annotations = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = match key.parse::<usize>() {
            Ok(i) => KEYS[i % KEYS.len()].to_owned(),
            Err(_) => key.to_owned(),
        };
        annotations.insert(key, value.to_owned());
    }
    let Ok(_) = InjectionSpec::from_annotations(Some(&annotations)) else {
        return;
    };
    let pod: k8s_openapi_pod::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap();
    let spec = pod.spec.unwrap();
    if let Ok(Some(patch)) = mutate(
        &(&pod.metadata).into(),
        &(&spec).into(),
        &MutationConfig::default(),
    )
    .map(|mutation| mutation.patch)
    {
        let mut object = serde_json::json!({"metadata": pod.metadata, "spec": spec});
        json_patch::patch(&mut object, &patch.to_patch()).expect("the patch applies");
    }
});

mod k8s_openapi_pod {
    pub use k8s_openapi::api::core::v1::Pod;
}
