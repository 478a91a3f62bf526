//! Egress proxies (issue 19 item 3): the agent sends its AWS calls through `HTTPS_PROXY` /
//! `HTTP_PROXY` and honours `NO_PROXY`, as the other AWS SDKs do; the node-local credential
//! endpoint (EKS Pod Identity) is always reached directly. Every address is on loopback: an
//! endpoint the proxy must carry is one where nothing listens (127.0.0.2, 127.0.0.3), so a call
//! that skipped the proxy fails instead of reaching anything.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::agent::{agent, ram_dir};
use crate::common::moto::{AwsProxy, Moto, PodIdentityEndpoint};

const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST"),
    ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
];

/// A proxy that refuses every CONNECT with 403 and records the request lines it was sent.
struct RefusingProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RefusingProxy {
    fn start() -> RefusingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                record.lock().unwrap().push(line.trim_end().to_owned());
                let _ = stream.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        RefusingProxy { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Static keys, the secret and the RAM disk, then `extra`: each run's environment.
fn run_env<'a>(
    arn: &'a str,
    out: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<(&str, &str)> = KEYS.to_vec();
    env.extend([("SECRET_ARN", arn), ("SECRET_INJECT_OUTPUT_DIR", out)]);
    env.extend_from_slice(extra);
    env
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn http_proxy_carries_the_calls_and_no_proxy_bypasses_it() {
    let moto = Moto::start();
    let arn = moto.create_secret("eu-west-1", "via-proxy", "through the proxy");
    let out = ram_dir();
    let out_dir = out.path().to_str().unwrap().to_owned();
    let proxy = AwsProxy::counting(moto.port);
    let proxy_url = proxy.endpoint();
    // The endpoint is where nothing listens: only the proxy (which forwards to moto) can answer.
    let unreachable = format!("http://127.0.0.2:{}", closed_port());
    let env = run_env(
        arn.as_str(),
        &out_dir,
        &[
            ("AWS_ENDPOINT_URL", &unreachable),
            ("HTTP_PROXY", &proxy_url),
        ],
    );
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        "through the proxy"
    );
    assert_eq!(
        proxy.count("secretsmanager.GetSecretValue"),
        1,
        "{:?}",
        proxy.calls()
    );

    // NO_PROXY names the endpoint: the agent goes straight to it, never to the (dead) proxy.
    let dead_proxy = format!("http://127.0.0.1:{}", closed_port());
    let direct = moto.endpoint();
    let out = ram_dir();
    let out_dir = out.path().to_str().unwrap().to_owned();
    let env = run_env(
        arn.as_str(),
        &out_dir,
        &[
            ("AWS_ENDPOINT_URL", &direct),
            ("HTTP_PROXY", &dead_proxy),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(0), "{}", run.output);

    // Without NO_PROXY the same run goes to the dead proxy and fails, naming the proxy.
    let out = ram_dir();
    let out_dir = out.path().to_str().unwrap().to_owned();
    let env = run_env(
        arn.as_str(),
        &out_dir,
        &[
            ("AWS_ENDPOINT_URL", &direct),
            ("HTTP_PROXY", &dead_proxy),
            ("SECRET_INJECT_DEADLINE", "2s"),
            ("SECRET_INJECT_ATTEMPT_TIMEOUT", "500ms"),
        ],
    );
    let run = agent(&env, &[]);
    assert_ne!(run.code, Some(0), "{}", run.output);
    assert!(!out.path().join("secret").exists());
    assert!(
        run.termination.contains("proxy"),
        "the message points at the proxy: {}",
        run.termination
    );
}

#[test]
fn https_proxy_gets_a_connect_for_the_endpoint() {
    let proxy = RefusingProxy::start();
    let out = ram_dir();
    let out_dir = out.path().to_str().unwrap().to_owned();
    let endpoint = format!("https://127.0.0.3:{}", closed_port());
    let proxy_url = proxy.url();
    let mut env: Vec<(&str, &str)> = KEYS.to_vec();
    env.extend([
        (
            "SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        ),
        ("SECRET_INJECT_OUTPUT_DIR", &out_dir),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("HTTPS_PROXY", &proxy_url),
        ("SECRET_INJECT_DEADLINE", "2s"),
        ("SECRET_INJECT_ATTEMPT_TIMEOUT", "500ms"),
    ]);
    let run = agent(&env, &[]);
    assert_ne!(run.code, Some(0), "{}", run.output);
    let seen = proxy.seen.lock().unwrap().clone();
    let connect = format!(
        "CONNECT {} HTTP/1.1",
        endpoint.trim_start_matches("https://")
    );
    assert!(
        !seen.is_empty() && seen.iter().all(|line| *line == connect),
        "the proxy saw {seen:?}, expected {connect:?}"
    );
    assert!(!out.path().join("secret").exists());
}

#[test]
fn the_pod_identity_endpoint_is_reached_directly_while_aws_calls_take_the_proxy() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "pod-identity-proxy", "direct credentials");
    let out = ram_dir();
    let out_dir = out.path().to_str().unwrap().to_owned();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token-123").unwrap();
    let identity = PodIdentityEndpoint::start("pod-identity-token-123");
    let uri = format!("http://127.0.0.1:{}/v1/credentials", identity.port);
    let proxy = AwsProxy::counting(moto.port);
    let proxy_url = proxy.endpoint();
    let unreachable = format!("http://127.0.0.2:{}", closed_port());
    let run = agent(
        &[
            ("SECRET_ARN", arn.as_str()),
            ("SECRET_INJECT_OUTPUT_DIR", &out_dir),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("AWS_ENDPOINT_URL", &unreachable),
            ("HTTP_PROXY", &proxy_url),
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert_eq!(
        identity.seen.lock().unwrap().as_slice(),
        ["pod-identity-token-123"],
        "the credentials came from the endpoint itself"
    );
    let calls = proxy.calls();
    assert!(
        !calls.is_empty()
            && calls
                .iter()
                .all(|c| c.operation.starts_with("secretsmanager.")),
        "only AWS calls went through the proxy: {calls:?}"
    );
}
