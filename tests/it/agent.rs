//! `secret-inject agent` with the real AWS SDK against a moto server: values, identities,
//! denials, faults, deadlines, modes, filesystems, signals, and no secret in any output.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::common::agent::{Group, agent, ram_dir};
use crate::common::moto::{Fault, FaultProxy, Moto, PodIdentityEndpoint};

fn static_credentials(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key".to_owned()),
    ]
}

/// Static credentials against `endpoint` (moto or a proxy in front of it), the secret, and the
/// RAM disk: what most tests run the agent with.
fn basic_env(endpoint: &str, arn: &str, out: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = static_credentials(endpoint)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push(("SECRET_ARN".to_owned(), arn.to_owned()));
    env.push((
        "SECRET_INJECT_OUTPUT_DIR".to_owned(),
        out.to_str().unwrap().to_owned(),
    ));
    env
}

fn with<'a>(
    base: &'a [(&'static str, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    all
}

fn mode(path: &Path) -> u32 {
    path.metadata().unwrap().permissions().mode() & 0o7777
}

/// What a directory holds apart from the current set (`..data` and the directory it points
/// to): the visible names, and anything left behind.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let current = std::fs::read_link(dir.join("..data")).ok();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap();
            name != "..data" && current.as_deref().is_none_or(|c| c.as_os_str() != name)
        })
        .collect()
}

#[test]
fn string_secret_by_arn_lands_on_the_ram_disk() {
    let moto = Moto::start();
    let arn = moto.create_secret("eu-west-1", "db-password", "P@$$word1024");
    let out = ram_dir();
    // No region anywhere: it comes from the ARN (the secret only exists in eu-west-1).
    let run = agent(&basic_env(&moto.endpoint(), &arn, out.path()), &[]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    let file = out.path().join("secret");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "P@$$word1024");
    assert_eq!(mode(&file), 0o400);
    assert_eq!(entries(out.path()), [file], "no temporary files left");
    assert!(
        run.termination.contains("wrote 1 file(s) for 1 secret(s)"),
        "{}",
        run.termination
    );
}

