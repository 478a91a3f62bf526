//! What admission costs a pod creation in each mode (issue 23): server-side dry-run creations
//! (`dryRun=All`: admission runs in full, nothing is stored) on the test control plane
//! (kube-apiserver 1.36.3 on loopback), for three variants of the same pod, the variants
//! interleaved (the order rotated every round) so that a drift of the machine hits all alike:
//!
//! - `baseline`: unannotated, in a namespace neither mode selects: the API server alone;
//! - `webhook`: annotated, in a namespace the chart's webhook selects (our webhook on the host,
//!   called over TLS at the chart's Service ClusterIP, routed to loopback);
//! - `policy`: annotated, in a namespace policy mode's bindings select (the
//!   MutatingAdmissionPolicy and ValidatingAdmissionPolicy `secret-inject admission-policy`
//!   prints, in process).
//!
//! Timing: the client's monotonic clock around one `create` call of a kube client that keeps
//! its connection (no process start per pod). Every response is checked: the two annotated
//! variants come back injected, the baseline not.
//!
//! Modes: `cargo bench --bench policy_admission` (cargo passes `--bench`) measures `PODS` pods
//! per variant (default 1000) after `WARMUP` unreported ones (default 20), prints median, p90
//! and p99 per variant and writes `bench/results/policy-admission.json` (or `$RESULTS`); in
//! `cargo test --all-targets` (no `--bench`) it is a smoke test: 3 pods per variant, each
//! checked, no file. `bench/policy-admission.sh` wraps it.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::controlplane::{Namespaces, Release, shared};
use common::policy::AdmissionPolicy;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";
const POLICY_LABEL: &str = "policy.secret-inject.bench/enabled";

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Baseline,
    Webhook,
    Policy,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Baseline, Variant::Webhook, Variant::Policy];

    fn key(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Webhook => "webhook",
            Variant::Policy => "policy",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Variant::Baseline => "unannotated, no injector",
            Variant::Webhook => "webhook mode (chart + our webhook over TLS)",
            Variant::Policy => "policy mode (MutatingAdmissionPolicy + VAP, in process)",
        }
    }
}

fn pod(annotated: bool) -> Pod {
    let annotations = if annotated {
        json!({"secrets.k8s.aws/secret-arn": ARN})
    } else {
        json!({})
    };
    serde_json::from_value(common::policy::restricted_pod(
        "generateName",
        "bench-",
        annotations,
    ))
    .unwrap()
}

fn injected(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == "secrets-init-container"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
            .unwrap_or(default)
    };
    let (pods, warmup) = if bench {
        (number("PODS", 1000), number("WARMUP", 20))
    } else {
        (3, 0)
    };
    assert!(pods >= 1, "PODS must be >= 1");

    let plane = shared();
    let baseline = Namespaces::new("bench-base", &[]);
    let webhook = Namespaces::new("bench-wh", &[]);
    let _release = Release::install(&webhook, &[]);
    let policy = Namespaces::new("bench-pol", &[(POLICY_LABEL, "enabled")]);
    // Installed and injecting in the policy namespace when this returns.
    let _policy =
        AdmissionPolicy::install(plane, "secret-inject-bench", POLICY_LABEL, &policy.app, &[]);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&plane.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    });
    let api = |ns: &str| Api::<Pod>::namespaced(client.clone(), ns);
    let apis = [api(&baseline.app), api(&webhook.app), api(&policy.app)];
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let (plain, annotated) = (pod(false), pod(true));
    let create = |variant: Variant| -> (f64, Pod) {
        let body = if variant == Variant::Baseline {
            &plain
        } else {
            &annotated
        };
        let api = &apis[variant as usize];
        let started = Instant::now();
        let result = runtime.block_on(api.create(&dry, body));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let created =
            result.unwrap_or_else(|e| panic!("{}: dry-run create failed: {e}", variant.key()));
        (ms, created)
    };
    let check = |variant: Variant, created: &Pod| {
        assert_eq!(
            injected(created),
            variant != Variant::Baseline,
            "{}: {:?}",
            variant.key(),
            created.spec
        );
    };

    let mut samples: [Vec<f64>; 3] = Default::default();
    for round in 0..warmup + pods {
        for k in 0..3 {
            let variant = Variant::ALL[(round + k) % 3];
            let (ms, created) = create(variant);
            check(variant, &created);
            if round >= warmup {
                samples[variant as usize].push(ms);
            }
        }
    }

    println!(
        "admission latency, {pods} server-side dry-run creations per variant ({warmup} warm-up)"
    );
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9}  what",
        "variant", "median ms", "p90 ms", "p99 ms", "mean ms"
    );
    let mut results = serde_json::Map::new();
    for variant in Variant::ALL {
        let mut sorted = samples[variant as usize].clone();
        sorted.sort_by(f64::total_cmp);
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        let (median, p90, p99) = (
            percentile(&sorted, 50.0),
            percentile(&sorted, 90.0),
            percentile(&sorted, 99.0),
        );
        println!(
            "{:<9} {median:>9.2} {p90:>9.2} {p99:>9.2} {mean:>9.2}  {}",
            variant.key(),
            variant.what()
        );
        results.insert(
            variant.key().to_owned(),
            json!({"what": variant.what(), "pods": sorted.len(), "median_ms": median,
                   "p90_ms": p90, "p99_ms": p99, "mean_ms": mean}),
        );
    }
    if bench {
        let path = std::env::var("RESULTS").unwrap_or_else(|_| {
            common::repo_root()
                .join("bench/results/policy-admission.json")
                .to_string_lossy()
                .into_owned()
        });
        let report: Value = json!({
            "kubernetes": common::controlplane::KUBERNETES_VERSION,
            "pods_per_variant": pods, "warmup_per_variant": warmup,
            "variants": results,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();
        println!("wrote {path}");
    }
    // The policy's cluster-scoped objects go with the control plane (this process's).
}
