//! A real Kubernetes control plane for the tests: etcd, kube-apiserver and
//! kube-controller-manager, built from the Kubernetes Go modules by `scripts/build-controlplane`
//! into `.tools/controlplane/current/bin`, started once per test binary on loopback.
//!
//! No kubelet and no scheduler: pods stay Pending, which is fine, since what we test is what
//! admission stores. Each test gets its own namespaces ([`Namespaces`]) and its own webhook
//! ([`Release`]): the chart installed by the real `helm` into the test's release namespace,
//! scoped by `namespaceSelector` to the test's app namespace, and our binary on the host serving
//! the chart's own certificate at the chart's Service ClusterIP (the Service range is routed to
//! the loopback device, so the API server's call stays on this machine and TLS is verified
//! against the chart's caBundle and `<svc>.<ns>.svc` name).
//!
//! Every process is started under a guard shell that kills it when the test binary's end of a
//! pipe closes, so nothing outlives the tests, even when one panics or the binary is killed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::repo_root;

/// The Service range: routed to `lo` while the control plane runs, so ClusterIPs are local.
pub const SERVICE_CIDR: &str = "10.250.0.0/24";
/// Kubernetes release the control plane is built from (`scripts/build-controlplane`).
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// The running control plane; one per test binary (see [`shared`]).
pub struct ControlPlane {
    /// Scratch directory: PKI, data, logs, kubeconfig.
    pub dir: PathBuf,
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://<address>:<port>`.
    pub server: String,
    /// The cluster CA, to sign more client certificates (the node's kubelet).
    pub ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The cluster CA's certificate.
    pub ca_pem: String,
    /// The guards; dropping them (at process exit) stops the processes.
    _guards: Mutex<Vec<Guarded>>,
}

/// A process under a guard shell: it is killed when `stdin` closes.
pub struct Guarded {
    child: Child,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
}

impl Guarded {
    /// Start `program args` under the guard, its output going to `log`.
    pub fn start(program: &Path, args: &[String], log: PathBuf, env: &[(&str, &str)]) -> Guarded {
        let output = std::fs::File::create(&log).unwrap();
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                // The program gets /dev/null as stdin; the guard waits for EOF on its own stdin
                // (the test binary's end of the pipe), then stops the program.
                r#""$@" </dev/null & pid=$!; cat >/dev/null; kill -TERM "$pid" 2>/dev/null; sleep 1; kill -KILL "$pid" 2>/dev/null; wait "$pid""#,
                "guard",
            ])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        // Proxy settings must not route the API server's calls to webhooks anywhere else.
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            command.env_remove(var);
        }
        command.env("NO_PROXY", "127.0.0.1,localhost,10.250.0.0/24,.svc");
        command.envs(env.iter().copied());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdin = child.stdin.take();
        Guarded { child, stdin, log }
    }

    /// Run a shell `script` whose stdin is the guard pipe: it sees EOF when the tests end.
    pub fn shell(script: &str, log: PathBuf) -> Guarded {
        let output = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sh: {e}"));
        let stdin = child.stdin.take();
        Guarded { child, stdin, log }
    }

    /// Stop the process now and wait for it.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// Whether the process (its guard) has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the control plane's binaries are.
pub fn bin(name: &str) -> PathBuf {
    let path = repo_root()
        .join(".tools/controlplane/current/bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: the control plane was not built. Run scripts/test (it runs \
         scripts/build-controlplane), or scripts/build-controlplane alone",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The control plane of this test binary, started on first use.
pub fn shared() -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| ControlPlane::start(&Options::host()))
}

/// How a control plane is started: the admission-only one of [`shared`] (no node; the Service
/// range routed to loopback, where the tests' webhooks listen), or the one a real node joins
/// (`super::node`: the API server on the node's bridge address, reachable from pods through the
/// `kubernetes` Service, calling webhook Services' pod IPs directly).
pub struct Options {
    /// Where the API server listens and what it advertises (the `kubernetes` Service's endpoint).
    pub address: IpAddr,
    /// The Service range.
    pub service_cidr: &'static str,
    /// Route the Service range to `lo` while the tests run.
    pub route_services_to_lo: bool,
    /// More kube-apiserver flags; `{dir}` in them is the control plane's directory (which holds
    /// `ca.crt`, and `admin.crt` and `admin.key`: a `system:masters` client certificate).
    pub apiserver_flags: Vec<String>,
    /// kube-controller-manager's `--controllers`.
    pub controllers: &'static str,
    /// Whether each controller uses its own ServiceAccount's credentials (the root-CA publisher
    /// needs them once the API server authorizes nodes).
    pub service_account_credentials: bool,
}