#[test]
fn binary_secret_by_name_with_sub_folders_and_mode() {
    let moto = Moto::start();
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let (status, body) = moto.json("us-east-1", "secretsmanager.CreateSecret", &json!({
        "Name": "tls/key", "SecretBinary": base64::engine::general_purpose::STANDARD.encode(&bytes)
    }));
    assert_eq!(status, 200, "{body}");
    let out = ram_dir();
    let creds = static_credentials(&moto.endpoint());
    let run = agent(
        &with(
            &creds,
            &[
                ("SECRET_ARN", "tls/key"),
                ("AWS_REGION", "us-east-1"),
                ("SECRET_FILENAME", "certs/tls.key"),
                ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
                ("SECRET_INJECT_FILE_MODE", "0440"),
            ],
        ),
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let file = out.path().join("certs/tls.key");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    assert_eq!(mode(&file), 0o440);
}

#[test]
fn version_stage_is_sent_explicitly() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "rotating", "v1");
    let (status, put) = moto.json(
        "us-east-1",
        "secretsmanager.PutSecretValue",
        &json!({ "SecretId": arn, "SecretString": "v2" }),
    );
    assert_eq!(status, 200, "{put}");
    let out = ram_dir();
    let dir = out.path().to_str().unwrap();
    let creds = static_credentials(&moto.endpoint());
    let env = with(
        &creds,
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", dir),
        ],
    );
    let read = |args: &[&str]| {
        let run = agent(&env, args);
        assert_eq!(run.code, Some(0), "{}", run.output);
        std::fs::read_to_string(out.path().join("secret")).unwrap()
    };
    assert_eq!(read(&[]), "v2");
    assert_eq!(read(&["--version-stage", "AWSPREVIOUS"]), "v1");
    // Move AWSCURRENT back to the first version: moto answers a request without a stage with
    // the old value here, so this only passes because the stage is sent.
    let (_, versions) = moto.json(
        "us-east-1",
        "secretsmanager.ListSecretVersionIds",
        &json!({ "SecretId": arn }),
    );
    let find = |stage: &str| {
        versions["Versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| {
                v["VersionStages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == stage)
            })
            .unwrap()["VersionId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (current, previous) = (find("AWSCURRENT"), find("AWSPREVIOUS"));
    let (status, moved) = moto.json("us-east-1", "secretsmanager.UpdateSecretVersionStage", &json!({
        "SecretId": arn, "VersionStage": "AWSCURRENT", "MoveToVersionId": previous, "RemoveFromVersionId": current
    }));
    assert_eq!(status, 200, "{moved}");
    assert_eq!(read(&[]), "v1");
    assert_eq!(read(&["--version-id", &current]), "v2");
}

#[test]
fn not_found_too_large_and_bad_configuration_fail_cleanly() {
    let moto = Moto::start();
    let big = moto.create_secret("us-east-1", "big", &"x".repeat(65_537));
    let out = ram_dir();
    let dir = out.path().to_str().unwrap();
    let creds = static_credentials(&moto.endpoint());
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf";
    for (secret, code, expect) in [
        (missing, 5, "ResourceNotFoundException"),
        (big.as_str(), 6, "TooLarge"),
        (
            "arn:aws:ssm:us-east-1:123456789012:parameter/x",
            5,
            "ParameterNotFound",
        ),
        ("arn:aws:s3:::bucket", 2, "SECRET_ARN"),
        ("not a name!", 2, "neither a secret ARN nor a secret name"),
    ] {
        let run = agent(
            &with(
                &creds,
                &[("SECRET_ARN", secret), ("SECRET_INJECT_OUTPUT_DIR", dir)],
            ),
            &[],
        );
        assert_eq!(run.code, Some(code), "{secret}: {}", run.output);
        assert!(
            run.termination.contains(expect),
            "{secret}: {}",
            run.termination
        );
        assert!(run.termination.contains("Fix:"), "{}", run.termination);
        assert!(run.output.contains(expect));
        assert!(
            entries(out.path()).is_empty(),
            "{secret}: a file was written"
        );
    }
    let run = agent(
        &with(
            &creds,
            &[
                ("SECRET_ARN", missing),
                ("SECRET_INJECT_OUTPUT_DIR", dir),
                ("SECRET_FILENAME", "../x"),
            ],
        ),
        &[],
    );
    assert_eq!(run.code, Some(2));
    assert!(
        run.termination.contains("SECRET_FILENAME"),
        "{}",
        run.termination
    );
}

#[test]
fn irsa_web_identity_goes_through_sts() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "irsa", "via-sts");
    let out = ram_dir();
    let token_dir = tempfile::tempdir().unwrap();
    let token = token_dir.path().join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp3ZWIifQ.c2ln",
    )
    .unwrap();
    let role = "arn:aws:iam::123456789012:role/webserver-secrets-role";
    let base = [
        ("SECRET_ARN", arn.as_str()),
        ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
        ("AWS_ROLE_ARN", role),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
        ("AWS_REGION", "us-east-1"),
    ];
    let endpoint = moto.endpoint();
    let mut env = base.to_vec();
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        "via-sts"
    );
    std::fs::remove_file(out.path().join("secret")).unwrap();

    // The same, with STS pointing nowhere: no credentials, so no secret. STS is really used.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_sts = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let mut env = base.to_vec();
    env.extend([
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ENDPOINT_URL_STS", &dead_sts),
    ]);
    let run = agent(&env, &["--deadline", "2s", "--attempt-timeout", "500ms"]);
    assert!(matches!(run.code, Some(3) | Some(7)), "{}", run.output);
    assert!(run.termination.contains(role), "{}", run.termination);
    assert!(entries(out.path()).is_empty());
}

#[test]
fn eks_pod_identity_uses_the_container_credentials_endpoint() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "pod-identity", "via-pod-identity");
    let out = ram_dir();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token-123").unwrap();
    let endpoint = PodIdentityEndpoint::start("pod-identity-token-123");
    let uri = format!("http://127.0.0.1:{}/v1/credentials", endpoint.port);
    let moto_endpoint = moto.endpoint();
    let run = agent(
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("AWS_ENDPOINT_URL", &moto_endpoint),
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        "via-pod-identity"
    );
    assert_eq!(
        endpoint.seen.lock().unwrap().as_slice(),
        ["pod-identity-token-123"]
    );
}

