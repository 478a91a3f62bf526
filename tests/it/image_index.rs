//! The multi-platform image: `scripts/build-image secret-inject` with the amd64 and the arm64
//! release binaries writes one OCI image index of a linux/amd64 and a linux/arm64 manifest,
//! the same bytes from two clean builds; `scripts/push-image` pushes it to a real CNCF
//! distribution `registry` on loopback (each manifest by digest, then the index by tag), and
//! plain HTTP GETs read it back: the index by tag, each manifest by digest, each config and
//! layer blob, each layer holding the binary of its platform.
//!
//! The registry is `.tools/node/current/bin/registry` (`scripts/build-node`), started here for
//! this test on a free loopback port with storage in a temporary directory.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::arm64::{elf_machine_and_interp, release_binary};
use crate::common;
use crate::image::{blob, sha256};

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const BINARY_IN_IMAGE: &str = "usr/local/bin/secret-inject";

/// The revision the release binaries report (`--version`: `secret-inject V (rev R)`), which the
/// image's revision label must be.
fn reported_revision() -> String {
    let output = Command::new(release_binary("amd64"))
        .arg("--version")
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    printed
        .trim()
        .rsplit_once("(rev ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version printed {printed:?}"))
        .to_owned()
}

fn python3() -> Command {
    let python = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 not found on PATH: scripts/build-image and scripts/push-image need Python 3 (apt-get install python3)");
    Command::new(python)
}

fn run_script(command: Command, what: &str) -> String {
    let output = crate::arm64::run(command, what);
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `scripts/build-image secret-inject` of both release binaries into `out`: the printed digest.
fn build_index(out: &Path) -> String {
    let mut command = python3();
    command
        .arg(common::repo_root().join("scripts/build-image"))
        .arg("secret-inject")
        .arg("--out")
        .arg(out)
        .arg("--binary")
        .arg(format!("amd64={}", release_binary("amd64").display()))
        .arg("--binary")
        .arg(format!("arm64={}", release_binary("arm64").display()))
        .args(["--tag", "multi"])
        .env_remove("SOURCE_DATE_EPOCH");
    let digest = run_script(command, "scripts/build-image secret-inject (amd64 + arm64)");
    assert!(digest.starts_with("sha256:"), "{digest}");
    digest
}

/// Every file of a layout, by its path inside it: the whole of what two builds must share.
fn files(layout: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut all = std::collections::BTreeMap::new();
    let mut stack = vec![layout.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                all.insert(path.strip_prefix(layout).unwrap().to_path_buf(), bytes);
            }
        }
    }
    all
}

/// The bytes of `path` in a gzip'd ustar layer (gunzipped with the host's `gzip -dc`).
fn file_in_layer(layer_gz: &[u8], path: &str) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip not found (apt-get install gzip)");
    let mut stdin = child.stdin.take().unwrap();
    let input = layer_gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "gzip -dc of the layer failed");
    let tar = output.stdout;
    let text =
        |b: &[u8]| String::from_utf8(b.iter().copied().take_while(|c| *c != 0).collect()).unwrap();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|b| *b != 0) {
        let h = &tar[at..at + 512];
        let (name, prefix) = (text(&h[0..100]), text(&h[345..500]));
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let size = usize::from_str_radix(text(&h[124..136]).trim(), 8).unwrap_or(0);
        if full == path {
            return tar[at + 512..at + 512 + size].to_vec();
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    panic!("{path} is not in the layer");
}

/// What the index must say of each platform: (architecture, variant, ELF machine).
const PLATFORMS: [(&str, Option<&str>, u16); 2] = [("amd64", None, 62), ("arm64", Some("v8"), 183)];

fn check_platform(platform: &Value, arch: &str, variant: Option<&str>) {
    let mut expected = json!({"architecture": arch, "os": "linux"});
    if let Some(variant) = variant {
        expected["variant"] = json!(variant);
    }
    assert_eq!(*platform, expected);
}

#[test]
fn build_image_writes_one_deterministic_index_of_amd64_and_arm64() {
    let out = tempfile::tempdir().unwrap();
    let (first, second) = (out.path().join("first"), out.path().join("second"));
    let digest = build_index(&first);
    assert_eq!(
        build_index(&second),
        digest,
        "two clean builds of the index differ"
    );
    assert!(
        files(&first) == files(&second),
        "two clean builds wrote different layouts"
    );

    // index.json: one entry, the image index, tagged.
    let top: Value =
        serde_json::from_slice(&std::fs::read(first.join("index.json")).unwrap()).unwrap();
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{top}");
    assert_eq!(entries[0]["mediaType"], MEDIA_INDEX);
    assert_eq!(entries[0]["digest"], digest.as_str());
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "multi"
    );
    let index_bytes = blob(&first, &digest);
    assert_eq!(entries[0]["size"], index_bytes.len());
    let index: Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], MEDIA_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");

    let mut layers = Vec::new();
    for (descriptor, (arch, variant, machine)) in manifests.iter().zip(PLATFORMS) {
        assert_eq!(descriptor["mediaType"], MEDIA_MANIFEST);
        check_platform(&descriptor["platform"], arch, variant);
        let manifest_bytes = blob(&first, descriptor["digest"].as_str().unwrap());
        assert_eq!(descriptor["size"], manifest_bytes.len());
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
        let config: Value = serde_json::from_slice(&blob(
            &first,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["variant"].as_str(), variant);
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.revision"],
            reported_revision().as_str()
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            json!(["/usr/local/bin/secret-inject"])
        );
        let layer = &manifest["layers"][0];
        assert_eq!(layer["mediaType"], MEDIA_LAYER_GZIP);
        let gz = blob(&first, layer["digest"].as_str().unwrap());
        let binary = file_in_layer(&gz, BINARY_IN_IMAGE);
        assert_eq!(
            elf_machine_and_interp(&binary),
            (machine, false),
            "{arch}'s layer holds the wrong binary"
        );
        assert!(
            binary == std::fs::read(release_binary(arch)).unwrap(),
            "{arch}'s layer does not hold the release binary as built"
        );
        layers.push(layer["digest"].clone());
    }
    assert_ne!(layers[0], layers[1]);
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP/1.1 GETs to the real registry on loopback (`common::registry`).

