//! What makes the container image work, tested without a container engine.
//!
//! The image (`Dockerfile`) is `FROM scratch` with three things in it: the binary at
//! `/usr/local/bin/secret-inject`, the CA bundle at `/etc/ssl/certs/ca-certificates.crt` and an
//! empty, world-writable `/tmp`; it runs as `65532:65532`. That only works if the binary needs
//! nothing else from the file system: no dynamic loader, no shared libraries, no NSS modules.
//! So we check that the binary cargo builds is static (its ELF program headers), then build the
//! image's root file system in a temporary directory and run the binary in it with `chroot` as
//! the image's user: `--help`, the webhook serving a real AdmissionReview over verified TLS, the
//! offline injector, and the agent fetching a secret over TLS that it verifies with the image's
//! CA bundle (and refuses without it).
//!
//! Without Docker, `scripts/build-image` writes the image as an OCI image layout: the tests
//! hold its config and files to the Dockerfile's final stage (parsed here on its own), run the
//! binary from the unpacked layer, check that builds are byte-for-byte reproducible, run the
//! busybox and pause images' programs, and push a layout to a stub registry with
//! `scripts/push-image`.
//!
//! The chroot tests need root (chroot(2) is privileged). Tests run as root here and in CI; as
//! any other user they fail with a message saying so, they never skip.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize as _;
use serde_json::Value;

use crate::common;
use crate::common::webhook::{Client, Webhook, connect, decode_patch};
use secret_inject::contract::BINARY_PATH;

/// The binary `cargo test` built, with the same `.cargo/config.toml` flags as `cargo build
/// --release` (the profile does not change how the C runtime is linked).
const BINARY: &str = env!("CARGO_BIN_EXE_secret-inject");
/// Where Debian and Alpine keep the CA bundle, and where the image has it.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The image's user and group (`USER` in the Dockerfile).
const IMAGE_USER: &str = "65532:65532";

// ---------------------------------------------------------------------------------------------
// ELF: a static binary has no program interpreter and needs no shared library.

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One program header: (p_type, p_offset, p_filesz).
struct ProgramHeader {
    kind: u32,
    offset: usize,
    size: usize,
}

/// The program headers of an ELF64 little-endian file.
fn program_headers(elf: &[u8]) -> Vec<ProgramHeader> {
    assert!(elf.len() >= 64, "too short for an ELF64 header");
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64 (EI_CLASS)");
    assert_eq!(elf[5], 1, "not little-endian (EI_DATA)");
    let phoff = u64_at(elf, 0x20) as usize;
    let phentsize = u16_at(elf, 0x36) as usize;
    let phnum = u16_at(elf, 0x38) as usize;
    assert!(
        phentsize >= 56,
        "program header entries of {phentsize} bytes"
    );
    assert!(
        phoff + phnum * phentsize <= elf.len(),
        "program headers past the end"
    );
    (0..phnum)
        .map(|i| {
            let h = &elf[phoff + i * phentsize..][..phentsize];
            ProgramHeader {
                kind: u32_at(h, 0),
                offset: u64_at(h, 8) as usize,
                size: u64_at(h, 32) as usize,
            }
        })
        .collect()
}

/// How many DT_NEEDED entries (shared libraries) the dynamic segment lists.
fn needed_libraries(elf: &[u8], dynamic: &ProgramHeader) -> usize {
    let segment = &elf[dynamic.offset..dynamic.offset + dynamic.size];
    segment
        .chunks_exact(16)
        .map(|entry| u64_at(entry, 0))
        .take_while(|tag| *tag != DT_NULL)
        .filter(|tag| *tag == DT_NEEDED)
        .count()
}

#[test]
fn elf_parser_sees_the_interpreter_of_a_dynamic_binary() {
    // The check below is only worth something if it can fail: the host's own chroot(8) is an
    // ordinary dynamically linked program.
    let chroot = std::fs::read(chroot_program()).unwrap();
    let headers = program_headers(&chroot);
    assert!(headers.iter().any(|h| h.kind == PT_INTERP));
    let dynamic = headers.iter().find(|h| h.kind == PT_DYNAMIC).unwrap();
    assert!(needed_libraries(&chroot, dynamic) > 0);
}