#[test]
fn iam_denial_fails_at_once_naming_the_permission() {
    // IAM enforcement on, after the setup calls below.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let arn = moto.create_secret("us-east-1", "guarded", "top-secret-value");
    let (status, _) = moto.query(
        "iam",
        &[
            ("Action", "CreateUser"),
            ("UserName", "app"),
            ("Version", "2010-05-08"),
        ],
    );
    assert_eq!(status, 200);
    let (status, keys) = moto.query(
        "iam",
        &[
            ("Action", "CreateAccessKey"),
            ("UserName", "app"),
            ("Version", "2010-05-08"),
        ],
    );
    assert_eq!(status, 200, "{keys}");
    let field = |name: &str| {
        keys.split(&format!("<{name}>"))
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned()
    };
    let (key_id, secret_key) = (field("AccessKeyId"), field("SecretAccessKey"));
    let out = ram_dir();
    let endpoint = moto.endpoint();
    let run = agent(
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("AWS_ACCESS_KEY_ID", &key_id),
            ("AWS_SECRET_ACCESS_KEY", &secret_key),
            ("AWS_ENDPOINT_URL", &endpoint),
        ],
        &[],
    );
    assert_eq!(run.code, Some(4), "{}", run.output);
    assert!(
        run.termination.contains("AccessDenied"),
        "{}",
        run.termination
    );
    assert!(
        run.termination.contains("secretsmanager:GetSecretValue"),
        "{}",
        run.termination
    );
    assert!(run.termination.contains(&arn));
    assert!(
        run.elapsed < Duration::from_secs(10),
        "denials must not be retried: {:?}",
        run.elapsed
    );
    assert!(entries(out.path()).is_empty());
}

#[test]
fn transient_faults_are_retried_to_success() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "flaky", "eventually");
    let faults = vec![
        Fault::Throttle,
        Fault::ServerError,
        Fault::Reset,
        Fault::Stall(Duration::from_secs(3)),
        Fault::Pass,
    ];
    let proxy = FaultProxy::start(moto.port, faults);
    let out = ram_dir();
    let run = agent(
        &basic_env(&proxy.endpoint(), &arn, out.path()),
        &["--attempt-timeout", "1s", "--deadline", "30s"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        "eventually"
    );
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        5
    );
    for code in ["ThrottlingException", "InternalServiceError"] {
        assert!(
            run.output.contains(code),
            "retry of {code} not logged:\n{}",
            run.output
        );
    }
}

/// A response cut mid-body (the connection closes before Content-Length bytes arrived) is
/// retried, and never written in part.
#[test]
fn a_response_cut_mid_body_is_retried_and_never_written_in_part() {
    let moto = Moto::start();
    let value = "a-value-long-enough-that-half-of-the-answer-holds-part-of-it".repeat(4);
    let arn = moto.create_secret("us-east-1", "cut", &value);
    let proxy = FaultProxy::start(moto.port, vec![Fault::CutBody, Fault::CutBody, Fault::Pass]);
    let out = ram_dir();
    let run = agent(
        &basic_env(&proxy.endpoint(), &arn, out.path()),
        &["--deadline", "20s"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        value
    );
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    // Cut every time: the deadline ends it with exit 7 and nothing written.
    let proxy = FaultProxy::start(moto.port, vec![Fault::CutBody; 1000]);
    let out = ram_dir();
    let run = agent(
        &basic_env(&proxy.endpoint(), &arn, out.path()),
        &["--deadline", "2s"],
    );
    assert_eq!(run.code, Some(7), "{}", run.output);
    assert!(entries(out.path()).is_empty());
    assert!(!run.output.contains(&value[..40]) && !run.termination.contains(&value[..40]));
}

/// STS failing (5xx, a reset) before it answers: the credentials are fetched again on the next
/// attempt, and the secret arrives within the deadline.
#[test]
fn sts_failing_for_a_while_is_retried_to_success() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "sts-flaky", "after-sts");
    let out = ram_dir();
    let token_dir = tempfile::tempdir().unwrap();
    let token = token_dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    let sts = FaultProxy::start(
        moto.port,
        vec![Fault::ServerError, Fault::Reset, Fault::Pass],
    );
    let (endpoint, sts_endpoint) = (moto.endpoint(), sts.endpoint());
    let run = agent(
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/flaky"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_STS", sts_endpoint.as_str()),
        ],
        &["--deadline", "20s", "--attempt-timeout", "2s"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        "after-sts"
    );
    assert!(
        sts.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "STS was not asked again"
    );
}