impl Options {
    /// The admission-only control plane of [`shared`].
    pub fn host() -> Options {
        Options {
            address: IpAddr::from([127, 0, 0, 1]),
            service_cidr: SERVICE_CIDR,
            route_services_to_lo: true,
            apiserver_flags: vec![
                "--authorization-mode=RBAC".to_owned(),
                // The `kubernetes` Service cannot point at a loopback address; nothing here needs
                // its endpoints, and the reconciler would log a refusal every 10 s.
                "--endpoint-reconciler-type=none".to_owned(),
            ],
            controllers: "serviceaccount,serviceaccount-token,root-ca-certificate-publisher-controller,\
                 deployment-controller,replicaset-controller,job-controller,cronjob-controller,\
                 endpointslice-controller,endpoints-controller,namespace-controller,\
                 garbage-collector-controller",
            service_account_credentials: false,
        }
    }
}

struct Pki {
    ca_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_key: String,
    sa_pub: String,
    /// The CA's key, for the node's certificates (`super::node`).
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn pki(addresses: &[IpAddr]) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "secret-inject-test-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])
    .unwrap();
    for &ip in addresses {
        serving.subject_alt_names.push(SanType::IpAddress(ip));
    }
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().unwrap();
    let serving_cert = serving.signed_by(&serving_key, &issuer).unwrap();

    let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate().unwrap();
    let admin_cert = admin.signed_by(&admin_key, &issuer).unwrap();

    let sa = KeyPair::generate().unwrap();
    Pki {
        ca_pem: ca.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_key: sa.serialize_pem(),
        sa_pub: sa.public_key_pem(),
        issuer,
    }
}

impl ControlPlane {
    pub fn start(options: &Options) -> ControlPlane {
        let started = Instant::now();
        let (etcd_bin, apiserver_bin, kcm_bin) = (
            bin("etcd"),
            bin("kube-apiserver"),
            bin("kube-controller-manager"),
        );
        let dir = tempfile::Builder::new()
            .prefix("secret-inject-controlplane-")
            .tempdir()
            .unwrap()
            .keep();
        // The first address of the Service range is the `kubernetes` Service's ClusterIP.
        let network: std::net::Ipv4Addr = options
            .service_cidr
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let kubernetes_service = IpAddr::from(std::net::Ipv4Addr::from(u32::from(network) + 1));
        let pki = pki(&[
            IpAddr::from([127, 0, 0, 1]),
            options.address,
            kubernetes_service,
        ]);
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path.to_string_lossy().into_owned()
        };
        let ca = write("ca.crt", &pki.ca_pem);
        let serving_cert = write("apiserver.crt", &pki.serving_cert);
        let serving_key = write("apiserver.key", &pki.serving_key);
        let sa_key = write("sa.key", &pki.sa_key);
        let sa_pub = write("sa.pub", &pki.sa_pub);
        write("admin.crt", &pki.admin_cert);
        write("admin.key", &pki.admin_key);