#[test]
fn binary_is_statically_linked() {
    let elf = std::fs::read(BINARY).unwrap();
    let headers = program_headers(&elf);
    assert!(!headers.is_empty(), "{BINARY} has no program headers");
    // A static-pie binary keeps a PT_DYNAMIC segment (for its own relocations), but asks for no
    // program interpreter and lists no shared library.
    assert!(
        !headers.iter().any(|h| h.kind == PT_INTERP),
        "{BINARY} has a program interpreter (PT_INTERP): it is dynamically linked and cannot run \
         in the FROM scratch image. `.cargo/config.toml` must set build.target and \
         `-C target-feature=+crt-static` for it"
    );
    for dynamic in headers.iter().filter(|h| h.kind == PT_DYNAMIC) {
        assert_eq!(
            needed_libraries(&elf, dynamic),
            0,
            "{BINARY} needs shared libraries (DT_NEEDED)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The image's root file system, in a directory, entered with chroot.

fn chroot_program() -> PathBuf {
    let mut dirs = vec![PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot(8) not found (coreutils); the image tests need it")
}

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "tests/image.rs needs root: it enters the image's root file system with chroot(2), which \
         is privileged. Run the tests as root (CI does), e.g. in a container or with sudo; they \
         are not skipped"
    );
}

/// A directory holding exactly what the image holds: the binary, the CA bundle and `/tmp`.
fn image_root() -> tempfile::TempDir {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // tempdir() makes a 0700 directory; the image's user must be able to walk through it.
    mode(root.path(), 0o755);

    let binary = root.path().join(BINARY_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(BINARY, &binary).unwrap();
    mode(&binary, 0o755);

    assert!(
        Path::new(CA_BUNDLE).is_file(),
        "{CA_BUNDLE} is missing on this host: install the ca-certificates package (the image \
         copies the bundle from its Debian builder; this test copies the host's)"
    );
    let bundle = root.path().join(CA_BUNDLE.trim_start_matches('/'));
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    std::fs::copy(CA_BUNDLE, &bundle).unwrap();
    mode(&bundle, 0o644);

    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    mode(&tmp, 0o1777);
    root
}

/// `chroot --userspec=65532:65532 ROOT /usr/local/bin/secret-inject ARGS...`, with the image's
/// environment only (nothing inherited from the test).
fn in_image(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(chroot_program());
    command
        .arg(format!("--userspec={IMAGE_USER}"))
        .arg(format!(
            "--groups={}",
            IMAGE_USER.split(':').nth(1).unwrap()
        ))
        .arg(root)
        .arg(BINARY_PATH)
        .args(args)
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SSL_CERT_FILE", CA_BUNDLE);
    command
}

fn run(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn image_root_holds_only_binary_ca_bundle_and_tmp() {
    let root = image_root();
    let mut files = Vec::new();
    let mut stack = vec![root.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            files.push(path.strip_prefix(root.path()).unwrap().to_owned());
        }
    }
    files.sort();
    let expected: Vec<PathBuf> = [
        "etc",
        "etc/ssl",
        "etc/ssl/certs",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/secret-inject",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(files, expected);
}

#[test]
fn help_runs_in_the_empty_root() {
    let root = image_root();
    let output = run(in_image(root.path(), &["--help"]), b"");
    assert!(
        output.status.success(),
        "--help in the image root: {}",
        describe(&output)
    );
    let help = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["webhook", "inject"] {
        assert!(
            help.contains(subcommand),
            "help does not mention `{subcommand}`:\n{help}"
        );
    }
}

#[test]
fn inject_runs_in_the_empty_root() {
    let root = image_root();
    let seed =
        std::fs::read(common::repo_root().join("examples/webserver-deployment.yaml")).unwrap();
    let output = run(in_image(root.path(), &["inject", "-f", "-"]), &seed);
    assert!(
        output.status.success(),
        "inject in the image root: {}",
        describe(&output)
    );
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(
        yaml.contains("secrets-init-container"),
        "not injected:\n{yaml}"
    );
    assert!(yaml.contains(BINARY_PATH), "agent command missing:\n{yaml}");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_serves_a_review_over_tls_in_the_empty_root() {
    let root = image_root();
    let root_path = root.path().to_path_buf();
    let (port, admin_port) = common::webhook::free_ports();
    let (port_arg, admin_arg) = (port.to_string(), admin_port.to_string());
    // Everything the server writes goes to /tmp, the only writable place in the image (the
    // chart's pods even mount the root read-only and pass certificate files instead).
    let command = in_image(
        &root_path,
        &[
            "--log-format",
            "json",
            "webhook",
            "--bind-address",
            "127.0.0.1",
            "--port",
            &port_arg,
            "--admin-port",
            &admin_arg,
            "--dev-tls",
            "--write-ca",
            "/tmp/ca.pem",
        ],
    );
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let server = Webhook::from_command(command, root, loopback(port), loopback(admin_port));
    let ca = root_path.join("tmp/ca.pem");
    assert!(ca.is_file(), "the webhook wrote no CA to /tmp/ca.pem");
    // Written by the image's user, not by root.
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(std::fs::metadata(&ca).unwrap().uid(), 65532);

    let deployment: Value = yaml_serde::Deserializer::from_slice(
        &std::fs::read(common::repo_root().join("examples/webserver-deployment.yaml")).unwrap(),
    )
    .map(|d| Value::deserialize(d).unwrap())
    .find(|d| !d.is_null())
    .unwrap();
    let pod = common::pod_from_template(&deployment["spec"]["template"], "default");
    let review = common::admission_review(&pod, "image-chroot-1");

    let stream = connect(server.webhook, &ca, "localhost", &[b"h2", b"http/1.1"])
        .await
        .expect("TLS to the chrooted webhook, verified against the CA it wrote");
    let mut client = Client::new(stream).await;
    let (status, body) = client
        .post("/mutating-pods", serde_json::to_vec(&review).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "image-chroot-1");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch = decode_patch(&answer).expect("a patch for the seed's pod");
    let ops = patch.as_array().unwrap();
    assert!(ops.iter().all(|op| op["op"] == "add"), "{patch}");
    let agent = ops
        .iter()
        .map(|op| &op["value"])
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .find(|v| v["name"] == "secrets-init-container")
        .unwrap_or_else(|| panic!("no secrets-init-container added: {patch}"));
    assert_eq!(agent["command"][0], BINARY_PATH, "{agent}");
    assert_eq!(agent["command"][1], "agent", "{agent}");
    let volume = ops
        .iter()
        .map(|op| &op["value"])
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .find(|v| v["name"] == "secret-vol" && v.get("emptyDir").is_some())
        .unwrap_or_else(|| panic!("no secret-vol added: {patch}"));
    assert_eq!(volume["emptyDir"]["medium"], "Memory");
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// The agent in the image trusts exactly the image's CA bundle.

const SECRET_ARN: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";
const SECRET_VALUE: &str = "P@$$word1024";

/// A stand-in for Secrets Manager over TLS: answers every GetSecretValue with [`SECRET_VALUE`],
/// and counts completed TLS handshakes and requests.
struct FakeSecretsManager {
    address: std::net::SocketAddr,
    handshakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

async fn fake_secrets_manager(
    cert: &secret_inject::webhook::tls::DevCertificate,
) -> FakeSecretsManager {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex, atomic::AtomicUsize};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (handshakes.clone(), targets.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count, seen) = (acceptor.clone(), count.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // the client did not trust us
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (
                            String::from_utf8_lossy(&request[..end]).into_owned(),
                            end + 4,
                        );
                    }
                };
                let header = |name: &str| {
                    head.lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim().to_owned())
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while request.len() < body_start + length {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                seen.lock()
                    .unwrap()
                    .push(header("x-amz-target").unwrap_or_default());
                let body = serde_json::json!({
                    "ARN": SECRET_ARN,
                    "Name": "database-password",
                    "VersionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
                    "SecretString": SECRET_VALUE,
                    "VersionStages": ["AWSCURRENT"],
                    "CreatedDate": 1_700_000_000.0,
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\n\
                     x-amzn-requestid: 0a1b2c3d-image-test\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    FakeSecretsManager {
        address,
        handshakes,
        targets,
    }
}

/// Run `secret-inject agent` in the image root as the image's user, with the environment the
/// webhook gives it and static credentials, against `endpoint`.
async fn agent_in_image(root: &Path, endpoint: String) -> Output {
    let mut command = in_image(root, &["--log-format", "plain", "agent"]);
    command
        .env("SECRET_ARN", SECRET_ARN)
        .env("SECRET_FILENAME", "secret")
        .env("SECRET_INJECT_OUTPUT_DIR", "/tmp")
        .env("SECRET_INJECT_FILE_MODE", "0444")
        // In a pod /tmp is the in-memory secret-vol; here it is the test's disk.
        .env("SECRET_INJECT_ALLOW_DISK", "true")
        .env("SECRET_INJECT_TERMINATION_LOG", "/tmp/termination-log")
        .env("SECRET_INJECT_DEADLINE", "3s")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key");
    tokio::task::spawn_blocking(move || run(command, b""))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_fetches_over_tls_trusting_the_image_ca_bundle() {
    let cert =
        secret_inject::webhook::tls::generate_dev_certificate("secrets-manager", "test").unwrap();
    let server = fake_secrets_manager(&cert).await;
    let endpoint = format!("https://{}", server.address);

    // The image's bundle plus a private CA, as a company CA would be added: the agent trusts it.
    let root = image_root();
    let bundle = root.path().join(CA_BUNDLE.trim_start_matches('/'));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&bundle)
        .unwrap();
    write!(file, "\n{}", cert.ca_pem).unwrap();
    drop(file);
    let output = agent_in_image(root.path(), endpoint.clone()).await;
    assert!(
        output.status.success(),
        "agent in the image root: {}",
        describe(&output)
    );
    let written = root.path().join("tmp/secret");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), SECRET_VALUE);
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), 65532);
    assert_eq!(
        server.targets.lock().unwrap().as_slice(),
        ["secretsmanager.GetSecretValue"]
    );

    // The same agent with the unmodified bundle refuses the private CA: trust comes from the
    // file in the image, not from roots compiled into the binary.
    let handshakes = server.handshakes.load(std::sync::atomic::Ordering::SeqCst);
    let root = image_root();
    let output = agent_in_image(root.path(), endpoint).await;
    assert!(
        !output.status.success(),
        "the agent trusted a CA that is not in the image's bundle: {}",
        describe(&output)
    );
    // An untrusted certificate is a configuration problem, reported at once, not retried.
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("TlsCertificateRejected"),
        "{}",
        describe(&output)
    );
    assert!(!root.path().join("tmp/secret").exists());
    assert_eq!(
        server.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        handshakes,
        "a TLS handshake completed without the CA in the bundle"
    );
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile builds what the tests above check (no engine here to build it).

#[test]
fn dockerfile_ships_what_these_tests_check() {
    let dockerfile = std::fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let has = |line: &str| lines.contains(&line);
    let final_stage = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    assert_eq!(
        lines[final_stage], "FROM scratch",
        "the image is FROM scratch"
    );
    assert!(has(&format!("ENTRYPOINT [\"{BINARY_PATH}\"]")));
    assert!(has(&format!("USER {IMAGE_USER}")));
    assert!(has(&format!("ENV SSL_CERT_FILE={CA_BUNDLE}")));
    assert!(dockerfile.contains(&format!("/rootfs{BINARY_PATH};")));
    assert!(dockerfile.contains(&format!("{CA_BUNDLE} /rootfs{CA_BUNDLE};")));
    assert!(dockerfile.contains("cargo build --release --locked --target \"$target\""));
    // The image's version label and the builder's toolchain follow Cargo.toml.
    assert!(
        has(&format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"))),
        "Dockerfile: ARG VERSION must default to Cargo.toml's version {}",
        env!("CARGO_PKG_VERSION")
    );
    let rust = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION=");
    // "1.95" and "1.95.0" are the same toolchain requirement.
    let version = |v: &str| -> [u32; 3] {
        let mut parts = v.split('.').map(|n| n.parse::<u32>().unwrap());
        [0; 3].map(|_| parts.next().unwrap_or(0))
    };
    let required = env!("CARGO_PKG_RUST_VERSION");
    assert!(
        version(rust) >= version(required),
        "Dockerfile builds with Rust {rust}, Cargo.toml's rust-version is {required}"
    );
}

// ---------------------------------------------------------------------------------------------
// The image without Docker: scripts/build-image writes an OCI image layout, held to the
// Dockerfile; scripts/push-image pushes it. (Pushing to the real registry is the node tests'
// part; here a stub that speaks the distribution API checks what the script sends.)

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn python3() -> Command {
    let python = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 not found on PATH: scripts/build-image and scripts/push-image need Python 3 (apt-get install python3)");
    Command::new(python)
}

/// `scripts/build-image IMAGE --out OUT ARGS...` with `env`, and its output.
fn build_image_output(image: &str, out: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = python3();
    command
        .arg(common::repo_root().join("scripts/build-image"))
        .arg(image)
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(env.iter().copied());
    run(command, b"")
}

/// The manifest digest `scripts/build-image` prints.
fn build_image(image: &str, out: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = build_image_output(image, out, args, env);
    assert!(
        output.status.success(),
        "scripts/build-image {image} {args:?}: {}",
        describe(&output)
    );
    let digest = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    digest
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One entry of a ustar archive.
#[derive(Debug)]
struct TarEntry {
    path: String,
    /// b'0' file, b'2' symlink, b'5' directory.
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    owner_names: String,
    link: String,
    data: std::ops::Range<usize>,
}

fn tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let text =
        |b: &[u8]| String::from_utf8(b.iter().copied().take_while(|c| *c != 0).collect()).unwrap();
    let octal = |b: &[u8]| u64::from_str_radix(text(b).trim(), 8).unwrap_or(0);
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|b| *b != 0) {
        let h = &tar[at..at + 512];
        assert_eq!(&h[257..262], b"ustar", "not a ustar header at {at}");
        let (name, prefix) = (text(&h[0..100]), text(&h[345..500]));
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let size = octal(&h[124..136]) as usize;
        entries.push(TarEntry {
            path: path.trim_end_matches('/').to_owned(),
            kind: h[156],
            mode: octal(&h[100..108]) as u32,
            uid: octal(&h[108..116]),
            gid: octal(&h[116..124]),
            mtime: octal(&h[136..148]),
            owner_names: text(&h[265..297]) + &text(&h[297..329]),
            link: text(&h[157..257]),
            data: at + 512..at + 512 + size,
        });
        at += 512 + size.div_ceil(512) * 512;
    }
    entries
}

/// An OCI image layout with one image of one uncompressed layer.
struct Layout {
    index: Value,
    config: Value,
    layer: Vec<u8>,
    entries: Vec<TarEntry>,
}

/// A blob of an OCI layout, checked against its digest.
pub fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    let path = dir
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        sha256(&bytes),
        digest,
        "{} is not what its name says",
        path.display()
    );
    bytes
}

fn read_layout(dir: &Path, digest: &str) -> Layout {
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["digest"], digest,
        "the printed digest is the index's"
    );
    assert_eq!(manifests[0]["mediaType"], MEDIA_MANIFEST);
    let manifest_bytes = blob(dir, digest);
    assert_eq!(manifests[0]["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MEDIA_MANIFEST);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config_bytes = blob(dir, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"], MEDIA_LAYER_TAR,
        "built with --compression none"
    );
    let layer = blob(dir, layers[0]["digest"].as_str().unwrap());
    assert_eq!(layers[0]["size"], layer.len());
    // Uncompressed, the layer's digest is its diff id.
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([layers[0]["digest"]])
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["architecture"], "amd64",
        "this host's binaries are x86-64"
    );
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    let entries = tar_entries(&layer);
    // Deterministic entries: sorted, owned by root without names, time 0.
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted, "tar entries are not sorted");
    for entry in &entries {
        assert_eq!((entry.uid, entry.gid, entry.mtime), (0, 0, 0), "{entry:?}");
        assert_eq!(entry.owner_names, "", "{entry:?}");
    }
    Layout {
        index,
        config,
        layer,
        entries,
    }
}

