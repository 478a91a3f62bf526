//! A small driver for `bench/review-instructions.sh`: reviews one AdmissionReview file N times
//! with the webhook's own `review_pod`, so `valgrind --tool=callgrind` can count the
//! instructions of a review (a figure that does not depend on the machine's noise).
//!
//! Usage: review_driver REQUEST.json N [--floor]
//!
//! `--floor` does instead what `bench/floor_server.rs` does with a review (parse it as a
//! `serde_json::Value`, answer allowed with its uid): the JSON work no webhook can avoid.

use std::hint::black_box;

use secret_inject::mutate::MutationConfig;
use secret_inject::webhook::pods::review_pod;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: review_driver REQUEST.json N [--floor]");
        return std::process::ExitCode::from(2);
    };
    let Ok(body) = std::fs::read(&path) else {
        eprintln!("cannot read {path}");
        return std::process::ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u32>() else {
        eprintln!("N must be a whole number");
        return std::process::ExitCode::from(2);
    };
    let floor = args.next().as_deref() == Some("--floor");
    let config = MutationConfig::default();
    let mut bytes = 0;
    for _ in 0..count {
        bytes += if floor {
            let review: serde_json::Value =
                serde_json::from_slice(black_box(&body)).unwrap_or_default();
            let answer = serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": true},
            });
            black_box(serde_json::to_vec(&answer).unwrap_or_default()).len()
        } else {
            black_box(review_pod(black_box(&body), &config)).body.len()
        };
    }
    println!("{count} reviews, {bytes} response bytes");
    std::process::ExitCode::SUCCESS
}