/// A name that does not resolve (a network namespace of the test's own, with only loopback, so
/// no DNS query leaves the machine): retried until the deadline, then exit 7 naming the network.
#[test]
fn a_dns_failure_is_retried_until_the_deadline_then_fails_cleanly() {
    let out = ram_dir();
    let output = std::process::Command::new("unshare")
        .args(["--net", "--"])
        .arg(env!("CARGO_BIN_EXE_secret-inject"))
        .args([
            "--log-format",
            "plain",
            "agent",
            "--deadline",
            "2s",
            "--attempt-timeout",
            "500ms",
        ])
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", "http://secrets.nowhere.invalid:443")
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env(
            "SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        )
        .env("SECRET_INJECT_OUTPUT_DIR", out.path())
        .env(
            "SECRET_INJECT_TERMINATION_LOG",
            out.path().join("..termination"),
        )
        .output()
        .expect("unshare (util-linux) must be installed; the test needs root");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(7), "{log}");
    let termination = std::fs::read_to_string(out.path().join("..termination")).unwrap();
    assert!(termination.contains("ConnectionError"), "{termination}");
    assert!(
        termination.contains("DNS"),
        "the fix names DNS: {termination}"
    );
    assert!(
        log.matches("transient error; retrying").count() >= 2,
        "not retried:\n{log}"
    );
    std::fs::remove_file(out.path().join("..termination")).unwrap();
    assert!(entries(out.path()).is_empty());
}

/// Credentials that expire between retries: each attempt gets fresh ones from the Pod Identity
/// agent, and the secret arrives.
#[test]
fn credentials_expiring_between_retries_are_fetched_again() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "short-lived", "fresh-creds");
    let out = ram_dir();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "pod-identity-token").unwrap();
    // Expiring within the SDK's refresh margin: stale by the next attempt.
    let identity = PodIdentityEndpoint::start_with_lifetime(
        "pod-identity-token",
        Some(Duration::from_secs(2)),
    );
    let uri = format!("http://127.0.0.1:{}/v1/credentials", identity.port);
    let proxy = FaultProxy::start(
        moto.port,
        vec![Fault::Throttle, Fault::Throttle, Fault::Pass],
    );
    let endpoint = proxy.endpoint();
    let run = agent(
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("AWS_ENDPOINT_URL", &endpoint),
        ],
        &["--deadline", "20s"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        "fresh-creds"
    );
    let asked = identity.seen.lock().unwrap().len();
    assert!(
        asked >= 2,
        "the expiring credentials were not fetched again ({asked} times)"
    );
}

#[test]
fn past_the_deadline_fails_cleanly_without_a_file() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "down", "never");
    let proxy = FaultProxy::start(moto.port, vec![Fault::Throttle; 1000]);
    let out = ram_dir();
    let run = agent(
        &basic_env(&proxy.endpoint(), &arn, out.path()),
        &["--deadline", "2s"],
    );
    assert_eq!(run.code, Some(7), "{}", run.output);
    assert!(run.elapsed < Duration::from_secs(6), "{:?}", run.elapsed);
    assert!(
        run.termination.contains("ThrottlingException")
            && run.termination.contains("SECRET_INJECT_DEADLINE"),
        "{}",
        run.termination
    );
    assert!(entries(out.path()).is_empty());
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "not retried"
    );
}

#[test]
fn disk_backed_directories_are_refused_unless_allowed() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "disk", "not-on-disk");
    // A disk-backed directory: the first candidate that is not tmpfs/ramfs.
    let candidates = [
        env!("CARGO_TARGET_TMPDIR"),
        "/var/tmp",
        env!("CARGO_MANIFEST_DIR"),
        "/root",
    ];
    let disk = candidates
        .iter()
        .filter_map(|dir| tempfile::tempdir_in(dir).ok())
        .find(|dir| secret_inject::agent::write::check_in_memory(dir.path(), false).is_err())
        .unwrap_or_else(|| panic!("no disk-backed directory among {candidates:?} for this test"));
    let creds = static_credentials(&moto.endpoint());
    let env = with(
        &creds,
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", disk.path().to_str().unwrap()),
        ],
    );
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(8), "{}", run.output);
    assert!(
        run.termination.contains("medium: Memory"),
        "{}",
        run.termination
    );
    // One message, each part said once.
    assert_eq!(
        run.termination.matches("Fix:").count(),
        1,
        "{}",
        run.termination
    );
    assert_eq!(
        run.termination.matches("medium: Memory").count(),
        1,
        "{}",
        run.termination
    );
    assert!(entries(disk.path()).is_empty());
    let run = agent(&env, &["--allow-disk"]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(disk.path().join("secret")).unwrap(),
        "not-on-disk"
    );
}