impl Layout {
    fn entry(&self, path: &str) -> &TarEntry {
        self.entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} is not in the layer: {:?}", self.entries))
    }

    fn data(&self, path: &str) -> &[u8] {
        &self.layer[self.entry(path).data.clone()]
    }

    /// The layer unpacked into a 0755 temporary directory, modes as in the layer.
    fn unpack(&self) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in &self.entries {
            let path = root.path().join(&entry.path);
            match entry.kind {
                b'5' => std::fs::create_dir_all(&path).unwrap(),
                b'2' => std::os::unix::fs::symlink(&entry.link, &path).unwrap(),
                b'0' => std::fs::write(&path, &self.layer[entry.data.clone()]).unwrap(),
                other => panic!("unexpected tar entry type {other} in {entry:?}"),
            }
            if entry.kind != b'2' {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
                    .unwrap();
            }
        }
        root
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let dockerfile = std::fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(&format!("{part} ")),
            None => {
                current.push_str(line);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((word.to_owned(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// `KEY="VALUE" KEY=VALUE ...` of LABEL and ENV.
fn dockerfile_pairs(arguments: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = arguments.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap(),
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        pairs.push((key.trim().to_owned(), value.to_owned()));
        rest = after.trim();
    }
    pairs
}

#[test]
fn build_image_writes_the_image_the_dockerfile_describes() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("layout");
    // The revision the binary reports, which the script checks against --revision.
    let revision = secret_inject::REVISION;
    let digest = build_image(
        "secret-inject",
        &dir,
        &[
            "--binary",
            BINARY,
            "--strip",
            "--compression",
            "none",
            "--revision",
            revision,
            "--tag",
            "it",
        ],
        &[],
    );
    let layout = read_layout(&dir, &digest);
    assert_eq!(
        layout.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "it"
    );

    // The Dockerfile's final stage, as Docker would read it.
    let instructions = dockerfile_instructions();
    let last_from = instructions.iter().rposition(|(w, _)| w == "FROM").unwrap();
    let mut expected = serde_json::json!({"Labels": {}, "Env": [], "ExposedPorts": {}});
    for (word, rest) in &instructions[last_from + 1..] {
        let substituted = rest
            .replace("${VERSION}", env!("CARGO_PKG_VERSION"))
            .replace("${REVISION}", revision);
        match word.as_str() {
            "LABEL" => {
                for (key, value) in dockerfile_pairs(&substituted) {
                    expected["Labels"][key] = value.into();
                }
            }
            "ENV" => {
                for (key, value) in dockerfile_pairs(&substituted) {
                    expected["Env"]
                        .as_array_mut()
                        .unwrap()
                        .push(format!("{key}={value}").into());
                }
            }
            "USER" => expected["User"] = substituted.into(),
            "EXPOSE" => {
                for port in substituted.split_whitespace() {
                    expected["ExposedPorts"][format!("{port}/tcp")] = serde_json::json!({});
                }
            }
            "ENTRYPOINT" => expected["Entrypoint"] = serde_json::from_str(&substituted).unwrap(),
            "CMD" => expected["Cmd"] = serde_json::from_str(&substituted).unwrap(),
            _ => {}
        }
    }
    assert_eq!(
        layout.config["config"], expected,
        "the layout's config vs the Dockerfile"
    );
    // The values these tests run the image with, and what the issue asks for.
    assert_eq!(layout.config["config"]["User"], IMAGE_USER);
    assert_eq!(
        layout.config["config"]["Entrypoint"],
        serde_json::json!([BINARY_PATH])
    );
    assert_eq!(
        layout.config["config"]["Cmd"],
        serde_json::json!(["webhook"])
    );
    let labels = layout.config["config"]["Labels"].as_object().unwrap();
    for key in [
        "title",
        "description",
        "source",
        "url",
        "documentation",
        "licenses",
        "version",
        "revision",
    ] {
        assert!(
            labels.contains_key(&format!("org.opencontainers.image.{key}")),
            "{key}"
        );
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.revision"], revision);

    // The files: what the builder stage's `install -m`, `mkdir -p` and `chmod` lines make in
    // /rootfs, with their parents.
    let mut files: std::collections::BTreeMap<String, (u8, u32)> = Default::default();
    let rootfs = |path: &str| path.strip_prefix("/rootfs/").map(str::to_owned);
    let add_parents = |files: &mut std::collections::BTreeMap<String, (u8, u32)>, path: &str| {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            files
                .entry(p.to_str().unwrap().to_owned())
                .or_insert((b'5', 0o755));
            parent = p.parent();
        }
    };
    for (_, rest) in instructions[..last_from].iter().filter(|(w, _)| w == "RUN") {
        for command in rest.split(';').map(str::trim) {
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["mkdir", "-p", dirs @ ..] => {
                    for dir in dirs.iter().filter_map(|d| rootfs(d)) {
                        add_parents(&mut files, &dir);
                        files.entry(dir).or_insert((b'5', 0o755));
                    }
                }
                ["install", "-m", mode, _, dest] => {
                    let dest = rootfs(dest).unwrap();
                    add_parents(&mut files, &dest);
                    files.insert(dest, (b'0', u32::from_str_radix(mode, 8).unwrap()));
                }
                ["chmod", mode, dest] if dest.starts_with("/rootfs/") => {
                    files.insert(
                        rootfs(dest).unwrap(),
                        (b'5', u32::from_str_radix(mode, 8).unwrap()),
                    );
                }
                _ => {}
            }
        }
    }
    let in_layer: std::collections::BTreeMap<String, (u8, u32)> = layout
        .entries
        .iter()
        .map(|e| (e.path.clone(), (e.kind, e.mode)))
        .collect();
    assert_eq!(
        in_layer, files,
        "the layer's files vs the Dockerfile's install lines"
    );
    assert!(files.contains_key(BINARY_PATH.trim_start_matches('/')));
    assert_eq!(files["tmp"], (b'5', 0o1777));

    // The CA bundle is the host's (Debian's ca-certificates); the binary is ours, stripped.
    assert_eq!(
        layout.data(CA_BUNDLE.trim_start_matches('/')),
        std::fs::read(CA_BUNDLE).unwrap()
    );
    let binary = layout.data(BINARY_PATH.trim_start_matches('/'));
    let original = std::fs::metadata(BINARY).unwrap().len() as usize;
    assert!(
        binary.len() < original / 2,
        "--strip left {} of {original} bytes",
        binary.len()
    );
    assert!(!program_headers(binary).iter().any(|h| h.kind == PT_INTERP));

    // And it runs from the unpacked layer as the image's user, with the image's environment.
    require_root();
    let root = layout.unpack();
    let output = run(in_image(root.path(), &["--version"]), b"");
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        describe(&output)
    );
}