/// One response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `Accept: accept`, HTTP/1.1, `Connection: close`, on plain HTTP.
fn get(address: &str, path: &str, accept: &str) -> Response {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    assert_ne!(
        response.header("transfer-encoding"),
        Some("chunked"),
        "this reader expects a Content-Length body"
    );
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().unwrap();
        assert_eq!(response.body.len(), length, "GET {path}: short body");
        response.body.truncate(length);
    }
    response
}

#[test]
fn push_image_pushes_the_index_and_the_registry_serves_both_platforms() {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let digest = build_index(&layout);
    let registry = crate::common::registry::Registry::start();
    let reference = format!("{}/secret-inject:multi", registry.address);
    let mut command = python3();
    command
        .arg(common::repo_root().join("scripts/push-image"))
        .arg(&layout)
        .arg(&reference);
    let pushed = run_script(command, &format!("scripts/push-image {reference}"));
    assert_eq!(
        pushed,
        format!("{}/secret-inject@{digest}", registry.address),
        "{}",
        registry.log()
    );

    // The index by tag, and by digest: the very bytes built, served as an index.
    let index_bytes = blob(&layout, &digest);
    for reference in ["multi", digest.as_str()] {
        let response = get(
            &registry.address,
            &format!("/v2/secret-inject/manifests/{reference}"),
            &format!("{MEDIA_INDEX}, {MEDIA_MANIFEST}"),
        );
        assert_eq!(response.status, 200, "GET the index by {reference}");
        assert_eq!(response.header("content-type"), Some(MEDIA_INDEX));
        assert_eq!(
            response.header("docker-content-digest"),
            Some(digest.as_str())
        );
        assert!(
            response.body == index_bytes,
            "the index served by {reference} differs"
        );
    }
    let index: Value = serde_json::from_slice(&index_bytes).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for (descriptor, (arch, variant, machine)) in manifests.iter().zip(PLATFORMS) {
        check_platform(&descriptor["platform"], arch, variant);
        let manifest_digest = descriptor["digest"].as_str().unwrap();
        let response = get(
            &registry.address,
            &format!("/v2/secret-inject/manifests/{manifest_digest}"),
            MEDIA_MANIFEST,
        );
        assert_eq!(response.status, 200, "GET {arch}'s manifest");
        assert_eq!(response.header("content-type"), Some(MEDIA_MANIFEST));
        assert_eq!(sha256(&response.body), manifest_digest);
        let manifest: Value = serde_json::from_slice(&response.body).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config = get(
            &registry.address,
            &format!("/v2/secret-inject/blobs/{config_digest}"),
            "*/*",
        );
        assert_eq!(config.status, 200, "GET {arch}'s config");
        assert_eq!(sha256(&config.body), config_digest);
        let config: Value = serde_json::from_slice(&config.body).unwrap();
        assert_eq!(
            (config["architecture"].as_str(), config["os"].as_str()),
            (Some(arch), Some("linux"))
        );
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer = get(
            &registry.address,
            &format!("/v2/secret-inject/blobs/{layer_digest}"),
            "*/*",
        );
        assert_eq!(layer.status, 200, "GET {arch}'s layer");
        assert_eq!(sha256(&layer.body), layer_digest);
        let binary = file_in_layer(&layer.body, BINARY_IN_IMAGE);
        assert_eq!(elf_machine_and_interp(&binary), (machine, false), "{arch}");
    }

    // The tag lists exactly this one tag; nothing else was pushed under a tag.
    let tags = get(
        &registry.address,
        "/v2/secret-inject/tags/list",
        "application/json",
    );
    assert_eq!(tags.status, 200);
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(tags["tags"], json!(["multi"]), "{}", registry.log());
}