#[test]
fn runs_as_the_chosen_user_and_writes_owned_files() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "owned", "mine");
    let out = ram_dir();
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let endpoint = moto.endpoint();
    let termination = out.path().join("..termination");
    let status = Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=2000",
            "--clear-groups",
            env!("CARGO_BIN_EXE_secret-inject"),
            "agent",
        ])
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs([
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("SECRET_INJECT_FILE_MODE", "0440"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            (
                "SECRET_INJECT_TERMINATION_LOG",
                termination.to_str().unwrap(),
            ),
        ])
        .output()
        .expect("setpriv (util-linux) runs the agent as another user");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let meta = out.path().join("secret").metadata().unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (1000, 2000, 0o440)
    );
}

#[test]
fn no_secret_value_in_any_output_even_at_trace_level() {
    let moto = Moto::start();
    let value = "s3cr3t-VALUE-that-must-never-be-logged";
    let arn = moto.create_secret("us-east-1", "quiet", value);
    let out = ram_dir();
    let creds = static_credentials(&moto.endpoint());
    let env = with(
        &creds,
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("RUST_LOG", "trace"),
        ],
    );
    let run = agent(&env, &["--log-level", "trace"]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(
        run.output.lines().count() > 20,
        "trace logging is not on:\n{}",
        run.output
    );
    assert!(
        !run.output.contains(value),
        "the secret value leaked into the output"
    );
    assert!(
        !run.output.contains("test-secret-key"),
        "the secret access key leaked into the output"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        value
    );
}

#[test]
fn sigterm_stops_promptly_without_a_file() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "slow", "late");
    let proxy = FaultProxy::start(moto.port, vec![Fault::Stall(Duration::from_secs(30)); 10]);
    let out = ram_dir();
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_secret-inject"));
    command
        .args(["agent", "--attempt-timeout", "20s"])
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs([
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_ENDPOINT_URL", &proxy.endpoint()),
            ("HOME", scratch.path().to_str().unwrap()),
            (
                "SECRET_INJECT_TERMINATION_LOG",
                scratch.path().join("t").to_str().unwrap(),
            ),
        ])
        .stderr(Stdio::null());
    // Killed with its group if the test fails before it ends.
    let mut agent = Group::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.connections.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the agent never called AWS");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "took {:?}",
        stopped.elapsed()
    );
    assert_eq!(status.code(), Some(143));
    assert!(entries(out.path()).is_empty());
    assert!(
        std::fs::read_to_string(scratch.path().join("t"))
            .unwrap()
            .contains("SIGTERM")
    );
}

