//! The webhook's handler: any bytes in, a response or an error out, never a panic. A review
//! that is answered with a patch must carry it as base64 of a JSON Patch, and no answer is larger
//! than the patch limit allows, whatever the request (scripts/fuzz also runs this with a memory
//! limit, so work that grows faster than the request is a finding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_inject::mutate::MutationConfig;
use secret_inject::webhook::pods::review_pod;
use secret_inject::webhook::review::Outcome;

fuzz_target!(|data: &[u8]| {
    let config = MutationConfig::default();
    let reviewed = review_pod(data, &config);
    // The base64 of the largest patch, and room for the envelope, warnings and a message.
    let bound = config.limits.patch_bytes.div_ceil(3) * 4 + 64 * 1024;
    assert!(
        reviewed.body.len() <= bound,
        "a {} byte request got a {} byte answer",
        data.len(),
        reviewed.body.len()
    );
    match reviewed.outcome {
        Outcome::Invalid => assert_eq!(reviewed.status, 400),
        _ => {
            assert_eq!(reviewed.status, 200);
            let body: serde_json::Value = serde_json::from_slice(&reviewed.body).unwrap();
            if reviewed.outcome == Outcome::Mutated {
                assert!(body["response"]["patch"].is_string());
                assert_eq!(body["response"]["patchType"], "JSONPatch");
            }
        }
    }
});
