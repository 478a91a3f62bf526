//! A moto server (the AWS wire protocol, locally), a fault-injecting proxy in front of it, and a
//! fake EKS Pod Identity credentials endpoint.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    /// Where it listens: loopback, or the test node's bridge address (pods reach it there).
    pub host: String,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// Start with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to enforce IAM.
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        Moto::start_on("127.0.0.1", env)
    }

    /// Start listening on `host` (an address of this machine).
    pub fn start_on(host: &str, env: &[(&str, &str)]) -> Moto {
        let mut child = Command::new(super::tool("moto_server"))
            .args(["-H", host, "-p", "0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        let mut seen = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            seen.push_str(&line);
            if let Some(rest) = line.split(&format!("Running on http://{host}:")).nth(1) {
                port = rest.trim().parse().ok();
                break;
            }
        }
        let port = port.unwrap_or_else(|| panic!("moto_server did not start:\n{seen}"));
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        Moto {
            child,
            host: host.to_owned(),
            port,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Call a JSON-protocol API (Secrets Manager, Systems Manager) with an unsigned request in
    /// `region`.
    pub fn json(&self, region: &str, target: &str, body: &Value) -> (u16, Value) {
        // The credential scope names the service as its endpoint does (`ssm`), the target as
        // its API does (`AmazonSSM`).
        let service = match target.split('.').next().unwrap() {
            "AmazonSSM" => "ssm",
            other => other,
        };
        let (status, body) = self.post(
            region,
            service,
            &[
                ("X-Amz-Target", target),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            serde_json::to_vec(body).unwrap(),
        );
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Call a query-protocol API (IAM, STS): form parameters in, XML out.
    pub fn query(&self, service: &str, params: &[(&str, &str)]) -> (u16, String) {
        let body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        let (status, body) = self.post(
            "us-east-1",
            service,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.join("&").into_bytes(),
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// POST to moto with the service named in the credential scope (how moto routes requests).
    pub fn post(
        &self,
        region: &str,
        service: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20261127/{region}/{service}/aws4_request, SignedHeaders=host, Signature=00\r\n",
            self.host,
            self.port,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP response");
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = response[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// Turn moto's IAM enforcement on after `free` more requests (`0`: from the next one).
    pub fn reset_auth(&self, free: u32) {
        let body = free.to_string();
        let request = format!(
            "POST /moto-api/reset-auth HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "reset-auth: {response}"
        );
    }

    /// An IAM user with an inline policy (`Statement` as given) and an access key; returns
    /// `(access key id, secret access key)`. Call before IAM enforcement is on.
    pub fn iam_user(&self, name: &str, statements: &Value) -> (String, String) {
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": statements});
        let policy = policy.to_string();
        for params in [
            vec![("Action", "CreateUser"), ("UserName", name)],
            vec![
                ("Action", "PutUserPolicy"),
                ("UserName", name),
                ("PolicyName", "secrets"),
                ("PolicyDocument", policy.as_str()),
            ],
        ] {
            let mut params = params;
            params.push(("Version", "2010-05-08"));
            let (status, body) = self.query("iam", &params);
            assert_eq!(status, 200, "{params:?}: {body}");
        }
        let (status, keys) = self.query(
            "iam",
            &[
                ("Action", "CreateAccessKey"),
                ("UserName", name),
                ("Version", "2010-05-08"),
            ],
        );
        assert_eq!(status, 200, "{keys}");
        let field = |tag: &str| {
            keys.split(&format!("<{tag}>"))
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .unwrap_or_else(|| panic!("no {tag} in {keys}"))
                .to_owned()
        };
        (field("AccessKeyId"), field("SecretAccessKey"))
    }

    /// An IAM role with an inline policy (`Statement` as given), for an identity that reaches
    /// it through STS (IRSA's web identity); returns its ARN. Call before IAM enforcement is on.
    pub fn iam_role(&self, name: &str, statements: &Value) -> String {
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": statements});
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
            "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.example"}}]});
        let (policy, trust) = (policy.to_string(), trust.to_string());
        let (status, created) = self.query(
            "iam",
            &[
                ("Action", "CreateRole"),
                ("RoleName", name),
                ("AssumeRolePolicyDocument", &trust),
                ("Version", "2010-05-08"),
            ],
        );
        assert_eq!(status, 200, "CreateRole {name}: {created}");
        let (status, body) = self.query(
            "iam",
            &[
                ("Action", "PutRolePolicy"),
                ("RoleName", name),
                ("PolicyName", "secrets"),
                ("PolicyDocument", &policy),
                ("Version", "2010-05-08"),
            ],
        );
        assert_eq!(status, 200, "PutRolePolicy {name}: {body}");
        created
            .split("<Arn>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_else(|| panic!("no Arn in {created}"))
            .to_owned()
    }

    /// Create a Systems Manager parameter (`String`, `StringList` or `SecureString`); returns
    /// its ARN.
    pub fn put_parameter(&self, region: &str, name: &str, kind: &str, value: &str) -> String {
        let (status, body) = self.json(
            region,
            "AmazonSSM.PutParameter",
            &serde_json::json!({ "Name": name, "Type": kind, "Value": value }),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = self.json(
            region,
            "AmazonSSM.GetParameter",
            &serde_json::json!({ "Name": name }),
        );
        assert_eq!(status, 200, "{body}");
        body["Parameter"]["ARN"].as_str().unwrap().to_owned()
    }

    /// Create a string secret; returns its ARN.
    /// The version id that holds AWSCURRENT.
    pub fn current_version(&self, arn: &str) -> String {
        let (status, body) = self.json(
            "us-east-1",
            "secretsmanager.DescribeSecret",
            &serde_json::json!({"SecretId": arn}),
        );
        assert_eq!(status, 200, "{body}");
        body["VersionIdsToStages"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, stages)| stages.as_array().unwrap().iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.clone())
            .unwrap()
    }

    /// Rotate as Secrets Manager rotation does: the new value as AWSPENDING (version `token`),
    /// then AWSCURRENT moved to it (moto then answers a request without a stage with the old
    /// value: the agent must ask for the stage).
    pub fn rotate(&self, arn: &str, value: &str, token: &str) {
        let old = self.current_version(arn);
        let (status, body) = self.json(
            "us-east-1",
            "secretsmanager.PutSecretValue",
            &serde_json::json!({"SecretId": arn, "SecretString": value,
                "ClientRequestToken": token, "VersionStages": ["AWSPENDING"]}),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = self.json(
            "us-east-1",
            "secretsmanager.UpdateSecretVersionStage",
            &serde_json::json!({"SecretId": arn, "VersionStage": "AWSCURRENT",
                "MoveToVersionId": token, "RemoveFromVersionId": old}),
        );
        assert_eq!(status, 200, "{body}");
    }

    pub fn create_secret(&self, region: &str, name: &str, value: &str) -> String {
        let (status, body) = self.json(
            region,
            "secretsmanager.CreateSecret",
            &serde_json::json!({ "Name": name, "SecretString": value }),
        );
        assert_eq!(status, 200, "{body}");
        body["ARN"].as_str().unwrap().to_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
    out
}

pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the proxy does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 ThrottlingException.
    Throttle,
    /// HTTP 500 InternalServiceError.
    ServerError,
    /// Close the connection without answering (reset).
    Reset,
    /// Read the request, then answer nothing for this long.
    Stall(Duration),
    /// Forward to moto, then pass on the answer's head and only half of its body, and close.
    CutBody,
    /// Forward to moto.
    Pass,
}

/// A proxy that applies scripted faults to successive connections, then forwards to moto.
pub struct FaultProxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream: u16, faults: Vec<Fault>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(VecDeque::from(faults)));
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let fault = faults.lock().unwrap().pop_front().unwrap_or(Fault::Pass);
                std::thread::spawn(move || handle(stream, fault, upstream));
            }
        });
        FaultProxy { port, connections }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Read one HTTP request (head and Content-Length body).
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return data,
            Ok(n) => n,
        };
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return data;
            }
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