/// A loopback listener standing in for the instance metadata service: counts connections and
/// answers nothing useful.
struct FakeImds {
    endpoint: String,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeImds {
    fn start() -> FakeImds {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        FakeImds {
            endpoint,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A pod with no identity of its own, the metadata service at `imds`, and the SDK's own IMDS
/// switch on: only the agent's default keeps it from being asked.
fn no_identity_env<'a>(imds: &'a FakeImds, out: &'a Path) -> [(&'static str, &'a str); 4] {
    [
        (
            "SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        ),
        ("SECRET_INJECT_OUTPUT_DIR", out.to_str().unwrap()),
        ("AWS_EC2_METADATA_DISABLED", "false"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint.as_str()),
    ]
}

#[test]
fn no_aws_identity_fails_at_once_with_its_own_exit_code_and_never_asks_imds() {
    let imds = FakeImds::start();
    let out = ram_dir();
    let run = agent(&no_identity_env(&imds, out.path()), &["--deadline", "60s"]);
    assert_eq!(run.code, Some(9), "{}", run.output);
    assert!(
        run.elapsed < Duration::from_secs(5),
        "not at once: {:?}",
        run.elapsed
    );
    for expected in [
        "has no AWS identity",
        "eks.amazonaws.com/role-arn",
        "EKS Pod Identity association",
    ] {
        assert!(
            run.termination.contains(expected),
            "{expected:?} missing: {}",
            run.termination
        );
    }
    assert!(
        !run.termination.contains("network path"),
        "{}",
        run.termination
    );
    assert_eq!(
        imds.connections(),
        0,
        "the agent asked the instance metadata service"
    );
    assert!(entries(out.path()).is_empty());
}

#[test]
fn instance_metadata_is_asked_only_when_allowed() {
    let imds = FakeImds::start();
    let out = ram_dir();
    let run = agent(
        &no_identity_env(&imds, out.path()),
        &["--allow-instance-metadata", "--deadline", "3s"],
    );
    assert_ne!(run.code, Some(0), "{}", run.output);
    assert_ne!(
        run.code,
        Some(9),
        "with IMDS allowed the pod has an identity to try: {}",
        run.output
    );
    assert!(
        imds.connections() > 0,
        "IMDS was allowed but not asked:\n{}",
        run.output
    );
    assert!(entries(out.path()).is_empty());
}

#[test]
fn a_pod_identity_agent_that_does_not_answer_yet_is_retried() {
    // EKS Pod Identity configured, its agent not listening yet (a new node): transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}/v1/credentials", closed.local_addr().unwrap());
    drop(closed);
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    std::fs::write(&token, "pod-identity-token").unwrap();
    let out = ram_dir();
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
    let env = [
        ("SECRET_ARN", arn),
        ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token.to_str().unwrap(),
        ),
    ];
    let run = agent(&env, &["--deadline", "2s", "--attempt-timeout", "500ms"]);
    assert_eq!(run.code, Some(7), "{}", run.output);
    assert!(
        run.elapsed >= Duration::from_millis(1500),
        "gave up early: {:?}",
        run.elapsed
    );
    assert!(
        run.output.matches("retrying").count() >= 2,
        "{}",
        run.output
    );
}

#[test]
fn each_retry_is_one_concise_line() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "concise", "value");
    let proxy = FaultProxy::start(
        moto.port,
        vec![
            Fault::ServerError,
            Fault::Throttle,
            Fault::Reset,
            Fault::Pass,
        ],
    );
    let out = ram_dir();
    let run = agent(
        &basic_env(&proxy.endpoint(), &arn, out.path()),
        &["--deadline", "30s", "--log-level", "debug"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    // The details are there, at debug level, on lines of their own.
    assert!(
        run.output.contains("transient error detail"),
        "{}",
        run.output
    );
    let retries: Vec<&str> = run
        .output
        .lines()
        .filter(|l| l.contains("transient error; retrying"))
        .collect();
    assert_eq!(retries.len(), 3, "{}", run.output);
    for line in retries {
        assert!(line.contains("attempt="), "{line}");
        assert!(line.contains("code="), "{line}");
        assert!(line.contains("retry_in_ms="), "{line}");
        assert!(line.len() < 250, "{} chars: {line}", line.len());
        // Attempt, code and next delay only: the error's details are the debug line's.
        for noise in ["detail=", "headers", "body", "SdkBody", "{"] {
            assert!(!line.contains(noise), "{noise:?} in {line}");
        }
    }
}

/// Lines that dump an SDK error's Debug form instead of saying what happened.
fn debug_dumps(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|line| {
            [
                "ProviderError(",
                "ServiceError(",
                "DispatchFailure(",
                "{ ",
                " }",
            ]
            .iter()
            .any(|dump| line.contains(dump))
        })
        .collect()
}

/// An identity that can never work (a token file the kubelet did not project, a role that is
/// no ARN, a Pod Identity token that is missing) fails at once with exit 9, naming the variable,
/// the file and the fix, before any AWS call, instead of being retried until the deadline and
/// blamed on the network.
#[test]
fn a_misconfigured_identity_fails_at_once_naming_the_file_and_the_fix() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "misconfigured", "never-read");
    // Every AWS call (STS, Secrets Manager, the Pod Identity endpoint) goes through the proxy,
    // which counts them.
    let proxy = FaultProxy::start(moto.port, vec![]);
    let endpoint = proxy.endpoint();
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    let missing = scratch.path().join("not-projected/token");
    let (token, missing) = (token.to_str().unwrap(), missing.to_str().unwrap());
    let role = "arn:aws:iam::123456789012:role/webserver-secrets-role";
    let pod_identity_uri = format!("{endpoint}/v1/credentials");
    // (case, the identity's environment, what the termination message says)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            "IRSA token file missing",
            vec![
                ("AWS_ROLE_ARN", role),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", missing),
            ],
            &[
                "WebIdentityTokenUnreadable",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                missing,
                "no such file",
                "eks.amazonaws.com/role-arn",
                "amazon-eks-pod-identity-webhook",
            ],
        ),
        (
            "IRSA role that is no ARN",
            vec![
                ("AWS_ROLE_ARN", "webserver-secrets-role"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token),
            ],
            &[
                "InvalidRoleArn",
                "\"webserver-secrets-role\" is not an IAM role ARN",
                "eks.amazonaws.com/role-arn",
            ],
        ),
        (
            "Pod Identity token file missing",
            vec![
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &pod_identity_uri),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", missing),
            ],
            &[
                "PodIdentityTokenUnreadable",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                missing,
                "EKS Pod Identity Agent",
            ],
        ),
    ];
    for (case, identity, expected) in cases {
        let out = ram_dir();
        let mut env = vec![
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
        ];
        env.extend(identity);
        // The default deadline (120s): a retried failure would take that long.
        let run = agent(&env, &[]);
        assert_eq!(run.code, Some(9), "{case}: {}", run.output);
        assert!(
            run.elapsed < Duration::from_secs(30),
            "{case}: not at once: {:?}",
            run.elapsed
        );
        for expected in expected {
            assert!(
                run.termination.contains(expected),
                "{case}: {expected:?} missing: {}",
                run.termination
            );
        }
        for wrong in ["network path", "SECRET_INJECT_DEADLINE", "retrying"] {
            assert!(
                !run.termination.contains(wrong) && !run.output.contains(wrong),
                "{case}: {wrong:?}: {}",
                run.output
            );
        }
        assert_eq!(debug_dumps(&run.output), Vec::<&str>::new(), "{case}");
        assert!(entries(out.path()).is_empty(), "{case}");
    }
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "an AWS call was made for an identity that cannot work"
    );
}