        let mut guards = Vec::new();
        // Route the Service range to this machine while the tests run (the admission-only
        // plane); removed at exit, with etcd's data (the logs stay for a failure's post-mortem).
        let route = if options.route_services_to_lo {
            format!(
                "ip route replace local {cidr} dev lo || exit 1; ",
                cidr = options.service_cidr
            )
        } else {
            String::new()
        };
        let unroute = if options.route_services_to_lo {
            format!("ip route del local {} dev lo; ", options.service_cidr)
        } else {
            String::new()
        };
        let mut cleanup = Guarded::shell(
            &format!(
                "{route}echo routed; cat >/dev/null; {unroute}sleep 2; rm -rf {etcd_data}",
                etcd_data = dir.join("etcd").display()
            ),
            dir.join("route.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&cleanup.log)
            .unwrap_or_default()
            .contains("routed")
        {
            assert!(
                !cleanup.exited() && Instant::now() < deadline,
                "cannot route {} to lo (needs root and iproute2's `ip`): {}",
                options.service_cidr,
                std::fs::read_to_string(&cleanup.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        guards.push(cleanup);

        let (etcd_port, etcd_peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        guards.push(Guarded::start(
            &etcd_bin,
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            dir.join("etcd.log"),
            &[],
        ));

        let port = free_port();
        let server = format!("https://{}:{port}", options.address);
        guards.push(Guarded::start(
            &apiserver_bin,
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={}", options.address),
                format!("--advertise-address={}", options.address),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={serving_cert}"),
                format!("--tls-private-key-file={serving_key}"),
                format!("--client-ca-file={ca}"),
                format!("--service-cluster-ip-range={}", options.service_cidr),
                "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
                format!("--service-account-key-file={sa_pub}"),
                format!("--service-account-signing-key-file={sa_key}"),
                // The defaults, named: ServiceAccount, PodSecurity and both webhook plugins on.
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,\
                 DefaultStorageClass,DefaultTolerationSeconds,MutatingAdmissionWebhook,\
                 ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,MutatingAdmissionPolicy,ResourceQuota,PodSecurity"
                    .to_owned(),
                "--allow-privileged=true".to_owned(),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                "--v=1".to_owned(),
            ]
            .into_iter()
            .chain(
                options
                    .apiserver_flags
                    .iter()
                    .map(|flag| flag.replace("{dir}", &dir.to_string_lossy())),
            )
            .collect::<Vec<_>>(),
            dir.join("kube-apiserver.log"),
            &[],
        ));

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            serde_json::to_string_pretty(&kubeconfig_json(&server, &pki)).unwrap(),
        )
        .unwrap();
        let plane = ControlPlane {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            server,
            ca: pki.issuer,
            ca_pem: pki.ca_pem,
            _guards: Mutex::new(Vec::new()),
        };
        plane.wait_ready(&guards, started);

        guards.push(Guarded::start(
            &kcm_bin,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--root-ca-file={ca}"),
                format!(
                    "--use-service-account-credentials={}",
                    options.service_account_credentials
                ),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()),
                format!("--controllers={}", options.controllers),
                "--v=1".to_owned(),
            ],
            dir.join("kube-controller-manager.log"),
            &[],
        ));
        *plane._guards.lock().unwrap() = guards;
        // The default namespace's ServiceAccount shows the controllers run.
        plane.wait_for(
            "the controller-manager to create the default ServiceAccount",
            Duration::from_secs(60),
            || {
                plane
                    .kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                    .status
                    .success()
            },
        );
        eprintln!(
            "control plane {KUBERNETES_VERSION} ready in {:.1?} at {} ({})",
            started.elapsed(),
            plane.server,
            dir.display()
        );
        plane
    }

    fn wait_ready(&self, guards: &[Guarded], started: Instant) {
        let deadline = started + Duration::from_secs(120);
        loop {
            let output = self.kubectl(&["get", "--raw", "/readyz"]);
            if output.status.success() {
                return;
            }
            if Instant::now() > deadline {
                let logs: String = guards
                    .iter()
                    .map(|g| {
                        let text = std::fs::read_to_string(&g.log).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(30).collect();
                        format!(
                            "--- {} ---\n{}\n",
                            g.log.display(),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "kube-apiserver not ready within 120 s: {}\n{logs}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Poll `check` until it holds, or fail naming `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (logs in {})",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run kubectl against the control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.run("kubectl", args, stdin)
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether the API server has the object.
    pub fn exists(&self, kind: &str, name: &str, namespace: &str) -> bool {
        self.kubectl(&["get", kind, name, "-n", namespace])
            .status
            .success()
    }

    /// `kubectl get ... -o json`.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// Run helm against the control plane.
    pub fn helm(&self, args: &[&str]) -> Output {
        self.run("helm", args, None)
    }

    fn run(&self, name: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let helm = |dir: &str| self.dir.join("helm").join(dir);
        let (cache, config, data) = (helm("cache"), helm("config"), helm("data"));
        super::run_tool_with_env(
            name,
            args,
            &[
                ("KUBECONFIG", self.kubeconfig.as_path()),
                ("HELM_CACHE_HOME", &cache),
                ("HELM_CONFIG_HOME", &config),
                ("HELM_DATA_HOME", &data),
            ],
            stdin,
        )
    }
}

fn kubeconfig_json(server: &str, pki: &Pki) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": server, "certificate-authority-data": b64(&pki.ca_pem)}}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64(&pki.admin_cert),
            "client-key-data": b64(&pki.admin_key)}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}]
    })
}

/// A test's namespaces: `app` (where the test's pods go, selected by its webhook) and `release`
/// (where its chart is installed). Deleted when dropped.
pub struct Namespaces {
    pub plane: &'static ControlPlane,
    /// The test's name, a DNS label.
    pub name: String,
    /// Where the test's workloads go.
    pub app: String,
    /// Where the test's chart release goes.
    pub release: String,
}

impl Namespaces {
    /// `helm upgrade` the test's release with its values kept and `extra` set.
    pub fn helm_upgrade(&self, extra: &[&str]) {
        let chart = repo_root().join("charts/secret-inject");
        let mut args = vec![
            "upgrade",
            &self.name,
            chart.to_str().unwrap(),
            "--namespace",
            &self.release,
            "--reuse-values",
        ];
        args.extend_from_slice(extra);
        let output = self.plane.helm(&args);
        assert!(
            output.status.success(),
            "helm upgrade failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Create both namespaces; `labels` go on the app namespace, next to the selector label.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Namespaces {
        Namespaces::on(shared(), name, labels)
    }

    /// [`Namespaces::new`] on another control plane (the node's).
    pub fn on(plane: &'static ControlPlane, name: &str, labels: &[(&str, &str)]) -> Namespaces {
        let app = format!("app-{name}");
        let release = format!("rel-{name}");
        for ns in [&app, &release] {
            plane.kubectl_ok(&["create", "namespace", ns]);
        }
        let mut label_args = vec![
            "label".to_owned(),
            "namespace".to_owned(),
            app.clone(),
            format!("secret-inject-test={name}"),
        ];
        label_args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let label_args: Vec<&str> = label_args.iter().map(String::as_str).collect();
        plane.kubectl_ok(&label_args);
        // Pods need the namespace's default ServiceAccount (the controller-manager makes it).
        plane.wait_for(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || {
                plane
                    .kubectl(&["get", "serviceaccount", "default", "-n", &app])
                    .status
                    .success()
            },
        );
        Namespaces {
            plane,
            name: name.to_owned(),
            app,
            release,
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = self.plane.helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.release,
            "--no-hooks",
        ]);
        // What the chart keeps on uninstall (the secret writer's backstop).
        let _ = self.plane.kubectl(&[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "-l",
            &format!("app.kubernetes.io/instance={}", self.name),
        ]);
        let _ = self.plane.kubectl(&[
            "delete",
            "namespace",
            &self.app,
            &self.release,
            "--wait=false",
        ]);
    }
}

/// The chart installed for one test, and our webhook serving it.
pub struct Release {
    /// The chart's fullname (the Service, the webhook configuration).
    pub fullname: String,
    /// The Service's ClusterIP, where our webhook listens.
    pub cluster_ip: IpAddr,
    /// The running webhook, if started.
    pub webhook: Option<super::webhook::Webhook>,
    /// The certificate directory the webhook reads (kubelet-style `..data` layout).
    pub tls_dir: tempfile::TempDir,
    generation: u32,
    webhook_args: Vec<String>,
    webhook_env: Vec<(String, String)>,
}

impl Release {
    /// `helm install <name> charts/secret-inject` into the release namespace, the webhook scoped
    /// to the app namespace, then our webhook started with the chart's certificate.
    pub fn install(ns: &Namespaces, extra: &[&str]) -> Release {
        Release::install_with(ns, extra, &[], &[])
    }

