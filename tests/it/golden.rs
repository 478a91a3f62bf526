//! Golden AdmissionReview fixtures: `tests/golden/<case>/request.json` in, the wire response
//! compared as a JSON value with `response.json` (its base64 patch shown decoded under
//! `patchDecoded`). Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test --test
//! golden` and review the diff.

use std::path::Path;

use base64::Engine as _;
use secret_inject::mutate::MutationConfig;
use secret_inject::webhook::pods::review_pod;
use secret_inject::webhook::review::Outcome;
use serde_json::Value;

use crate::common;

fn observe(request: &[u8]) -> (Outcome, Value) {
    let reviewed = review_pod(request, &MutationConfig::default());
    assert_eq!(
        reviewed.status,
        200,
        "{}",
        String::from_utf8_lossy(&reviewed.body)
    );
    let mut wire: Value = serde_json::from_slice(&reviewed.body).unwrap();
    let response = wire["response"].as_object_mut().unwrap();
    if let Some(patch) = response.remove("patch") {
        let encoded = patch
            .as_str()
            .expect("response.patch must be a base64 string on the wire");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        response.insert(
            "patchDecoded".into(),
            serde_json::from_slice(&decoded).unwrap(),
        );
    }
    (reviewed.outcome, wire)
}

#[test]
fn golden_reviews() {
    let dir = common::repo_root().join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "golden cases are missing from {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let request = std::fs::read(case.join("request.json")).unwrap();
        let (outcome, observed) = observe(&request);
        let expected_path = case.join("response.json");
        if update {
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&observed).unwrap() + "\n",
            )
            .unwrap();
        }
        let expected: Value = read_json(&expected_path);
        if expected != observed {
            failures.push(format!(
                "{name}: response differs\nexpected: {expected:#}\nobserved: {observed:#}"
            ));
        }
        // The uid is always echoed.
        let sent: Value = serde_json::from_slice(&request).unwrap();
        assert_eq!(
            observed["response"]["uid"], sent["request"]["uid"],
            "{name}"
        );
        check_outcome_matches_name(&name, outcome, &observed);
        if outcome == Outcome::Mutated {
            second_pass_is_a_no_op(&name, &sent, &observed);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test --test it golden",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn check_outcome_matches_name(name: &str, outcome: Outcome, observed: &Value) {
    let response = &observed["response"];
    if name.starts_with("denied-") {
        assert_eq!(outcome, Outcome::Denied, "{name}");
        assert_eq!(response["allowed"], false, "{name}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("secrets.k8s.aws/") || message.contains("spec."),
            "{name}: {message}"
        );
        assert!(response.get("patchDecoded").is_none());
    } else {
        assert_eq!(response["allowed"], true, "{name}");
    }
    if [
        "not-annotated",
        "opted-out",
        "update-ignored",
        "deployment-allowed-unchanged",
    ]
    .contains(&name)
    {
        assert_eq!(outcome, Outcome::Skipped, "{name}");
        assert!(response.get("patchDecoded").is_none(), "{name}");
        assert!(response.get("patchType").is_none(), "{name}");
    }
    if outcome == Outcome::Mutated {
        assert_eq!(response["patchType"], "JSONPatch", "{name}");
    }
}

/// Apply the patch to the request's object and review the result again: no patch.
fn second_pass_is_a_no_op(name: &str, sent: &Value, observed: &Value) {
    let patch: json_patch::Patch =
        serde_json::from_value(observed["response"]["patchDecoded"].clone()).unwrap();
    let mut again = sent.clone();
    json_patch::patch(&mut again["request"]["object"], &patch).unwrap();
    let (outcome, second) = observe(&serde_json::to_vec(&again).unwrap());
    assert_eq!(outcome, Outcome::Skipped, "{name}: second pass: {second:#}");
}
