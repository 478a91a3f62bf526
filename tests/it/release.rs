//! The release's supply-chain pieces, against a real registry on loopback (issue 21):
//!
//! - `scripts/sbom` writes a CycloneDX SBOM of the crates compiled into the release binary:
//!   held to Cargo.lock (versions, checksums) and to an independent reading of the same graph
//!   (`cargo metadata --filter-platform`, normal edges only); no dev-dependency, and features as
//!   the build enables them.
//! - `scripts/sign-image` signs our image by digest with a key the test generates and attaches
//!   the SBOM as a signed attestation; the real `cosign` (built from its Go module by
//!   `scripts/build-release-tools`) verifies it, refuses another key, and refuses the tag once a
//!   different image is pushed to it; the SBOM comes back from the registry.
//! - `scripts/push-chart` pushes the chart as an OCI artifact; `helm install oci://...` of it on
//!   the test control plane with `image.digest` stores a Deployment whose images are pinned by
//!   digest.
//!
//! cosign runs with a proxy that does not exist for everything but loopback, so a call to the
//! internet (Rekor, Fulcio, TUF) fails instead of leaving the machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

use crate::arm64::release_binary;
use crate::common::controlplane::Namespaces;
use crate::common::node::chart_app_version;
use crate::common::registry::Registry;
use crate::common::repo_root;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A script of the repository, as a command.
fn script(name: &str) -> Command {
    Command::new(repo_root().join("scripts").join(name))
}

/// cosign, built by `scripts/build-release-tools` (which `scripts/test` runs).
fn cosign_path() -> PathBuf {
    let path = repo_root().join(".tools/release/current/bin/cosign");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test (it runs scripts/build-release-tools), or \
         scripts/build-release-tools alone",
        path.display()
    );
    path
}

/// The Docker config (registry logins) of a test's `home`: what scripts/registry-login writes to and
/// push-image, cosign and helm read.
fn docker_config(home: &Path) -> PathBuf {
    home.join(".docker")
}

/// `scripts/registry-login REGISTRY USER` with the password on stdin, into `home`'s Docker config.
fn registry_login(home: &Path, registry: &str, user: &str, password: &str) {
    use std::io::Write as _;
    let mut child = script("registry-login")
        .args([registry, user])
        .env("DOCKER_CONFIG", docker_config(home))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "scripts/registry-login: {}",
        describe(&output)
    );
}

/// Environment for cosign: its own home, Docker config and TUF cache, and every non-loopback connection sent to
/// a proxy that refuses it (Go skips the proxy for loopback addresses), so nothing leaves the
/// machine.
fn offline(command: &mut Command, home: &Path) {
    command
        .env("HOME", home)
        .env("DOCKER_CONFIG", docker_config(home))
        .env("TUF_ROOT", home.join("tuf"))
        .env("COSIGN_PASSWORD", "")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
}

fn cosign(home: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(cosign_path());
    command.args(args).current_dir(home);
    offline(&mut command, home);
    command.output().unwrap()
}

/// `cosign generate-key-pair` in `dir` (empty password): (private key, public key).
fn key_pair(home: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut command = Command::new(cosign_path());
    command.arg("generate-key-pair").current_dir(dir);
    offline(&mut command, home);
    run_ok(&mut command, "cosign generate-key-pair");
    let (key, public) = (dir.join("cosign.key"), dir.join("cosign.pub"));
    assert!(
        key.is_file() && public.is_file(),
        "no key pair in {}",
        dir.display()
    );
    (key, public)
}

/// `scripts/sbom --target TARGET --out FILE`, parsed.
fn sbom(out: &Path, target: &str) -> Value {
    run_ok(
        script("sbom").args(["--target", target, "--out"]).arg(out),
        "scripts/sbom",
    );
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// Cargo.lock's packages: name -> [(version, checksum)].
fn cargo_lock() -> BTreeMap<String, Vec<(String, String)>> {
    let text = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let mut packages: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        packages
            .entry(field("name"))
            .or_default()
            .push((field("version"), field("checksum")));
    }
    packages
}

