//! A small driver for `bench/review-instructions.sh`: reviews one AdmissionReview file N times
//! with the webhook's own `review_pod`, so `valgrind --tool=callgrind` can count the
//! instructions of a review (a figure that does not depend on the machine's noise).
//!
//! Usage: review_driver REQUEST.json N

use std::hint::black_box;

use secret_inject::mutate::MutationConfig;
use secret_inject::webhook::pods::review_pod;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: review_driver REQUEST.json N");
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
    let config = MutationConfig::default();
    let mut bytes = 0;
    for _ in 0..count {
        bytes += black_box(review_pod(black_box(&body), &config)).body.len();
    }
    println!("{count} reviews, {bytes} response bytes");
    std::process::ExitCode::SUCCESS
}