fn handle(mut stream: TcpStream, fault: Fault, upstream: u16) {
    let request = read_request(&mut stream);
    match fault {
        Fault::Throttle => respond(
            &mut stream,
            "400 Bad Request",
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
        Fault::ServerError => respond(
            &mut stream,
            "500 Internal Server Error",
            r#"{"__type":"InternalServiceError","message":"An error occurred on the server side."}"#,
        ),
        Fault::Reset => {
            let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
            drop(stream);
        }
        Fault::Stall(duration) => {
            std::thread::sleep(duration);
            drop(stream);
        }
        Fault::CutBody => {
            let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let _ = upstream.write_all(&request);
            let mut response = Vec::new();
            let _ = upstream.read_to_end(&mut response);
            let head_end = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(response.len(), |at| at + 4);
            let cut = head_end + (response.len() - head_end) / 2;
            let _ = stream.write_all(&response[..cut]);
            let _ = stream.shutdown(Shutdown::Both);
        }
        Fault::Pass => {
            let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let _ = upstream.write_all(&request);
            let mut response = Vec::new();
            let _ = upstream.read_to_end(&mut response); // moto closes every connection
            let _ = stream.write_all(&response);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A fake EKS Pod Identity agent: answers credentials to requests whose Authorization header
/// equals `token`; records every Authorization header it saw.
pub struct PodIdentityEndpoint {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl PodIdentityEndpoint {
    pub fn start(token: &str) -> PodIdentityEndpoint {
        PodIdentityEndpoint::start_with_lifetime(token, None)
    }

    /// Credentials that expire `lifetime` after each answer (`None`: in 2099).
    pub fn start_with_lifetime(token: &str, lifetime: Option<Duration>) -> PodIdentityEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (token, record) = (token.to_owned(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let request = String::from_utf8_lossy(&read_request(&mut stream)).into_owned();
                let auth = request
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                record.lock().unwrap().push(auth.clone());
                if auth == token {
                    let expiration = lifetime
                        .map(|l| rfc3339(std::time::SystemTime::now() + l))
                        .unwrap_or_else(|| "2099-01-01T00:00:00Z".to_owned());
                    respond(
                        &mut stream,
                        "200 OK",
                        &format!(
                            r#"{{"AccessKeyId":"AKIAPODIDENTITY","SecretAccessKey":"pod-identity-secret","Token":"pod-identity-session","AccountId":"123456789012","Expiration":"{expiration}"}}"#
                        ),
                    );
                } else {
                    respond(
                        &mut stream,
                        "401 Unauthorized",
                        r#"{"Message":"bad token"}"#,
                    );
                }
            }
        });
        PodIdentityEndpoint { port, seen }
    }
}

/// `2026-12-02T01:02:03Z` for a time (UTC; days to a civil date by Howard Hinnant's method).
fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Where an [`AwsProxy`] sends the requests signed for one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward to this loopback port (moto). A port nobody listens on gets `502 Bad Gateway`
    /// and the connection closed, as a load balancer in front of a dead region would answer.
    Forward(u16),
    /// Answer with this status and JSON body, never forwarding.
    Answer(u16, String),
}

/// One request an [`AwsProxy`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `X-Amz-Target` for the JSON protocols (`secretsmanager.BatchGetSecretValue`,
    /// `AmazonSSM.GetParameters`); for the query protocols the service of the credential scope
    /// and the `Action` (`sts.AssumeRoleWithWebIdentity`, or just the action when unsigned).
    pub operation: String,
    /// The region of the SigV4 credential scope (empty when unsigned).
    pub region: String,
    /// The status of the answer the client got.
    pub status: u16,
    /// What the request names, as sent: `SecretId`, each of `SecretIdList` (Secrets Manager),
    /// each of `Names` (GetParameters).
    pub resources: Vec<String>,
}

/// A loopback HTTP/1.1 proxy in front of AWS stand-ins that records every request by operation
/// and region, and routes it by the region its signature is scoped to.
///
/// It counts requests, not connections: a client may send several requests over one kept-alive
/// connection, and each is read, recorded and answered in turn. Moto answers every request with
/// `Connection: close`; that answer is passed on as it is, so the client then opens a new
/// connection, exactly as it would talking to moto directly.
pub struct AwsProxy {
    pub port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Client connections accepted.
    pub connections: Arc<AtomicUsize>,
}

impl AwsProxy {
    /// Every region to `upstream`.
    pub fn counting(upstream: u16) -> AwsProxy {
        AwsProxy::routed(Vec::new(), Route::Forward(upstream))
    }

    /// Requests signed for a region in `routes` go its way, all others `otherwise`.
    pub fn routed(routes: Vec<(&str, Route)>, otherwise: Route) -> AwsProxy {
        let routes: Vec<(String, Route)> = routes
            .into_iter()
            .map(|(region, route)| (region.to_owned(), route))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (record, counter) = (calls.clone(), connections.clone());
        let routes = Arc::new((routes, otherwise));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let (record, routes) = (record.clone(), routes.clone());
                std::thread::spawn(move || {
                    serve_connection(stream, &routes.0, &routes.1, &record);
                });
            }
        });
        AwsProxy {
            port,
            calls,
            connections,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, in the order they arrived.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Requests per operation.
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for call in self.calls() {
            *counts.entry(call.operation).or_insert(0) += 1;
        }
        counts
    }

    /// Requests for `operation` (any region, any answer).
    pub fn count(&self, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// Forget the requests so far.
    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }
}