/// `cargo metadata --filter-platform TARGET`: an independent reading of the graph scripts/sbom
/// takes from `cargo tree`.
fn metadata(target: &str) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let stdout = run_ok(
        Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--locked",
                "--filter-platform",
                target,
            ])
            .current_dir(repo_root()),
        "cargo metadata",
    );
    serde_json::from_str(&stdout).unwrap()
}

/// A package of cargo metadata as "name@version".
fn package_key(package: &Value) -> String {
    format!(
        "{}@{}",
        package["name"].as_str().unwrap(),
        package["version"].as_str().unwrap()
    )
}

/// The normal-dependency edges of cargo metadata's resolve, reachable from the root:
/// child "name@version" -> parents' package ids. (That resolve does not separate features by
/// build: optional dependencies that only dev-dependencies' features turn on are in it.)
fn metadata_normal_parents(metadata: &Value) -> BTreeMap<String, BTreeSet<&str>> {
    let packages: BTreeMap<&str, String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), package_key(p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = metadata["resolve"]["root"].as_str().unwrap();
    let (mut parents, mut seen, mut todo) = (BTreeMap::new(), BTreeSet::new(), vec![root]);
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let child = dep["pkg"].as_str().unwrap();
            if normal {
                parents
                    .entry(packages[child].clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(id);
                if seen.insert(child) {
                    todo.push(child);
                }
            }
        }
    }
    parents
}

/// Whether a feature list entry of a package turns on its optional dependency `key`.
fn enables(value: &str, key: &str) -> bool {
    value == key || value == format!("dep:{key}") || value.starts_with(&format!("{key}/"))
}

fn components(bom: &Value) -> BTreeMap<String, &Value> {
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                format!(
                    "{}@{}",
                    c["name"].as_str().unwrap(),
                    c["version"].as_str().unwrap()
                ),
                c,
            )
        })
        .collect()
}

