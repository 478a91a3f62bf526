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