    /// [`Release::install`], the webhook started with more arguments and environment.
    ///
    /// The webhook runs with the chart's [`CHART_FLAGS`] as its Deployment renders them.
    pub fn install_with(
        ns: &Namespaces,
        extra: &[&str],
        webhook_args: &[&str],
        webhook_env: &[(&str, &str)],
    ) -> Release {
        let plane = ns.plane;
        let chart = repo_root().join("charts/secret-inject");
        let selector = format!(
            "webhook.namespaceSelector.matchLabels.secret-inject-test={}",
            ns.name
        );
        let mut args = vec![
            "install",
            &ns.name,
            chart.to_str().unwrap(),
            "--namespace",
            &ns.release,
            "--set",
            &selector,
            "--wait=false",
        ];
        args.extend_from_slice(extra);
        let output = plane.helm(&args);
        assert!(
            output.status.success(),
            "helm install failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let fullname = format!("{}-secret-inject", ns.name);
        let service = plane.get_json(&["service", &fullname, "-n", &ns.release]);
        let cluster_ip: IpAddr = service["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // The flags the chart decides from the cluster's version (.Capabilities) and the agent's
        // settings (sidecar.deadline, .env, ...), as rendered into its Deployment, so the webhook
        // here runs as the chart would run it.
        let deployment = plane.get_json(&["deployment", &fullname, "-n", &ns.release]);
        let from_chart = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|arg| {
                CHART_FLAGS
                    .iter()
                    .any(|flag| arg.starts_with(&format!("{flag}=")))
            })
            // A test that passes the flag itself decides.
            .filter(|arg| {
                let flag = arg.split('=').next().unwrap_or_default();
                !webhook_args.contains(&flag)
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter();
        let mut release = Release {
            fullname,
            cluster_ip,
            webhook: None,
            tls_dir: tempfile::tempdir().unwrap(),
            generation: 0,
            webhook_args: from_chart
                .chain(webhook_args.iter().map(|a| (*a).to_owned()))
                .collect(),
            webhook_env: webhook_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        release.sync_certificate(ns);
        release.start_webhook();
        release
    }

    /// Copy the chart's TLS Secret into the certificate directory the way the kubelet updates a
    /// Secret volume: a new timestamped directory, then an atomic `..data` symlink swap.
    pub fn sync_certificate(&mut self, ns: &Namespaces) {
        use base64::Engine as _;
        let secret = ns.plane.get_json(&[
            "secret",
            &format!("{}-tls", self.fullname),
            "-n",
            &ns.release,
        ]);
        let decode = |key: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(secret["data"][key].as_str().unwrap())
                .unwrap()
        };
        self.generation += 1;
        let dir = self.tls_dir.path();
        let generation = format!("..gen-{}", self.generation);
        std::fs::create_dir(dir.join(&generation)).unwrap();
        std::fs::write(dir.join(&generation).join("tls.crt"), decode("tls.crt")).unwrap();
        std::fs::write(dir.join(&generation).join("tls.key"), decode("tls.key")).unwrap();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&generation, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for file in ["tls.crt", "tls.key"] {
            if !dir.join(file).exists() {
                std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
            }
        }
    }

    /// Start our webhook at `<ClusterIP>:443` with the chart's certificate files.
    pub fn start_webhook(&mut self) {
        let admin = SocketAddr::new(self.cluster_ip, free_port());
        let webhook = SocketAddr::new(self.cluster_ip, 443);
        let cert = self.tls_dir.path().join("tls.crt");
        let key = self.tls_dir.path().join("tls.key");
        let mut command = Command::new(env!("CARGO_BIN_EXE_secret-inject"));
        command.args([
            "--log-format",
            "json",
            "webhook",
            "--bind-address",
            &self.cluster_ip.to_string(),
            "--port",
            "443",
            "--admin-port",
            &admin.port().to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-private-key-file",
            key.to_str().unwrap(),
            "--tls-reload-interval",
            "200ms",
        ]);
        command.args(&self.webhook_args);
        command.env("AWS_EC2_METADATA_DISABLED", "true");
        command.envs(self.webhook_env.iter().map(|(k, v)| (k, v)));
        self.webhook = Some(super::webhook::Webhook::from_command(
            command,
            tempfile::tempdir().unwrap(),
            webhook,
            admin,
        ));
    }

    /// Stop our webhook (the API server's calls then fail).
    pub fn stop_webhook(&mut self) {
        self.webhook = None;
    }

    /// What our webhook logged so far.
    pub fn webhook_log(&self) -> String {
        self.webhook
            .as_ref()
            .map(|w| w.log_lines().join("\n"))
            .unwrap_or_default()
    }
}

/// The webhook flags a test's webhook takes from the chart's rendered Deployment.
const CHART_FLAGS: &[&str] = &[
    "--env-files",
    "--native-sidecars",
    "--sidecar-deadline",
    "--sidecar-attempt-timeout",
    "--sidecar-batch-threshold",
    "--sidecar-log-level",
    "--sidecar-env",
];

/// `stored` without what the API server's ServiceAccount admission adds on its own: the token
/// volume and its mounts.
pub fn without_token_volume(mut stored: Value) -> Value {
    let ours = |v: &Value| {
        v["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    };
    if let Some(volumes) = stored["spec"]["volumes"].as_array_mut() {
        volumes.retain(|v| !ours(v));
    }
    for field in ["containers", "initContainers"] {
        for container in stored["spec"][field].as_array_mut().into_iter().flatten() {
            if let Some(mounts) = container["volumeMounts"].as_array_mut() {
                mounts.retain(|m| !ours(m));
            }
        }
    }
    stored
}