fn features(component: &Value) -> BTreeSet<String> {
    component["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cargo:features")
        .map(|p| {
            p["value"]
                .as_str()
                .unwrap()
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sbom_lists_the_crates_compiled_into_the_release_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bom = sbom(&dir.path().join("sbom.json"), TARGET);
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    let root = &bom["metadata"]["component"];
    assert_eq!(root["name"], "secret-inject");
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        root["properties"][0],
        serde_json::json!({"name": "cargo:target", "value": TARGET})
    );

    // The TLS and AWS SDK crates (and the runtime) at the versions and checksums of Cargo.lock.
    let lock = cargo_lock();
    let listed = components(&bom);
    for name in [
        "rustls",
        "ring",
        "tokio-rustls",
        "aws-sdk-secretsmanager",
        "aws-sdk-ssm",
        "aws-sdk-sts",
        "aws-config",
        "aws-sigv4",
        "aws-smithy-runtime",
        "aws-smithy-runtime-api",
        "aws-smithy-http-client",
        "aws-smithy-types",
        "tokio",
        "hyper",
        "kube",
    ] {
        let versions = lock
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in Cargo.lock"));
        let found: Vec<_> = versions
            .iter()
            .filter(|(version, _)| listed.contains_key(&format!("{name}@{version}")))
            .collect();
        assert!(
            !found.is_empty(),
            "the SBOM lists no {name} at a Cargo.lock version ({versions:?})"
        );
        for (version, checksum) in found {
            let component = listed[&format!("{name}@{version}")];
            assert_eq!(component["purl"], format!("pkg:cargo/{name}@{version}"));
            assert_eq!(
                component["hashes"],
                serde_json::json!([{"alg": "SHA-256", "content": checksum}]),
                "{name} {version}: the SBOM's hash is not Cargo.lock's checksum"
            );
        }
    }
    // Every component is a Cargo.lock package at that version.
    for key in listed.keys() {
        let (name, version) = key.split_once('@').unwrap();
        assert!(
            lock.get(name)
                .is_some_and(|v| v.iter().any(|(locked, _)| locked == version)),
            "{key} is in the SBOM but not in Cargo.lock"
        );
    }

    // Dev-dependencies are in Cargo.lock (so their absence here means something) but not in the
    // binary; neither are build scripts' helpers or other platforms' crates.
    for dev_only in ["proptest", "tempfile", "criterion"] {
        assert!(lock.contains_key(dev_only), "{dev_only} left Cargo.lock");
        assert!(
            !listed
                .keys()
                .any(|k| k.starts_with(&format!("{dev_only}@"))),
            "the SBOM lists the dev-dependency {dev_only}"
        );
    }
    assert!(
        !listed.keys().any(|k| k.starts_with("windows-sys@")),
        "the SBOM lists windows-sys for {TARGET}"
    );

    // The features the build enables: tokio's `process` comes only with the dev-dependencies.
    let tokio = listed
        .iter()
        .find(|(k, _)| k.starts_with("tokio@"))
        .unwrap()
        .1;
    let tokio_features = features(tokio);
    for enabled in ["rt-multi-thread", "net", "signal", "fs"] {
        assert!(
            tokio_features.contains(enabled),
            "tokio lacks {enabled}: {tokio_features:?}"
        );
    }
    assert!(
        !tokio_features.contains("process"),
        "tokio's `process` feature (dev-dependencies only) is in the SBOM: {tokio_features:?}"
    );
    assert!(features(listed[&format!("rustls@{}", lock["rustls"][0].0)]).contains("ring"));

    // The same graph, read independently from cargo metadata's resolve. Every listed crate is a
    // normal dependency there. Its resolve also has crates behind optional dependencies that
    // only dev-dependencies' features turn on (criterion's `half` turns on zerocopy's `derive`):
    // each of those must hang off a listed crate only by an optional dependency that none of the
    // features the SBOM lists for that crate turns on, or off another such crate.
    let metadata = metadata(TARGET);
    let parents = metadata_normal_parents(&metadata);
    let actual: BTreeSet<String> = listed.keys().cloned().collect();
    let expected: BTreeSet<String> = parents.keys().cloned().collect();
    assert_eq!(
        actual.difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the SBOM, not a normal dependency in cargo metadata"
    );
    let by_id: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let root_id = metadata["resolve"]["root"].as_str().unwrap();
    let left_out: Vec<&String> = expected.difference(&actual).collect();
    for crate_key in &left_out {
        let name = crate_key.split_once('@').unwrap().0;
        for parent_id in &parents[*crate_key] {
            let parent = by_id[parent_id];
            let parent_key = package_key(parent);
            if left_out.contains(&&parent_key) {
                continue;
            }
            let listed_features = if *parent_id == root_id {
                BTreeSet::new()
            } else {
                features(listed.get(&parent_key).unwrap_or_else(|| {
                    panic!("{parent_key} (a parent of {crate_key}) is neither listed nor left out")
                }))
            };
            let declared: Vec<&Value> = parent["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                // `cfg(any())` is never true (zerocopy declares its derive crate so, to pin it).
                .filter(|d| d["name"] == name && d["kind"].is_null() && d["target"] != "cfg(any())")
                .collect();
            assert!(
                !declared.is_empty() && declared.iter().all(|d| d["optional"] == true),
                "{crate_key} is a required dependency of the listed {parent_key}, but the SBOM \
                 leaves it out"
            );
            for declaration in declared {
                let key = declaration["rename"].as_str().unwrap_or(name);
                for (feature, values) in parent["features"].as_object().unwrap() {
                    let turns_on = values
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| enables(v.as_str().unwrap(), key));
                    assert!(
                        !(turns_on && listed_features.contains(feature)),
                        "{parent_key}'s feature {feature} (listed in the SBOM) turns on \
                         {crate_key}, which the SBOM leaves out"
                    );
                }
            }
        }
    }
    assert!(
        left_out.iter().any(|k| k.starts_with("zerocopy-derive@")),
        "expected cargo metadata's resolve to hold zerocopy-derive (turned on by a dev-dependency \
         only), which the release build does not compile: {left_out:?}"
    );

    // The dependency graph names only listed components, and the root depends on ours.
    let refs: BTreeSet<&str> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .chain([root["bom-ref"].as_str().unwrap()])
        .collect();
    for entry in bom["dependencies"].as_array().unwrap() {
        assert!(refs.contains(entry["ref"].as_str().unwrap()), "{entry}");
        for target in entry["dependsOn"].as_array().unwrap() {
            assert!(refs.contains(target.as_str().unwrap()), "{entry}");
        }
    }
    let root_deps = bom["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ref"] == root["bom-ref"])
        .expect("the root has no dependencies entry");
    assert!(
        root_deps["dependsOn"].as_array().unwrap().iter().any(|d| d
            .as_str()
            .unwrap()
            .starts_with("pkg:cargo/aws-sdk-secretsmanager@")),
        "{root_deps}"
    );

    // Deterministic: the same inputs give the same bytes.
    let again = dir.path().join("again.json");
    sbom(&again, TARGET);
    assert_eq!(
        std::fs::read(dir.path().join("sbom.json")).unwrap(),
        std::fs::read(&again).unwrap(),
        "two runs of scripts/sbom differ"
    );
}

