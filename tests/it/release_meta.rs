//! What a release is made of, besides its supply-chain pieces (release.rs): one version everywhere
//! (Cargo.toml, the chart's `version` and `appVersion`, the image tag the chart renders, the
//! CHANGELOG's newest release), one licence everywhere (LICENSE, NOTICE, Cargo.toml, the image
//! label, the chart and its package), and the release workflow: linted by `actionlint`, and
//! made only of the repository's scripts (the ones these tests run against a loopback registry).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common;

/// SHA-256 of the Apache License 2.0 text as Debian ships it
/// (`/usr/share/common-licenses/Apache-2.0`, package base-files), the same bytes as
/// <https://www.apache.org/licenses/LICENSE-2.0.txt>.
const APACHE_2_0_SHA256: &str = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30";

fn read(path: &str) -> String {
    std::fs::read_to_string(common::repo_root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn yaml(text: &str) -> Value {
    yaml_serde::from_str(text).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn chart_version_app_version_and_default_image_follow_the_crate_version() {
    let version = secret_inject::VERSION;
    let chart = yaml(&read("charts/secret-inject/Chart.yaml"));
    assert_eq!(chart["version"], version, "Chart.yaml version");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");

    // `helm template` with no values at all: the webhook's image and the agent's image it
    // passes to the webhook are this version's image, as the binary's own default is.
    let chart_dir = common::repo_root().join("charts/secret-inject");
    let rendered = common::run_tool(
        "helm",
        &["template", "t", chart_dir.to_str().unwrap()],
        None,
    );
    let image = format!("ghcr.io/secret-inject/secret-inject:{version}");
    assert_eq!(secret_inject::contract::DEFAULT_IMAGE, image);
    let deployment = yaml_serde::Deserializer::from_slice(&rendered)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Deployment")
        .expect("helm template rendered no Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image.as_str(), "{container}");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let sidecar = args
        .iter()
        .position(|a| *a == "--sidecar-image")
        .map(|i| args[i + 1])
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--sidecar-image=")))
        .unwrap_or_else(|| panic!("no --sidecar-image in {args:?}"));
    assert_eq!(sidecar, image);
}

#[test]
fn changelog_names_this_version_as_the_newest_release_below_unreleased() {
    let changelog = read("CHANGELOG.md");
    let headings: Vec<&str> = changelog.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(headings.first(), Some(&"## [Unreleased]"), "{headings:?}");
    let release = headings
        .get(1)
        .expect("no release section under Unreleased");
    let prefix = format!("## [{}] - ", secret_inject::VERSION);
    let date = release
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("the newest release is `{release}`, not `{prefix}YYYY-MM-DD`"));
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&parts)
                .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_digit())),
        "{release}: the date is YYYY-MM-DD"
    );
}

#[test]
fn licence_is_apache_2_0_in_every_place_that_names_one() {
    let root = common::repo_root();
    let licence = std::fs::read(root.join("LICENSE")).unwrap();
    assert_eq!(
        sha256(&licence),
        APACHE_2_0_SHA256,
        "LICENSE is not the Apache-2.0 text"
    );
    let notice = std::fs::read(root.join("NOTICE")).unwrap();
    assert!(String::from_utf8_lossy(&notice).contains("Copyright"));
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0", "Cargo.toml");
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("org.opencontainers.image.licenses=\"Apache-2.0\""),
        "the Dockerfile's licence label (scripts/build-image reads its labels from there)"
    );
    let chart = yaml(&read("charts/secret-inject/Chart.yaml"));
    assert_eq!(chart["annotations"]["artifacthub.io/license"], "Apache-2.0");
    for file in ["LICENSE", "NOTICE"] {
        assert_eq!(
            std::fs::read(root.join("charts/secret-inject").join(file)).unwrap(),
            std::fs::read(root.join(file)).unwrap(),
            "charts/secret-inject/{file} differs from {file}"
        );
    }

    // And `helm package` ships them.
    let out = tempfile::tempdir().unwrap();
    let chart_dir = root.join("charts/secret-inject");
    common::run_tool(
        "helm",
        &[
            "package",
            chart_dir.to_str().unwrap(),
            "--destination",
            out.path().to_str().unwrap(),
        ],
        None,
    );
    let package = out
        .path()
        .join(format!("secret-inject-{}.tgz", secret_inject::VERSION));
    let unpacked = out.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&package)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("tar not found on PATH (apt-get install tar)");
    assert!(status.success(), "tar -xzf {}", package.display());
    for file in ["LICENSE", "NOTICE"] {
        assert_eq!(
            std::fs::read(unpacked.join("secret-inject").join(file))
                .unwrap_or_else(|e| panic!("{file} is not in the chart package: {e}")),
            std::fs::read(root.join(file)).unwrap()
        );
    }
}