/// A socket with what was read from it but not yet used.
struct Wire {
    stream: TcpStream,
    buffer: Vec<u8>,
    eof: bool,
}

/// One HTTP message as read: its head (start line and headers), its body, and its raw bytes.
struct Message {
    head: String,
    body: Vec<u8>,
    raw: Vec<u8>,
    /// The body ran to the end of the stream (a response without a length).
    until_close: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    fn closes(&self) -> bool {
        self.until_close
            || self
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        Wire {
            stream,
            buffer: Vec::new(),
            eof: false,
        }
    }

    /// Read more; false at the end of the stream.
    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buffer.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buffer.drain(..n).collect())
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                return self.take(end + 2);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next message; `None` when the stream ends before a whole one arrived.
    fn message(&mut self, response: bool) -> Option<Message> {
        let end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if !self.fill() {
                return None;
            }
        };
        let mut raw = self.take(end + 4)?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut message = Message {
            head,
            body: Vec::new(),
            raw: Vec::new(),
            until_close: false,
        };
        let status = message
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        let bodyless = response && matches!(status, Some(100..=199 | 204 | 304));
        if message
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let line = self.take_line()?;
                raw.extend_from_slice(&line);
                let size = String::from_utf8_lossy(&line);
                let size = size.trim().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16).ok()?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let line = self.take_line()?;
                        raw.extend_from_slice(&line);
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let chunk = self.take(size + 2)?;
                message.body.extend_from_slice(&chunk[..size]);
                raw.extend_from_slice(&chunk);
            }
        } else if let Some(length) = message.header("content-length") {
            let length: usize = length.parse().ok()?;
            let body = self.take(length)?;
            message.body.extend_from_slice(&body);
            raw.extend_from_slice(&body);
        } else if response && !bodyless {
            while self.fill() {}
            let rest = std::mem::take(&mut self.buffer);
            message.body.extend_from_slice(&rest);
            raw.extend_from_slice(&rest);
            message.until_close = true;
        }
        message.raw = raw;
        Some(message)
    }
}