/// Build `image` with scripts/build-image: the OCI image layout's directory.
fn build_layout(dir: &Path, image: &str, extra: &[&str]) -> PathBuf {
    let layout = dir.join(format!("layout-{image}"));
    run_ok(
        script("build-image")
            .arg(image)
            .arg("--out")
            .arg(&layout)
            .args(["--compression", "none"])
            .args(extra),
        &format!("scripts/build-image {image}"),
    );
    layout
}

/// `scripts/push-image LAYOUT REFERENCE` with the registry logins of `home`.
fn push_image(layout: &Path, reference: &str, home: &Path) -> Output {
    script("push-image")
        .arg(layout)
        .arg(reference)
        .env("DOCKER_CONFIG", docker_config(home))
        .output()
        .unwrap()
}

/// Build `image` with scripts/build-image and push it to `reference` with the registry logins of
/// `home`: the pushed `repo@digest`.
fn build_and_push(dir: &Path, image: &str, extra: &[&str], reference: &str, home: &Path) -> String {
    let layout = build_layout(dir, image, extra);
    let pushed = push_image(&layout, reference, home);
    assert!(
        pushed.status.success(),
        "scripts/push-image {reference}: {}",
        describe(&pushed)
    );
    String::from_utf8(pushed.stdout).unwrap().trim().to_owned()
}

/// `cosign verify-attestation --type cyclonedx` of `reference` with `public`: the verified in-toto
/// statement.
fn attested_sbom(home: &Path, public: &str, reference: &str) -> Value {
    let attested = cosign(
        home,
        &[
            "verify-attestation",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--type",
            "cyclonedx",
            reference,
        ],
    );
    assert!(
        attested.status.success(),
        "cosign verify-attestation {reference}: {}",
        describe(&attested)
    );
    let envelope: Value = serde_json::from_slice(
        String::from_utf8_lossy(&attested.stdout)
            .lines()
            .find(|l| !l.trim().is_empty())
            .expect("verify-attestation printed no envelope")
            .as_bytes(),
    )
    .unwrap();
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(statement["predicateType"], "https://cyclonedx.org/bom");
    statement
}

/// The sha256 digest an in-toto statement is about.
fn subject_digest(statement: &Value) -> String {
    format!(
        "sha256:{}",
        statement["subject"][0]["digest"]["sha256"]
            .as_str()
            .unwrap()
    )
}

/// The digest part of `repo@sha256:...`.
fn digest_of(pinned: &str) -> &str {
    pinned.split_once('@').unwrap().1
}