/// actionlint, as scripts/build-release-tools builds it from its Go module.
fn actionlint() -> PathBuf {
    let path = common::repo_root().join(".tools/release/current/bin/actionlint");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-release-tools (scripts/test does) to build actionlint \
         from the Go module pinned in tests/release/go.mod",
        path.display()
    );
    path
}

fn workflows() -> Vec<PathBuf> {
    let dir = common::repo_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_workflow_passes_actionlint() {
    let files = workflows();
    assert!(
        files.iter().any(|f| f.ends_with("release.yml")),
        "{files:?}"
    );
    let output = Command::new(actionlint())
        .args(["-no-color", "-oneline"])
        .args(&files)
        .current_dir(common::repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "actionlint: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // It is a linter that finds something: a step with a typo in an expression fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.shaa }}\n",
    )
    .unwrap();
    let output = Command::new(actionlint())
        .args(["-no-color", "-oneline"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "actionlint passed a bad workflow"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("shaa"));
}

/// The commands of a `run:` script: lines joined at trailing backslashes, comments and blank
/// lines out, split at `&&`, `||`, `;` and `|`.
fn commands(script: &str) -> Vec<String> {
    let joined = script.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|l| {
            l.split("&&")
                .flat_map(|p| p.split("||"))
                .flat_map(|p| p.split(';'))
                .flat_map(|p| p.split('|'))
                .map(|p| p.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn the_release_workflow_only_runs_the_repositorys_scripts() {
    let root = common::repo_root();
    let workflow = yaml(&read(".github/workflows/release.yml"));
    assert_eq!(
        workflow["on"],
        serde_json::json!({"push": {"tags": ["v*"]}}),
        "triggered by a v* tag, nothing else"
    );
    assert_eq!(
        workflow["permissions"],
        serde_json::json!({"contents": "read"})
    );
    let jobs = workflow["jobs"].as_object().unwrap();
    assert!(!jobs.is_empty());
    let mut called = std::collections::BTreeSet::new();
    for (name, job) in jobs {
        // Keyless signing needs the job's OIDC token; pushing needs packages: write.
        assert_eq!(
            job["permissions"],
            serde_json::json!({"contents": "read", "packages": "write", "id-token": "write"}),
            "job {name}"
        );
        for step in job["steps"].as_array().unwrap() {
            if let Some(action) = step["uses"].as_str() {
                // The checkout is the one action; pinned by commit, not by a movable tag.
                let (repo, commit) = action.split_once('@').unwrap();
                assert_eq!(repo, "actions/checkout", "job {name}: {action}");
                assert!(
                    commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{action} is not pinned by commit"
                );
                continue;
            }
            let script = step["run"]
                .as_str()
                .unwrap_or_else(|| panic!("job {name}: a step neither uses nor runs: {step}"));
            for command in commands(script) {
                let program = command.split_whitespace().next().unwrap();
                assert!(
                    program.starts_with("scripts/") && !program.contains(".."),
                    "job {name}: `{command}` does not call one of the repository's scripts"
                );
                let path = root.join(program);
                assert!(
                    is_executable(&path),
                    "job {name}: {program} is not an executable file of the repository"
                );
                called.insert(program.to_owned());
            }
        }
    }
    // What a release is: build both architectures, the index, the SBOM, sign, push the image
    // and the chart.
    for script in [
        "scripts/build-release",
        "scripts/build-image",
        "scripts/sbom",
        "scripts/sign-image",
        "scripts/push-image",
        "scripts/push-chart",
    ] {
        assert!(
            called.contains(script),
            "the release never calls {script}: {called:?}"
        );
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[test]
fn run_steps_are_split_into_their_commands() {
    assert_eq!(
        commands(
            "scripts/a x \\\n  y && scripts/b | scripts/c\n# note\n\nscripts/d; scripts/e || scripts/f"
        ),
        [
            "scripts/a x    y",
            "scripts/b",
            "scripts/c",
            "scripts/d",
            "scripts/e",
            "scripts/f"
        ]
    );
}
