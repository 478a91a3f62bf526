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
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// Start with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to enforce IAM.
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let mut child = Command::new(super::tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", "0"])
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
            if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1) {
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
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Call a JSON-protocol API (Secrets Manager) with an unsigned request in `region`.
    pub fn json(&self, region: &str, target: &str, body: &Value) -> (u16, Value) {
        let service = target.split('.').next().unwrap();
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
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20261127/{region}/{service}/aws4_request, SignedHeaders=host, Signature=00\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
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

    /// Create a string secret; returns its ARN.
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
                    respond(
                        &mut stream,
                        "200 OK",
                        r#"{"AccessKeyId":"AKIAPODIDENTITY","SecretAccessKey":"pod-identity-secret","Token":"pod-identity-session","AccountId":"123456789012","Expiration":"2099-01-01T00:00:00Z"}"#,
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