/// What a release does (.github/workflows/release.yml), against a registry that asks for a login
/// (htpasswd, as ghcr.io asks for the job's token): scripts/registry-login, then push-image,
/// sign-image (cosign) and push-chart (helm) with the login it stored.
#[test]
fn the_signed_two_platform_index_verifies_with_its_key_and_each_platform_carries_its_sbom() {
    let (user, password) = ("release-bot", "registry-password-never-printed");
    let registry = Registry::start_with_login(user, password);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let tag = format!("{}/secret-inject:{}", registry.address, chart_app_version());

    // Without a login the registry refuses, and scripts/push-image says how to log in.
    let pause = build_layout(dir.path(), "pause", &[]);
    let refused = push_image(&pause, &tag, &home);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(&format!("{} asks for a login", registry.address))
            && message.contains(&format!("scripts/registry-login {}", registry.address)),
        "{}",
        describe(&refused)
    );
    registry_login(&home, &registry.address, user, password);

    // What a release publishes: the two-platform index of the release binaries
    // (scripts/build-release, run by scripts/test), signed by the index's digest, and each
    // platform's SBOM attached to that platform's manifest.
    let (amd64, arm64) = (
        format!("amd64={}", release_binary("amd64").display()),
        format!("arm64={}", release_binary("arm64").display()),
    );
    let image = build_and_push(
        dir.path(),
        "secret-inject",
        &["--binary", &amd64, "--binary", &arm64],
        &tag,
        &home,
    );
    let digest = digest_of(&image).to_owned();
    let repository = image.split_once('@').unwrap().0.to_owned();
    let layout = dir.path().join("layout-secret-inject");
    let index: Value = serde_json::from_slice(&crate::image::blob(&layout, &digest)).unwrap();
    let platform_digest = |arch: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("the index has no linux/{arch}: {index}"))["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sboms = [
        ("amd64", TARGET, dir.path().join("sbom-amd64.json")),
        (
            "arm64",
            "aarch64-unknown-linux-gnu",
            dir.path().join("sbom-arm64.json"),
        ),
    ];
    let boms: Vec<Value> = sboms
        .iter()
        .map(|(_, target, path)| sbom(path, target))
        .collect();
    let (key, public) = key_pair(&home, &dir.path().join("keys"));
    let (_, other_public) = key_pair(&home, &dir.path().join("other-keys"));

    // A platform the index lacks is refused before anything is signed.
    let mut missing = script("sign-image");
    missing
        .arg(&image)
        .arg("--key")
        .arg(&key)
        .arg("--sbom")
        .arg(format!("linux/s390x={}", sboms[0].2.display()));
    offline(&mut missing, &home);
    let missing = missing.output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", describe(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(
            "has no linux/s390x manifest, or several (it has: linux/amd64 linux/arm64/v8)"
        ),
        "{}",
        describe(&missing)
    );

    let mut sign = script("sign-image");
    sign.arg(&image).arg("--key").arg(&key);
    for (arch, _, path) in &sboms {
        sign.arg("--sbom")
            .arg(format!("linux/{arch}={}", path.display()));
    }
    offline(&mut sign, &home);
    let signed = sign.output().unwrap();
    assert!(
        signed.status.success(),
        "scripts/sign-image: {}",
        describe(&signed)
    );
    for output in [&signed.stdout, &signed.stderr] {
        assert!(!String::from_utf8_lossy(output).contains(password));
    }

    // cosign verify of the tag: the signature is over the pushed digest.
    let public = public.to_str().unwrap();
    let verify = |reference: &str, public: &str| {
        cosign(
            &home,
            &[
                "verify",
                "--key",
                public,
                "--insecure-ignore-tlog=true",
                "--allow-http-registry",
                reference,
            ],
        )
    };
    let verified = verify(&tag, public);
    assert!(
        verified.status.success(),
        "cosign verify {tag}: {}",
        describe(&verified)
    );
    let claims: Value = serde_json::from_slice(&verified.stdout).unwrap();
    let claims = claims.as_array().unwrap();
    assert!(
        claims
            .iter()
            .any(|c| c["critical"]["type"] == "https://sigstore.dev/cosign/sign/v1"),
        "no signature among {claims:?}"
    );
    for claim in claims {
        assert_eq!(
            claim["critical"]["image"]["docker-manifest-digest"], digest,
            "{claim}"
        );
    }
    // Another key does not verify it.
    let wrong = verify(&tag, other_public.to_str().unwrap());
    assert!(
        !wrong.status.success(),
        "verified with another key: {}",
        describe(&wrong)
    );

    // Each platform's manifest (what a node pulling one platform gets) is signed (--recursive)
    // and carries its own SBOM: a verified in-toto statement about that digest whose predicate
    // is what scripts/sbom wrote for that platform's target.
    for ((arch, target, _), bom) in sboms.iter().zip(&boms) {
        let platform = format!("{repository}@{}", platform_digest(arch));
        let verified = verify(&platform, public);
        assert!(
            verified.status.success(),
            "cosign verify {platform} (linux/{arch}): {}",
            describe(&verified)
        );
        let statement = attested_sbom(&home, public, &platform);
        assert_eq!(subject_digest(&statement), platform_digest(arch), "{arch}");
        assert_eq!(
            statement["predicate"]["metadata"]["component"]["properties"][0]["value"],
            *target
        );
        assert_eq!(
            &statement["predicate"], bom,
            "the SBOM attested for linux/{arch} is not scripts/sbom's for {target}"
        );
    }
    assert_ne!(boms[0], boms[1], "the two platforms' SBOMs are the same");

    // Someone pushes a different image to the same tag: the tag no longer verifies, while the
    // signed digest still does.
    let moved = push_image(&pause, &tag, &home);
    assert!(moved.status.success(), "{}", describe(&moved));
    let moved = String::from_utf8(moved.stdout).unwrap().trim().to_owned();
    assert_ne!(digest_of(&moved), digest);
    let tampered = verify(&tag, public);
    assert!(
        !tampered.status.success(),
        "cosign verify passed for a tag that now names another image: {}",
        describe(&tampered)
    );
    let by_digest = verify(&image, public);
    assert!(by_digest.status.success(), "{}", describe(&by_digest));

    // A single-platform image takes its SBOM with plain `--sbom FILE`, attached to it.
    let mut sign = script("sign-image");
    sign.arg(&moved)
        .arg("--key")
        .arg(&key)
        .arg("--sbom")
        .arg(&sboms[0].2);
    offline(&mut sign, &home);
    run_ok(&mut sign, "scripts/sign-image --sbom FILE");
    let statement = attested_sbom(&home, public, &moved);
    assert_eq!(subject_digest(&statement), digest_of(&moved));
    assert_eq!(statement["predicate"], boms[0]);

    // The chart, pushed by helm with the same login (helm falls back to the Docker config), and
    // signed. Without the login, helm is refused and scripts/push-chart says how to log in.
    let helm_home = dir.path().join("helm");
    let push_chart = |docker_config: &Path| {
        let mut push = script("push-chart");
        push.arg(format!("{}/charts", registry.address))
            .env("DOCKER_CONFIG", docker_config)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"));
        push
    };
    let refused = push_chart(&dir.path().join("no-login")).output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains(&format!("scripts/registry-login {}", registry.address)),
        "{}",
        describe(&refused)
    );
    let chart = run_ok(
        &mut push_chart(&docker_config(&home)),
        "scripts/push-chart (logged in)",
    )
    .trim()
    .to_owned();
    let mut sign = script("sign-image");
    sign.arg(&chart).arg("--key").arg(&key);
    offline(&mut sign, &home);
    run_ok(&mut sign, "scripts/sign-image (chart)");
    let verified = verify(&chart, public);
    assert!(verified.status.success(), "{}", describe(&verified));
    drop(registry);
}

