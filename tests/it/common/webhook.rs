//! Start the real `secret-inject webhook` binary and talk to it over TLS the way the API server
//! does.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A running webhook process. Killed on drop.
pub struct Webhook {
    pub child: Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    /// Every log line so far (JSON).
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

/// Two free loopback ports for the webhook and admin servers. The ports are released before
/// the process binds them; another process taking one in between makes the start fail loudly.
pub fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

impl Webhook {
    /// Start with the given extra arguments (a development certificate unless certificate
    /// files are among them); waits until the admin port reports ready.
    pub fn start(extra: &[&str]) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let (port, admin_port) = free_ports();
        let (port_arg, admin_arg) = (port.to_string(), admin_port.to_string());
        let mut args = vec![
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "webhook",
            "--bind-address",
            "127.0.0.1",
            "--port",
            &port_arg,
            "--admin-port",
            &admin_arg,
            "--namespace",
            "testns",
            "--service-name",
            "secret-inject",
        ];
        let ca_arg = ca.to_string_lossy().into_owned();
        if !extra.contains(&"--tls-cert-file") {
            args.extend(["--dev-tls", "--write-ca", &ca_arg]);
        }
        args.extend(extra);
        let mut command = Command::new(env!("CARGO_BIN_EXE_secret-inject"));
        command.args(&args);
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Webhook::from_command(command, dir, loopback(port), loopback(admin_port))
    }

    /// Start the webhook with a command built by the caller (e.g. the binary run through
    /// `chroot`), listening at `webhook` and `admin`. Waits until `/readyz` on the admin port
    /// answers 200. `dir` is kept for as long as the process runs; [`Webhook::ca_path`] is only
    /// meaningful when the command writes the CA to `dir/ca.pem`.
    pub fn from_command(
        mut command: Command,
        dir: tempfile::TempDir,
        webhook: SocketAddr,
        admin: SocketAddr,
    ) -> Webhook {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_ready(admin) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "webhook exited ({status}); logs: {:?}",
                    logs.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "webhook not ready within 20 s; logs: {:?}",
                logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Webhook {
            child,
            webhook,
            admin,
            logs,
            dir,
        }
    }

    /// The generated development CA (when no certificate files were given).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Wait for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "webhook did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// GET a path on the admin port (plain HTTP/1.1).
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let stream = TcpStream::connect(self.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = sender
            .send_request(
                Request::get(path)
                    .header("host", "admin")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// `GET /metrics` of the admin port, blocking.
pub fn metrics(admin: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// `GET /readyz` answers 200.
fn is_ready(admin: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(admin) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client configuration that trusts only the CA in `ca_pem_file`.
pub fn tls_client(ca_pem_file: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Connect with TLS, verifying the certificate for `server_name`.
pub async fn connect(
    address: SocketAddr,
    ca_pem_file: &Path,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    tls_client(ca_pem_file, alpn).connect(name, tcp).await
}

/// An HTTP connection over TLS: HTTP/2 when ALPN chose it, else HTTP/1.1.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn new(stream: TlsStream<TcpStream>) -> Client {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(sender)
        }
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> hyper::Result<(StatusCode, Vec<u8>)> {
        let request = Request::post(path)
            .header("host", "secret-inject.testns.svc")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = match self {
            Client::H1(s) => s.send_request(request).await?,
            Client::H2(s) => s.send_request(request).await?,
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }
}

/// Decode `response.patch` (asserting it is a base64 string) into a JSON Patch document.
pub fn decode_patch(review: &serde_json::Value) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let patch = review["response"].get("patch")?;
    let encoded = patch
        .as_str()
        .expect("response.patch must be a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}