/// `(service, region)` of the SigV4 credential scope in an `Authorization` header.
fn credential_scope(authorization: &str) -> Option<(String, String)> {
    let scope = authorization.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    let (_key, _date, region, service) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((service.to_owned(), region.to_owned()))
}

/// What the request asks for: the JSON target, else the query `Action`.
fn operation_of(request: &Message, service: Option<&str>) -> String {
    if let Some(target) = request.header("x-amz-target") {
        return target.to_owned();
    }
    let body = String::from_utf8_lossy(&request.body);
    let query = request
        .head
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .map(|(_, query)| query.to_owned())
        .unwrap_or_default();
    let action = body
        .split('&')
        .chain(query.split('&'))
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_owned);
    match (service, action) {
        (Some(service), Some(action)) => format!("{service}.{action}"),
        (None, Some(action)) => action,
        (_, None) => format!(
            "UNKNOWN {}",
            request.head.lines().next().unwrap_or_default()
        ),
    }
}

/// The secrets or parameters a JSON-protocol request names (none for other requests).
fn resources_of(body: &[u8]) -> Vec<String> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut resources: Vec<String> = body["SecretId"]
        .as_str()
        .map(str::to_owned)
        .into_iter()
        .collect();
    for list in ["SecretIdList", "Names"] {
        resources.extend(
            body[list]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
    }
    resources
}

fn scripted(status: u16, reason: &str, body: &str, close: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         Content-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        body.len(),
        if close { "close" } else { "keep-alive" }
    )
    .into_bytes()
}

fn serve_connection(
    stream: TcpStream,
    routes: &[(String, Route)],
    otherwise: &Route,
    calls: &Mutex<Vec<Call>>,
) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut client = Wire::new(stream);
    while let Some(request) = client.message(false) {
        let scope = request.header("authorization").and_then(credential_scope);
        let operation = operation_of(&request, scope.as_ref().map(|(s, _)| s.as_str()));
        let region = scope.map(|(_, r)| r).unwrap_or_default();
        let route = routes
            .iter()
            .find(|(r, _)| *r == region)
            .map(|(_, route)| route)
            .unwrap_or(otherwise);
        let client_closes = request.closes();
        // (status, bytes for the client, close after them)
        let (status, bytes, close) = match route {
            Route::Answer(status, body) => (
                *status,
                scripted(*status, "Scripted", body, client_closes),
                client_closes,
            ),
            Route::Forward(port) => match TcpStream::connect(("127.0.0.1", *port)) {
                Err(_) => (
                    502,
                    scripted(502, "Bad Gateway", r#"{"message":"no upstream"}"#, true),
                    true,
                ),
                Ok(mut upstream) => {
                    let _ = upstream.write_all(&request.raw);
                    match Wire::new(upstream).message(true) {
                        // Upstream hung up without an answer: so does the proxy.
                        None => (0, Vec::new(), true),
                        Some(response) => {
                            let status = response
                                .head
                                .split_whitespace()
                                .nth(1)
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            let close = client_closes || response.closes();
                            (status, response.raw, close)
                        }
                    }
                }
            },
        };
        // Recorded before the client has its answer: once the client is done, so is the count.
        calls.lock().unwrap().push(Call {
            operation,
            region,
            status,
            resources: resources_of(&request.body),
        });
        if writer.write_all(&bytes).is_err() || close {
            break;
        }
    }
    let _ = writer.flush();
    let _ = writer.shutdown(Shutdown::Both);
}