#[test]
fn chart_installs_from_its_oci_artifact_with_the_image_pinned_by_digest() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let version = chart_app_version();
    let repository = format!("{}/secret-inject", registry.address);
    // Any image will do for the digest (the control plane runs no pods): the small pause image.
    let image = build_and_push(
        dir.path(),
        "pause",
        &[],
        &format!("{repository}:{version}"),
        &home,
    );
    let digest = digest_of(&image).to_owned();

    let helm_home = dir.path().join("helm");
    let mut push = script("push-chart");
    push.arg(format!("{}/charts", registry.address))
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"));
    let chart = run_ok(&mut push, "scripts/push-chart").trim().to_owned();
    assert!(
        chart.starts_with(&format!(
            "{}/charts/secret-inject@sha256:",
            registry.address
        )),
        "{chart}"
    );

    // The chart artifact can be signed and verified like the image.
    let (key, public) = key_pair(&home, &dir.path().join("keys"));
    let mut sign = script("sign-image");
    sign.arg(&chart).arg("--key").arg(&key);
    offline(&mut sign, &home);
    run_ok(&mut sign, "scripts/sign-image (chart)");
    let verified = cosign(
        &home,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &format!("{}/charts/secret-inject:{version}", registry.address),
        ],
    );
    assert!(
        verified.status.success(),
        "cosign verify of the chart: {}",
        describe(&verified)
    );

    let ns = Namespaces::new("oci-chart", &[]);
    let plane = ns.plane;
    let oci = format!("oci://{}/charts/secret-inject", registry.address);
    let selector = format!(
        "webhook.namespaceSelector.matchLabels.secret-inject-test={}",
        ns.name
    );
    let repository_value = format!("image.repository={repository}");
    let digest_value = format!("image.digest={digest}");
    let installed = plane.helm(&[
        "install",
        &ns.name,
        &oci,
        "--version",
        &version,
        "--plain-http",
        "--namespace",
        &ns.release,
        "--set",
        &selector,
        "--set",
        &repository_value,
        "--set",
        &digest_value,
        "--wait=false",
    ]);
    assert!(
        installed.status.success(),
        "helm install {oci}: {}",
        describe(&installed)
    );

    // What helm installed is the pushed artifact (its chart version), and the stored Deployment
    // runs the webhook and injects the agent by the digest-pinned reference.
    let releases: Value = serde_json::from_slice(
        &plane
            .helm(&["list", "--namespace", &ns.release, "-o", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(
        releases[0]["chart"],
        format!("secret-inject-{version}"),
        "{releases}"
    );
    let pinned = format!("{repository}:{version}@{digest}");
    let deployment = plane.get_json(&[
        "deployment",
        &format!("{}-secret-inject", ns.name),
        "-n",
        &ns.release,
    ]);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], pinned.as_str(), "{container}");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&format!("--sidecar-image={pinned}").as_str()),
        "the injected agent's image is not pinned: {args:?}"
    );
    drop(registry);
}