/// STS failing (5xx) until the deadline: each retry is one line in words, at info and at
/// debug level; no line of the run (the SDK's own included) dumps an error's Debug form.
#[test]
fn retries_of_a_failing_sts_are_one_readable_line_each() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "sts-down", "never-read");
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    for level in ["info", "debug"] {
        let sts = FaultProxy::start(moto.port, vec![Fault::ServerError; 1000]);
        let out = ram_dir();
        let (endpoint, sts_endpoint) = (moto.endpoint(), sts.endpoint());
        let run = agent(
            &[
                ("SECRET_ARN", arn.as_str()),
                ("SECRET_INJECT_OUTPUT_DIR", out.path().to_str().unwrap()),
                ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/sts-down"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
                ("AWS_ENDPOINT_URL_STS", sts_endpoint.as_str()),
            ],
            &["--deadline", "2s", "--log-level", level],
        );
        assert_eq!(run.code, Some(7), "{level}: {}", run.output);
        let retries = run
            .output
            .lines()
            .filter(|l| l.contains("transient error; retrying"))
            .count();
        assert!(retries >= 2, "{level}: not retried: {}", run.output);
        // Ours: the retry line, its detail (debug) and the final message, in words.
        let ours: Vec<&str> = run
            .output
            .lines()
            .filter(|l| {
                [
                    "retrying",
                    "transient error detail",
                    "cannot provide secret",
                ]
                .iter()
                .any(|m| l.contains(m))
            })
            .collect();
        assert_eq!(debug_dumps(&ours.join("\n")), Vec::<&str>::new(), "{level}");
        // The SDK's credential providers say nothing of their own at the default level.
        if level == "info" {
            assert_eq!(debug_dumps(&run.output), Vec::<&str>::new());
            assert!(
                !run.output
                    .contains("provider failed to provide credentials")
                    && !run.output.contains("STS returned an error"),
                "{}",
                run.output
            );
        }
        assert!(entries(out.path()).is_empty());
    }
}