#[test]
fn build_image_is_deterministic() {
    let out = tempfile::tempdir().unwrap();
    let layout = |name: &str| out.path().join(name);
    // Gzip, as pushed: the pause image is small.
    let first = build_image("pause", &layout("pause-1"), &[], &[]);
    let second = build_image("pause", &layout("pause-2"), &[], &[]);
    assert_eq!(first, second, "two builds of the pause image differ");
    for file in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(layout("pause-1").join(file)).unwrap(),
            std::fs::read(layout("pause-2").join(file)).unwrap()
        );
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout("pause-1").join("index.json")).unwrap())
            .unwrap();
    let manifest: Value = serde_json::from_slice(&blob(&layout("pause-1"), &first)).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(index["manifests"][0]["platform"]["os"], "linux");
    let config: Value = serde_json::from_slice(&blob(
        &layout("pause-1"),
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    // SOURCE_DATE_EPOCH moves the time, and so the digest.
    let dated = build_image(
        "pause",
        &layout("pause-3"),
        &[],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_ne!(dated, first);
    let manifest: Value = serde_json::from_slice(&blob(&layout("pause-3"), &dated)).unwrap();
    let config: Value = serde_json::from_slice(&blob(
        &layout("pause-3"),
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");

    // secret-inject: the same binary twice, then another binary.
    let args = ["--binary", BINARY, "--strip", "--compression", "none"];
    let first = build_image("secret-inject", &layout("si-1"), &args, &[]);
    let second = build_image("secret-inject", &layout("si-2"), &args, &[]);
    assert_eq!(
        first, second,
        "two builds of the secret-inject image differ"
    );
    let mut other = read_layout(&layout("si-1"), &first)
        .data(BINARY_PATH.trim_start_matches('/'))
        .to_vec();
    other.push(0);
    let other_binary = out.path().join("other-binary");
    std::fs::write(&other_binary, &other).unwrap();
    let other_args = [
        "--binary",
        other_binary.to_str().unwrap(),
        "--compression",
        "none",
    ];
    let third = build_image("secret-inject", &layout("si-3"), &other_args, &[]);
    assert_ne!(third, first, "a different binary gave the same image");
    let third_layout = read_layout(&layout("si-3"), &third);
    assert_eq!(
        third_layout.data(BINARY_PATH.trim_start_matches('/')),
        other
    );
    // Another revision is another label, so another config and manifest: the same binary with
    // the revision in its --version string replaced.
    let restamped = out.path().join("restamped");
    let replacement = "f".repeat(secret_inject::REVISION.len());
    let stripped = read_layout(&layout("si-1"), &first)
        .data(BINARY_PATH.trim_start_matches('/'))
        .to_vec();
    std::fs::write(&restamped, restamp(stripped, &replacement)).unwrap();
    let fourth = build_image(
        "secret-inject",
        &layout("si-4"),
        &[
            "--binary",
            restamped.to_str().unwrap(),
            "--strip",
            "--compression",
            "none",
        ],
        &[],
    );
    assert_ne!(fourth, first);
    assert_eq!(
        image_config(&layout("si-4"), &fourth)["config"]["Labels"]["org.opencontainers.image.revision"],
        replacement.as_str()
    );
}

/// The binary `bytes` with its `--version` string naming `revision` (of the same length) instead
/// of the revision it was built from.
fn restamp(mut bytes: Vec<u8>, revision: &str) -> Vec<u8> {
    assert_eq!(revision.len(), secret_inject::REVISION.len());
    let stamp = secret_inject::VERSION_AND_REVISION.as_bytes();
    let new = format!("{} (rev {revision})", secret_inject::VERSION);
    let mut replaced = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(stamp.len()).position(|w| w == stamp) {
        let start = at + found;
        bytes[start..start + stamp.len()].copy_from_slice(new.as_bytes());
        replaced += 1;
        at = start + stamp.len();
    }
    assert!(
        replaced > 0,
        "the binary does not hold {:?}",
        secret_inject::VERSION_AND_REVISION
    );
    bytes
}

/// The image config of the manifest `digest` in the layout `dir`.
fn image_config(dir: &Path, digest: &str) -> Value {
    let manifest: Value = serde_json::from_slice(&blob(dir, digest)).unwrap();
    serde_json::from_slice(&blob(dir, manifest["config"]["digest"].as_str().unwrap())).unwrap()
}

/// The image's revision label is the revision the binary reports in `--version` (build.rs takes
/// `SECRET_INJECT_REVISION`, else `git rev-parse HEAD`): read from the binary's bytes, so an arm64
/// binary needs no emulator; `--revision` only checks it, and a binary without it is refused.
#[test]
fn build_image_labels_the_revision_the_binary_reports() {
    let output = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    let revision = printed
        .trim()
        .strip_prefix(&format!("secret-inject {} (rev ", secret_inject::VERSION))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version printed {printed:?}"));
    // Built in this checkout, without SECRET_INJECT_REVISION: a commit of this repository.
    if std::env::var_os("SECRET_INJECT_REVISION").is_none() {
        assert_eq!(revision.len(), 40, "{revision}");
        let known = Command::new("git")
            .arg("-C")
            .arg(common::repo_root())
            .args(["cat-file", "-e", &format!("{revision}^{{commit}}")])
            .status()
            .expect("git not found on PATH (apt-get install git)");
        assert!(
            known.success(),
            "{revision} is not a commit of this checkout"
        );
    }

    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let args = ["--binary", BINARY, "--strip", "--compression", "none"];
    let digest = build_image("secret-inject", &layout, &args, &[]);
    let config = image_config(&layout, &digest);
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.revision"], revision);
    assert_eq!(
        labels["org.opencontainers.image.version"],
        secret_inject::VERSION
    );
    // `--revision` that agrees builds the same image; one that does not is refused.
    let mut agreeing = args.to_vec();
    agreeing.extend(["--revision", revision]);
    assert_eq!(
        build_image("secret-inject", &layout, &agreeing, &[]),
        digest
    );
    let other = out.path().join("other");
    let mut disagreeing = args.to_vec();
    disagreeing.extend(["--revision", "0000000000000000000000000000000000000000"]);
    let output = build_image_output("secret-inject", &other, &disagreeing, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("reports revision {revision}"))
            && stderr.contains("SECRET_INJECT_REVISION="),
        "{}",
        describe(&output)
    );
    // A static binary that is not ours (no version string) is refused.
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let output = build_image_output("secret-inject", &other, &["--binary", "/bin/busybox"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("(rev REV)` exactly once"),
        "{}",
        describe(&output)
    );
    assert!(!other.exists());
}

#[test]
fn build_image_refuses_a_dynamic_or_missing_binary() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("layout");
    let chroot = chroot_program();
    let output = build_image_output(
        "secret-inject",
        &dir,
        &["--binary", chroot.to_str().unwrap(), "--revision", "r"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is dynamically linked"),
        "{}",
        describe(&output)
    );
    let missing = out.path().join("no-such-binary");
    let output = build_image_output(
        "secret-inject",
        &dir,
        &["--binary", missing.to_str().unwrap(), "--revision", "r"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not exist"),
        "{}",
        describe(&output)
    );
    assert!(!dir.exists(), "a failed build left {}", dir.display());

    // Without --binary, the release build of the checkout the script is in; a checkout where
    // it was never built is told how to build it.
    let checkout = out.path().join("checkout");
    std::fs::create_dir_all(checkout.join("scripts")).unwrap();
    for file in ["scripts/build-image", "Dockerfile", "Cargo.toml"] {
        std::fs::copy(common::repo_root().join(file), checkout.join(file)).unwrap();
    }
    let mut command = python3();
    command
        .arg(checkout.join("scripts/build-image"))
        .args(["secret-inject", "--revision", "r", "--out"])
        .arg(&dir);
    let output = run(command, b"");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cargo build --release"),
        "{}",
        describe(&output)
    );
}

#[test]
fn busybox_image_runs_a_shell_as_nobody() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("busybox");
    let digest = build_image("busybox", &dir, &["--compression", "none"], &[]);
    let layout = read_layout(&dir, &digest);
    let busybox = layout.entry("bin/busybox");
    assert_eq!((busybox.kind, busybox.mode), (b'0', 0o755));
    assert!(
        !program_headers(layout.data("bin/busybox"))
            .iter()
            .any(|h| h.kind == PT_INTERP)
    );
    for applet in [
        "bin/sh",
        "bin/cat",
        "bin/sleep",
        "bin/stat",
        "bin/df",
        "bin/mount",
        "usr/bin/id",
        "usr/bin/env",
    ] {
        let entry = layout.entry(applet);
        assert_eq!(
            (entry.kind, entry.link.as_str()),
            (b'2', "/bin/busybox"),
            "{applet}"
        );
    }
    assert_eq!(
        (layout.entry("tmp").kind, layout.entry("tmp").mode),
        (b'5', 0o1777)
    );
    // Debian's busybox has no printenv applet; the image carries a script.
    let printenv = layout.entry("usr/bin/printenv");
    assert_eq!((printenv.kind, printenv.mode), (b'0', 0o755));
    let passwd = String::from_utf8(layout.data("etc/passwd").to_vec()).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
    assert_eq!(layout.config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(
        layout.config["config"]["Env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH=/"),
        "{}",
        layout.config
    );

    require_root();
    let root = layout.unpack();
    let mut command = Command::new(chroot_program());
    command
        .args(["--userspec=65534:65534", "--groups=65534"])
        .arg(root.path())
        .args([
            "/bin/sh",
            "-c",
            "id -un; echo hello > /tmp/x; cat /tmp/x; stat -c %a /tmp; \
             printenv GREETING; printenv NOT_SET || echo unset; printenv | grep -c '^GREETING='",
        ])
        .env_clear()
        .env("GREETING", "hi there")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    let output = run(command, b"");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "nobody\nhello\n1777\nhi there\nunset\n1\n"
    );
}

#[test]
fn pause_image_is_static_and_exits_0_on_sigterm_and_sigint() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("pause");
    let digest = build_image("pause", &dir, &["--compression", "none"], &[]);
    let layout = read_layout(&dir, &digest);
    let paths: Vec<&str> = layout.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["pause"]);
    assert_eq!(layout.entry("pause").mode, 0o755);
    assert_eq!(
        layout.config["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
    assert_eq!(layout.config["config"]["User"], "65535:65535");
    let headers = program_headers(layout.data("pause"));
    assert!(
        !headers.iter().any(|h| h.kind == PT_INTERP),
        "pause is dynamically linked"
    );
    for dynamic in headers.iter().filter(|h| h.kind == PT_DYNAMIC) {
        assert_eq!(needed_libraries(layout.data("pause"), dynamic), 0);
    }

    let root = layout.unpack();
    let pause = root.path().join("pause");
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut child = Command::new(&pause).stdin(Stdio::null()).spawn().unwrap();
        // Signal only once it catches INT (2), TERM (15) and CHLD (17): SigCgt in /proc.
        let wanted = (1u64 << 1) | (1 << 14) | (1 << 16);
        let status = format!("/proc/{}/status", child.id());
        let start = std::time::Instant::now();
        loop {
            let caught = std::fs::read_to_string(&status)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
                .unwrap();
            if caught & wanted == wanted {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "pause never caught INT, TERM and CHLD (SigCgt {caught:x})"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause exited on its own"
        );
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "pause after {signal:?}: {status}");
    }
}

/// A stand-in for an OCI distribution registry: just the calls scripts/push-image makes, one
/// request per connection (urllib closes each), the bodies checked against their digests.
/// With a login (`StubAuth`), it answers 401 with a challenge until a request carries it, and
/// hands its upload locations out on another host name (`localhost`, as blob storage would be),
/// where no login is asked for.
#[derive(Default)]
struct StubRegistryState {
    auth: StubAuth,
    blobs: std::collections::HashMap<String, Vec<u8>>,
    manifests: std::collections::HashMap<String, (String, Vec<u8>)>,
    requests: Vec<StubRequest>,
    /// Bearer tokens issued so far (the current one is `token-<issued>`) and its uses.
    issued: usize,
    uses: usize,
}

#[derive(Default, Clone)]
enum StubAuth {
    #[default]
    Open,
    /// `WWW-Authenticate: Basic realm="stub registry"` until the request carries USER:PASSWORD.
    Basic { user: String, password: String },
    /// `WWW-Authenticate: Bearer realm="http://127.0.0.1:PORT/token",service=...,scope=...`:
    /// its `/token` hands out `token-N` for Basic USER:PASSWORD and the push scope of
    /// team/pause; a token is good for `uses` requests, then refused (expired).
    Bearer {
        user: String,
        password: String,
        uses: usize,
    },
}

/// The stub's Bearer challenge's service: quoted, with a comma and a space in it.
const STUB_SERVICE: &str = "stub registry, loopback";

#[derive(Clone, Debug)]
struct StubRequest {
    /// `METHOD TARGET`
    line: String,
    /// The Host header.
    host: String,
    authorization: Option<String>,
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A query parameter's value, percent- and plus-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))?;
    let (bytes, mut out, mut i) = (value.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8(out).unwrap())
}

fn stub_registry_with(
    auth: StubAuth,
) -> (u16, std::sync::Arc<std::sync::Mutex<StubRegistryState>>) {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = std::sync::Arc::new(std::sync::Mutex::new(StubRegistryState {
        auth,
        ..Default::default()
    }));
    let shared = state.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut chunk = [0u8; 65536];
            let end = loop {
                let read = stream.read(&mut chunk).unwrap();
                assert!(read > 0, "the client closed before its headers ended");
                request.extend_from_slice(&chunk[..read]);
                if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
            };
            let head = String::from_utf8_lossy(&request[..end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            };
            let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            while request.len() < end + 4 + length {
                let read = stream.read(&mut chunk).unwrap();
                assert!(read > 0, "the client closed before its body ended");
                request.extend_from_slice(&chunk[..read]);
            }
            let body = &request[end + 4..end + 4 + length];
            let mut words = head.split_whitespace();
            let (method, target) = (
                words.next().unwrap(),
                words.next().unwrap().replace("%3A", ":"),
            );
            let mut state = shared.lock().unwrap();
            let authorization = header("authorization");
            let host = header("host").unwrap_or_default();
            state.requests.push(StubRequest {
                line: format!("{method} {target}"),
                host: host.clone(),
                authorization: authorization.clone(),
            });
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let parts: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
            // Blob storage (the upload locations on `localhost`) asks for no login.
            let storage = host.starts_with("localhost:");
            let auth = state.auth.clone();
            let challenge = match &auth {
                StubAuth::Open => None,
                StubAuth::Basic { .. } => Some("Basic realm=\"stub registry\"".to_owned()),
                StubAuth::Bearer { .. } => Some(format!(
                    "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"{STUB_SERVICE}\",\
                     scope=\"repository:team/pause:pull\""
                )),
            };
            let authorized = match &auth {
                StubAuth::Open => true,
                _ if storage => true,
                StubAuth::Basic { user, password } => {
                    authorization.as_deref() == Some(&basic(user, password))
                }
                StubAuth::Bearer { uses, .. } => {
                    let current = format!("Bearer token-{}", state.issued);
                    let valid = state.issued > 0
                        && authorization.as_deref() == Some(current.as_str())
                        && state.uses < *uses;
                    state.uses += usize::from(valid);
                    valid
                }
            };
            let (status, extra, answer) = match (method, parts.as_slice()) {
                ("GET", _) if path == "/token" => match &auth {
                    StubAuth::Bearer { user, password, .. }
                        if authorization.as_deref() == Some(&basic(user, password))
                            && query_value(query, "service").as_deref() == Some(STUB_SERVICE)
                            && query_value(query, "scope").as_deref()
                                == Some("repository:team/pause:pull,push") =>
                    {
                        state.issued += 1;
                        state.uses = 0;
                        // The first token as `token`, later ones as `access_token` (OAuth 2).
                        let key = if state.issued == 1 {
                            "token"
                        } else {
                            "access_token"
                        };
                        (
                            "200 OK",
                            "Content-Type: application/json\r\n".to_owned(),
                            format!(
                                "{{\"{key}\": \"token-{}\", \"expires_in\": 300}}",
                                state.issued
                            ),
                        )
                    }
                    _ => ("401 Unauthorized", String::new(), String::new()),
                },
                _ if !authorized => (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: {}\r\n", challenge.unwrap()),
                    "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}".to_owned(),
                ),
                ("HEAD", [.., "blobs", digest]) => (
                    if state.blobs.contains_key(*digest) {
                        "200 OK"
                    } else {
                        "404 Not Found"
                    },
                    String::new(),
                    String::new(),
                ),
                ("POST", [.., "blobs", "uploads", ""]) => (
                    "202 Accepted",
                    match auth {
                        StubAuth::Open => {
                            format!("Location: /v2/team/pause/blobs/uploads/{n}?state=opaque\r\n")
                        }
                        _ => format!(
                            "Location: http://localhost:{port}/v2/team/pause/blobs/uploads/{n}\
                             ?state=opaque\r\n"
                        ),
                    },
                    String::new(),
                ),
                ("PUT", [.., "blobs", "uploads", _]) => {
                    let digest = query
                        .split('&')
                        .find_map(|p| p.strip_prefix("digest="))
                        .unwrap_or_default();
                    assert!(
                        query.starts_with("state=opaque&"),
                        "the upload's own query was dropped: {query}"
                    );
                    if sha256(body) == digest {
                        state.blobs.insert(digest.to_owned(), body.to_vec());
                        ("201 Created", String::new(), String::new())
                    } else {
                        ("400 Bad Request", String::new(), String::new())
                    }
                }
                ("PUT", [.., "manifests", tag]) => {
                    let media_type = header("content-type").unwrap_or_default();
                    state
                        .manifests
                        .insert((*tag).to_owned(), (media_type, body.to_vec()));
                    (
                        "201 Created",
                        format!("Docker-Content-Digest: {}\r\n", sha256(body)),
                        String::new(),
                    )
                }
                _ => ("404 Not Found", String::new(), String::new()),
            };
            drop(state);
            let answer = if method == "HEAD" { "" } else { &answer };
            let response = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (port, state)
}

fn stub_registry() -> (u16, std::sync::Arc<std::sync::Mutex<StubRegistryState>>) {
    stub_registry_with(StubAuth::Open)
}

#[test]
fn push_image_uploads_missing_blobs_then_the_manifest() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("pause");
    let digest = build_image("pause", &dir, &[], &[]);
    let manifest_bytes = blob(&dir, &digest);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let (port, state) = stub_registry();
    let push = || {
        let mut command = python3();
        command
            .arg(common::repo_root().join("scripts/push-image"))
            .arg(&dir)
            .arg(format!("127.0.0.1:{port}/team/pause:3.10"))
            .env("DOCKER_CONFIG", out.path().join("no-docker-config"));
        run(command, b"")
    };

    let output = push();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("127.0.0.1:{port}/team/pause@{digest}")
    );
    let state_now = state.lock().unwrap();
    let (media_type, stored) = &state_now.manifests["3.10"];
    assert_eq!(media_type, MEDIA_MANIFEST);
    assert_eq!(
        stored, &manifest_bytes,
        "the manifest's bytes changed on the way"
    );
    for descriptor in [&manifest["layers"][0], &manifest["config"]] {
        let digest = descriptor["digest"].as_str().unwrap();
        assert_eq!(state_now.blobs[digest], blob(&dir, digest), "{digest}");
    }
    assert_eq!(
        state_now
            .requests
            .iter()
            .filter(|r| r.line.starts_with("POST "))
            .count(),
        2,
        "{:?}",
        state_now.requests
    );
    assert!(
        state_now
            .requests
            .iter()
            .all(|r| r.line.contains("/v2/team/pause/")),
        "{:?}",
        state_now.requests
    );
    drop(state_now);

    // Again: the registry has every blob, so only HEADs and the manifest.
    state.lock().unwrap().requests.clear();
    let output = push();
    assert!(output.status.success(), "{}", describe(&output));
    let requests = state.lock().unwrap().requests.clone();
    assert_eq!(
        requests
            .iter()
            .map(|r| r.line.split_whitespace().next().unwrap())
            .collect::<Vec<_>>(),
        ["HEAD", "HEAD", "PUT"],
        "{requests:?}"
    );
}

/// `scripts/registry-login REGISTRY USER` with `password` on stdin, into `docker_config`.
fn registry_login(docker_config: &Path, registry: &str, user: &str, password: &str) {
    let mut command = python3();
    command
        .arg(common::repo_root().join("scripts/registry-login"))
        .args([registry, user])
        .env("DOCKER_CONFIG", docker_config);
    let output = run(command, format!("{password}\n").as_bytes());
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(password),
        "{}",
        describe(&output)
    );
}

