//! The mutation's CPU cost beside the serde_json round trip of the same AdmissionReview.
//!
//! Target: `mutate` ≤ 2× `serde_json round trip`. Run with `cargo bench --bench mutation`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kube_core::admission::AdmissionReview;
use secret_inject::mutate::{MutationConfig, mutate};
use secret_inject::webhook::pods::review_pod;

/// A realistic two-container pod (app + istio-proxy, an istio-init, IRSA env, the
/// service-account token volume), as the API server sends it.
fn review() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/istio-native-sidecar/request.json"
    );
    std::fs::read(path).expect("golden fixture")
}

fn benches(c: &mut Criterion) {
    let body = review();
    let config = MutationConfig::default();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let pod = secret_inject::mutate::Pod::from_value(&value["request"]["object"]).unwrap();
    let spec = pod.spec.clone().unwrap();
    assert!(
        mutate(&pod.metadata, &spec, &config)
            .unwrap()
            .patch
            .is_some()
    );

    let mut group = c.benchmark_group("admission");
    group.bench_function("serde_json round trip (Value)", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(serde_json::to_vec(&value).unwrap())
        })
    });
    group.bench_function("serde_json round trip (typed AdmissionReview<Pod>)", |b| {
        b.iter(|| {
            let review: AdmissionReview<Pod> = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(serde_json::to_vec(&review).unwrap())
        })
    });
    group.bench_function("mutate", |b| {
        b.iter(|| black_box(mutate(black_box(&pod.metadata), black_box(&spec), &config).unwrap()))
    });
    group.bench_function("review_pod (bytes in, bytes out)", |b| {
        b.iter(|| black_box(review_pod(black_box(&body), &config)))
    });
    group.finish();
}

criterion_group!(mutation, benches);
criterion_main!(mutation);