#[test]
fn sbom_follows_the_target_and_the_scripts_refuse_what_they_cannot_do_right() {
    let dir = tempfile::tempdir().unwrap();
    // arm64 (the release's second platform): its own resolve, the same TLS and AWS crates.
    let arm = sbom(&dir.path().join("arm64.json"), "aarch64-unknown-linux-gnu");
    assert_eq!(
        arm["metadata"]["component"]["properties"][0]["value"],
        "aarch64-unknown-linux-gnu"
    );
    let listed = components(&arm);
    for name in ["rustls", "ring", "aws-sdk-secretsmanager", "tokio"] {
        assert!(
            listed.keys().any(|k| k.starts_with(&format!("{name}@"))),
            "the arm64 SBOM lacks {name}"
        );
    }

    // An unknown target is cargo's error, not an empty SBOM.
    let unknown = script("sbom")
        .args(["--target", "no-such-target", "--out"])
        .arg(dir.path().join("none.json"))
        .output()
        .unwrap();
    assert!(!unknown.status.success(), "{}", describe(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no-such-target"),
        "{}",
        describe(&unknown)
    );
    assert!(!dir.path().join("none.json").exists());

    // Signing a tag would sign whatever the tag names at that moment: refused before cosign runs.
    let by_tag = script("sign-image")
        .args(["127.0.0.1:1/secret-inject:0.1.0", "--key", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(by_tag.status.code(), Some(1), "{}", describe(&by_tag));
    assert!(
        String::from_utf8_lossy(&by_tag.stderr).contains("sign by digest"),
        "{}",
        describe(&by_tag)
    );
}