/// `scripts/push-image LAYOUT 127.0.0.1:PORT/team/pause:3.10` with `DOCKER_CONFIG`.
fn push_pause(layout: &Path, port: u16, docker_config: &Path) -> Output {
    let mut command = python3();
    command
        .arg(common::repo_root().join("scripts/push-image"))
        .arg(layout)
        .arg(format!("127.0.0.1:{port}/team/pause:3.10"))
        .env("DOCKER_CONFIG", docker_config);
    run(command, b"")
}

/// A refused push: exit 1, naming the registry and the fix, and no secret in the output.
fn assert_login_refused(output: &Output, registry: &str, secrets: &[&str]) {
    assert_eq!(output.status.code(), Some(1), "{}", describe(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(registry) && stderr.contains(&format!("scripts/registry-login {registry}")),
        "{}",
        describe(output)
    );
    assert!(output.stdout.is_empty(), "{}", describe(output));
    for secret in secrets {
        assert!(
            !stderr.contains(secret),
            "{secret} printed: {}",
            describe(output)
        );
    }
}

#[test]
fn push_image_logs_in_with_a_bearer_token_from_the_registry_login() {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("pause");
    let digest = build_image("pause", &layout, &[], &[]);
    let (user, password) = ("release-bot", "pa55-w0rd-never-printed");
    // Four uses a token: it expires during the push (two blobs, HEAD and POST each, then the
    // manifest), so the script has to fetch a second one.
    let (port, state) = stub_registry_with(StubAuth::Bearer {
        user: user.to_owned(),
        password: password.to_owned(),
        uses: 4,
    });
    let registry = format!("127.0.0.1:{port}");
    let secrets = [password, &basic(user, password)["Basic ".len()..]];

    // No login stored: the token service refuses the anonymous client.
    let none = push_pause(&layout, port, &out.path().join("empty"));
    assert_login_refused(&none, &registry, &secrets);
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("holds none"),
        "{}",
        describe(&none)
    );

    // A wrong password: refused by the token service, named as a refused login.
    let wrong = out.path().join("wrong");
    registry_login(&wrong, &registry, user, "not-the-password");
    let refused = push_pause(&layout, port, &wrong);
    assert_login_refused(
        &refused,
        &registry,
        &[&secrets[..], &["not-the-password"]].concat(),
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(&format!("refused the login of {user}")),
        "{}",
        describe(&refused)
    );
    assert!(state.lock().unwrap().manifests.is_empty());

    // The login scripts/registry-login stores: the push goes through.
    let config = out.path().join("docker");
    registry_login(&config, &registry, user, password);
    state.lock().unwrap().requests.clear();
    let output = push_pause(&layout, port, &config);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{registry}/team/pause@{digest}")
    );
    for secret in secrets {
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains(secret)
                && !String::from_utf8_lossy(&output.stderr).contains(secret),
            "{}",
            describe(&output)
        );
    }
    let state = state.lock().unwrap();
    assert_eq!(state.manifests["3.10"].1, blob(&layout, &digest));
    assert_eq!(state.issued, 2, "the expired token was not replaced");
    let requests = &state.requests;
    // The registry's requests: the first anonymous (it answers with the challenge), every later
    // one with the current token; one refused as expired, then a new token and a retry.
    let to_registry: Vec<&StubRequest> = requests
        .iter()
        .filter(|r| r.host == registry && r.line.contains(" /v2/"))
        .collect();
    assert_eq!(to_registry[0].authorization, None, "{requests:#?}");
    let tokens: Vec<&str> = to_registry[1..]
        .iter()
        .map(|r| r.authorization.as_deref().unwrap_or("none"))
        .collect();
    assert!(
        tokens
            .iter()
            .all(|t| *t == "Bearer token-1" || *t == "Bearer token-2"),
        "{requests:#?}"
    );
    assert_eq!(tokens.last(), Some(&"Bearer token-2"), "{requests:#?}");
    // The token service got the login, with the service and push scope of the challenge's repo.
    let token_requests: Vec<&StubRequest> = requests
        .iter()
        .filter(|r| r.line.starts_with("GET /token?"))
        .collect();
    assert_eq!(token_requests.len(), 2, "{requests:#?}");
    for request in token_requests {
        assert_eq!(
            request.authorization.as_deref(),
            Some(basic(user, password).as_str())
        );
    }
    // The uploads, on another host (blob storage), carried no credentials.
    let uploads: Vec<&StubRequest> = requests
        .iter()
        .filter(|r| r.host.starts_with("localhost:"))
        .collect();
    assert_eq!(uploads.len(), 2, "{requests:#?}");
    assert!(
        uploads.iter().all(|r| r.authorization.is_none()),
        "credentials went to blob storage: {uploads:#?}"
    );
}

#[test]
fn push_image_logs_in_with_basic_credentials_from_the_docker_config() {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("pause");
    let digest = build_image("pause", &layout, &[], &[]);
    let (user, password) = ("robot$team", "basic-secret-never-printed");
    let (port, state) = stub_registry_with(StubAuth::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    });
    let registry = format!("127.0.0.1:{port}");

    // A config with `username` and `password` fields (as some tools write it), under a URL key.
    let write_config = |dir: &Path, password: &str| {
        std::fs::create_dir_all(dir).unwrap();
        let config = serde_json::json!({
            "auths": {
                "other.example:5000": {"auth": "b3RoZXI6c2VjcmV0"},
                format!("http://{registry}/v2/"): {"username": user, "password": password},
            }
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    };
    let wrong = out.path().join("wrong");
    write_config(&wrong, "wrong-basic-password");
    let refused = push_pause(&layout, port, &wrong);
    assert_login_refused(&refused, &registry, &[password, "wrong-basic-password"]);
    let none = push_pause(&layout, port, &out.path().join("empty"));
    assert_login_refused(&none, &registry, &[password]);

    let right = out.path().join("right");
    write_config(&right, password);
    state.lock().unwrap().requests.clear();
    let output = push_pause(&layout, port, &right);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(password));
    let state = state.lock().unwrap();
    assert_eq!(state.manifests["3.10"].1, blob(&layout, &digest));
    let to_registry: Vec<&StubRequest> = state
        .requests
        .iter()
        .filter(|r| r.host == registry)
        .collect();
    assert_eq!(to_registry[0].authorization, None);
    let expected = basic(user, password);
    assert!(
        to_registry[1..]
            .iter()
            .all(|r| r.authorization.as_deref() == Some(expected.as_str())),
        "{:#?}",
        state.requests
    );
    assert!(
        state
            .requests
            .iter()
            .filter(|r| r.host.starts_with("localhost:"))
            .all(|r| r.authorization.is_none()),
        "{:#?}",
        state.requests
    );
}
