//! A real Kubernetes node for the tests: containerd, runc and the CNI bridge plugin running pods,
//! the kubelet, kube-scheduler and kube-proxy, joined to a control plane of its own, with our
//! image pulled from a registry on loopback. Started once per test binary, on first use, and
//! shared by the node tests, which isolate by namespace.
//!
//! Where each piece comes from (all installed or built by `scripts/test`, pinned):
//! - kubelet, kube-scheduler, kube-proxy: the pinned `k8s.io/kubernetes` module, beside the
//!   control plane (`.tools/controlplane/current/bin`);
//! - containerd v2 and its runc shim, the CNCF distribution registry: `tests/node/go.mod`
//!   (`.tools/node/current/bin`);
//! - runc, the CNI plugins (`bridge`, `host-local`, `portmap`, `loopback`), busybox: Debian's
//!   packages;
//! - the images (ours, busybox, pause): `scripts/build-image`, pushed by `scripts/push-image`.
//!
//! The network: a bridge of our own ([`BRIDGE`], [`NODE_IP`] on [`POD_CIDR`]), no masquerading,
//! nothing forwarded off the bridge (iptables): pods reach only the node's bridge address, where the API server, the tests'
//! moto and the node's services listen. The API server reaches webhook pods at their pod IPs
//! (`--enable-aggregator-routing`), and pods reach the API server through the `kubernetes`
//! Service (kube-proxy, iptables mode).
//!
//! Facts of these machines the configuration answers: cgroup v1 without systemd (kubelet
//! `failCgroupV1: false`, the cgroupfs driver); no `CAP_SYS_RESOURCE` (containerd
//! `restrict_oom_score_adj`, or every sandbox dies in `runc init`); the node IP cannot be
//! loopback (the bridge is made first and its address used); and only one kubelet per machine
//! (it owns the `kubepods` cgroups), so a second test binary waits for the first one's node to
//! go ([`LOCK`]).
//!
//! Everything is torn down when the test binary exits (the guards of `controlplane` stop the
//! programs; the network guard then removes the rest), and before the node starts (what a
//! killed run left): the pods' processes, the mounts under the node's directory, the bridge and
//! kube-proxy's iptables rules.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::controlplane::{self, ControlPlane, Guarded, Namespaces};
use super::repo_root;

/// The node's name.
pub const NODE_NAME: &str = "secret-inject-node";
/// The node's bridge, made by the tests.
pub const BRIDGE: &str = "si-node0";
/// The node's address, on [`BRIDGE`]: the API server, the registry's pod-side name and the
/// tests' servers that pods reach listen here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
/// Pods get addresses from this range (the CNI bridge's host-local IPAM).
pub const POD_CIDR: &str = "10.251.0.0/24";
/// The node cluster's Service range.
pub const SERVICE_CIDR: &str = "10.252.0.0/24";
/// Held while a node runs: one kubelet per machine.
pub const LOCK: &str = "/run/secret-inject-test-node.lock";
/// The node's fixed working directory (fixed, so that what a killed run left can be cleaned).
const NODE_DIR: &str = "/var/tmp/secret-inject-test-node";

/// The running node and its control plane.
pub struct Node {
    /// The node's control plane (its own API server, on [`NODE_IP`]).
    pub plane: &'static ControlPlane,
    /// The images pushed to [`Node::registry`].
    pub images: Images,
    _guards: Mutex<Vec<Guarded>>,
}

/// Image references in the node's registry.
pub struct Images {
    /// Our image, tagged with the chart's appVersion (what the chart renders).
    pub secret_inject: String,
    /// The chart's `image.repository` for [`Images::secret_inject`].
    pub secret_inject_repository: String,
    /// Debian's busybox: the apps of the scenarios.
    pub busybox: String,
    /// The sandbox ("pause") image: a tiny static program of ours (`images/pause`).
    pub pause: String,
}

/// A binary of the node: `.tools/node/current/bin` (containerd, the registry), then
/// `.tools/controlplane/current/bin` (kubelet, kube-scheduler, kube-proxy).
pub fn bin(name: &str) -> PathBuf {
    let root = repo_root();
    for dir in [".tools/node/current/bin", ".tools/controlplane/current/bin"] {
        let path = root.join(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{name} is missing from .tools/node/current/bin and .tools/controlplane/current/bin: the \
         node was not built. Run scripts/test (it runs scripts/build-controlplane and \
         scripts/build-node)"
    );
}

/// A program the node needs from Debian's packages.
fn system(path: &str, package: &str) -> String {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} (scripts/test does, with apt-get)"
    );
    path.to_owned()
}

/// The node of this test binary, started on first use.
pub fn shared() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(Node::start)
}

/// Shell that removes what a node left: the pods' processes (every process in the kubelet's pod
/// cgroups), the mounts under the node's directory, the directory, the bridge, kube-proxy's
/// rules. Idempotent.
fn teardown_script(kube_proxy: &Path) -> String {
    format!(
        r#"
for i in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods -name cgroup.procs -exec cat {{}} + 2>/dev/null)
    [ -z "$pids" ] && break
    kill -9 $pids 2>/dev/null
    sleep 0.3
done
# ([c]: the pattern must not match this shell's own command line)
pkill -9 -f '[c]ontainerd-shim-runc-v2 .*-address {dir}/' 2>/dev/null
for controller in /sys/fs/cgroup/*/kubepods; do
    [ -d "$controller" ] && find "$controller" -depth -type d -exec rmdir {{}} \; 2>/dev/null
done
grep -o ' {dir}[^ ]*' /proc/mounts | sort -r | while read -r mount; do umount -l "$mount"; done
ip link del {bridge} 2>/dev/null
while iptables -D FORWARD -i {bridge} ! -o {bridge} -j DROP 2>/dev/null; do :; done
while iptables -D INPUT -i {bridge} ! -d {node_ip} -j DROP 2>/dev/null; do :; done
{kube_proxy} --cleanup >/dev/null 2>&1
# What the kubelet adds to iptables (KUBE-FIREWALL, canaries): jumps first, then the chains.
for iptables in iptables ip6tables; do
    for table in filter nat mangle; do
        $iptables -t $table -D INPUT -j KUBE-FIREWALL 2>/dev/null
        $iptables -t $table -D OUTPUT -j KUBE-FIREWALL 2>/dev/null
        chains=$($iptables -t $table -S 2>/dev/null | sed -n 's/^-N \(KUBE-[^ ]*\)$/\1/p')
        for chain in $chains; do $iptables -t $table -F $chain; done
        for chain in $chains; do $iptables -t $table -X $chain; done
    done
done
rm -rf {dir}
true
"#,
        dir = NODE_DIR,
        bridge = BRIDGE,
        node_ip = NODE_IP,
        kube_proxy = kube_proxy.display(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `log` says `marker`, or fail with the log.
fn wait_log(guard: &mut Guarded, marker: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(&guard.log).unwrap_or_default();
        if text.contains(marker) {
            return;
        }
        assert!(
            !guard.exited() && Instant::now() < deadline,
            "{what} failed (log {}):\n{text}",
            guard.log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Node {
    fn start() -> Node {
        let started = Instant::now();
        let (kubelet, scheduler, kube_proxy) =
            (bin("kubelet"), bin("kube-scheduler"), bin("kube-proxy"));
        let (containerd, registry_bin) = (bin("containerd"), bin("registry"));
        let shim_dir = bin("containerd-shim-runc-v2").parent().unwrap().to_owned();
        let runc = system("/usr/sbin/runc", "runc");
        let cni_bin = system("/usr/lib/cni/bridge", "containernetworking-plugins");
        let cni_bin = Path::new(&cni_bin).parent().unwrap().to_owned();
        let teardown = teardown_script(&kube_proxy);

        // One node per machine: the lock is held by the guard shell for the binary's lifetime.
        // Then what a killed run left is removed, and the bridge is made.
        let dir = PathBuf::from(NODE_DIR);
        let log_dir =
            std::env::temp_dir().join(format!("secret-inject-node-logs-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut network = Guarded::shell(
            &format!(
                r#"exec 9>{LOCK}
flock -w 1800 9 || {{ echo "another test run holds {LOCK} (one kubelet per machine)"; exit 1; }}
{teardown}
mkdir -p {dir} || exit 1
ip link add {BRIDGE} type bridge || exit 1
ip addr add {NODE_IP}/24 dev {BRIDGE} || exit 1
ip link set {BRIDGE} up || exit 1
# Pods reach the node's bridge address and each other, nothing else: nothing routed off the
# bridge, no other address of this machine.
iptables -I FORWARD -i {BRIDGE} ! -o {BRIDGE} -j DROP || exit 1
iptables -I INPUT -i {BRIDGE} ! -d {NODE_IP} -j DROP || exit 1
echo node-network-ready
# The tests' end (EOF) starts the teardown, after the other guards have stopped their programs
# (TERM, then KILL a second later); scripts/test's TERM to the process group must not cut it short.
trap '' TERM
cat >/dev/null
sleep 2
{teardown}"#,
                dir = dir.display()
            ),
            log_dir.join("network.log"),
        );
        wait_log(
            &mut network,
            "node-network-ready",
            "making the node's bridge (needs root and iproute2; waits for another test run's node)",
            Duration::from_secs(1900),
        );
        let mut guards = vec![network];

        let plane: &'static ControlPlane =
            Box::leak(Box::new(ControlPlane::start(&controlplane::Options {
                address: IpAddr::V4(NODE_IP),
                service_cidr: SERVICE_CIDR,
                route_services_to_lo: false,
                apiserver_flags: vec![
                    "--authorization-mode=Node,RBAC".to_owned(),
                    "--enable-admission-plugins=NodeRestriction".to_owned(),
                    // The API server calls webhook Services at their endpoints' pod IPs.
                    "--enable-aggregator-routing=true".to_owned(),
                    // logs and exec: the API server calls the kubelet at the node's address.
                    "--kubelet-client-certificate={dir}/admin.crt".to_owned(),
                    "--kubelet-client-key={dir}/admin.key".to_owned(),
                    "--kubelet-preferred-address-types=InternalIP".to_owned(),
                ],
                // All of them: the node-lifecycle controller lifts the not-ready taint.
                controllers: "*",
                service_account_credentials: true,
            })));

        // The kubelet's identity: system:node:<name> (the Node authorizer, NodeRestriction).
        let kubelet_kubeconfig = dir.join("kubelet.kubeconfig");
        std::fs::write(
            &kubelet_kubeconfig,
            serde_json::to_string_pretty(&node_kubeconfig(plane)).unwrap(),
        )
        .unwrap();

        // The registry, on loopback: containerd pulls from it.
        let registry_port = free_port();
        let registry = format!("127.0.0.1:{registry_port}");
        std::fs::write(
            dir.join("registry.yml"),
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
                 http: {{addr: \"{registry}\", secret: secret-inject-tests}}\n",
                dir.join("registry").display()
            ),
        )
        .unwrap();
        guards.push(Guarded::start(
            &registry_bin,
            &[
                "serve".to_owned(),
                dir.join("registry.yml").display().to_string(),
            ],
            log_dir.join("registry.log"),
            &[],
        ));
        wait_for_http(&format!("http://{registry}/v2/"), "the registry");
        let images = push_images(&registry, &dir);

        // containerd: CRI with runc (cgroupfs), the CNI bridge, the registry over plain HTTP.
        // docker.io's images come from the registry too (a mirror: the seed's `busybox:1.28`).
        for (host, server) in [
            (registry.as_str(), format!("http://{registry}")),
            ("docker.io", "https://registry-1.docker.io".to_owned()),
        ] {
            let hosts = dir.join("certs.d").join(host);
            std::fs::create_dir_all(&hosts).unwrap();
            std::fs::write(
                hosts.join("hosts.toml"),
                format!(
                    "server = \"{server}\"\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
                ),
            )
            .unwrap();
        }
        let cni_conf = dir.join("cni");
        std::fs::create_dir_all(&cni_conf).unwrap();
        std::fs::write(
            cni_conf.join("10-secret-inject-node.conflist"),
            serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "1.0.0", "name": "secret-inject-node",
                "plugins": [
                    {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false,
                     "hairpinMode": true,
                     "ipam": {"type": "host-local",
                              "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP.to_string()}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": dir.join("cni-ipam")}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            }))
            .unwrap(),
        )
        .unwrap();
        let socket = dir.join("containerd.sock");
        std::fs::write(
            dir.join("containerd.toml"),
            format!(
                r#"version = 3
root = "{dir}/containerd"
state = "{dir}/containerd-state"
[grpc]
  address = "{socket}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{dir}/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "{runc}"
    Root = "{dir}/runc"
    SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
"#,
                dir = dir.display(),
                socket = socket.display(),
                pause = images.pause,
                cni_bin = cni_bin.display(),
                cni_conf = cni_conf.display(),
            ),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut containerd_guard = Guarded::start(
            &containerd,
            &[
                "--config".to_owned(),
                dir.join("containerd.toml").display().to_string(),
            ],
            log_dir.join("containerd.log"),
            &[("PATH", &path)],
        );
        wait_log(
            &mut containerd_guard,
            "containerd successfully booted",
            "starting containerd",
            Duration::from_secs(60),
        );
        guards.push(containerd_guard);

        std::fs::write(
            dir.join("kubelet.yaml"),
            serde_json::to_string_pretty(&serde_json::json!({
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                // cgroup v1, no systemd, on these machines.
                "failCgroupV1": false,
                "cgroupDriver": "cgroupfs",
                "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
                "address": NODE_IP.to_string(),
                "port": 10250,
                "healthzPort": 0,
                "readOnlyPort": 0,
                "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true},
                                   "x509": {"clientCAFile": plane.dir.join("ca.crt")}},
                "authorization": {"mode": "Webhook"},
                "clusterDomain": "cluster.local",
                "resolvConf": "",
                "failSwapOn": false,
                "evictionHard": {"memory.available": "0%", "nodefs.available": "0%",
                                 "imagefs.available": "0%"},
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "serializeImagePulls": false,
                "localStorageCapacityIsolation": false,
                "enforceNodeAllocatable": [],
                "syncFrequency": "5s",
            }))
            .unwrap(),
        )
        .unwrap();
        let mut kubelet_guard = Guarded::start(
            &kubelet,
            &[
                format!("--config={}", dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", kubelet_kubeconfig.display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("kubelet-pki").display()),
                "--v=1".to_owned(),
            ],
            log_dir.join("kubelet.log"),
            &[],
        );
        let kubeconfig = plane.kubeconfig.display().to_string();
        guards.push(Guarded::start(
            &scheduler,
            &[
                format!("--kubeconfig={kubeconfig}"),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()),
            ],
            log_dir.join("kube-scheduler.log"),
            &[],
        ));
        std::fs::write(
            dir.join("kube-proxy.yaml"),
            serde_json::to_string_pretty(&serde_json::json!({
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clientConnection": {"kubeconfig": kubeconfig},
                "hostnameOverride": NODE_NAME,
                "clusterCIDR": POD_CIDR,
                "bindAddress": "127.0.0.1",
                "healthzBindAddress": format!("127.0.0.1:{}", free_port()),
                "metricsBindAddress": format!("127.0.0.1:{}", free_port()),
                // Leave the machine's conntrack table alone.
                "conntrack": {"maxPerCore": 0},
                "iptables": {"masqueradeAll": false, "localhostNodePorts": false},
                "nodePortAddresses": [format!("{NODE_IP}/32")],
            }))
            .unwrap(),
        )
        .unwrap();
        guards.push(Guarded::start(
            &kube_proxy,
            &[format!(
                "--config={}",
                dir.join("kube-proxy.yaml").display()
            )],
            log_dir.join("kube-proxy.log"),
            &[],
        ));

        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let node = plane.kubectl(&["get", "node", NODE_NAME, "-o", "json"]);
            let ready = node.status.success()
                && serde_json::from_slice::<Value>(&node.stdout)
                    .ok()
                    .and_then(|n| {
                        n["status"]["conditions"].as_array().map(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                    .unwrap_or(false);
            if ready {
                break;
            }
            let log = std::fs::read_to_string(&kubelet_guard.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            assert!(
                !kubelet_guard.exited() && Instant::now() < deadline,
                "the node did not become Ready within 120 s (logs in {}); kubelet:\n{}",
                log_dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        guards.push(kubelet_guard);
        eprintln!(
            "node {NODE_NAME} Ready in {:.1?} (control plane {}, registry {registry}, logs in {})",
            started.elapsed(),
            plane.server,
            log_dir.display()
        );
        Node {
            plane,
            images,
            _guards: Mutex::new(guards),
        }
    }
}

/// A kubeconfig for the kubelet: a client certificate for `system:node:<name>`.
fn node_kubeconfig(plane: &ControlPlane) -> Value {
    use base64::Engine as _;
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{NODE_NAME}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &plane.ca).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "node", "cluster": {
            "server": plane.server, "certificate-authority-data": b64(&plane.ca_pem)}}],
        "users": [{"name": "kubelet", "user": {
            "client-certificate-data": b64(&cert.pem()),
            "client-key-data": b64(&key.serialize_pem())}}],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": "kubelet"}}]
    })
}

fn wait_for_http(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen at {url} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The chart's appVersion: the tag it renders for our image.
pub fn chart_app_version() -> String {
    let chart =
        std::fs::read_to_string(repo_root().join("charts/secret-inject/Chart.yaml")).unwrap();
    chart
        .lines()
        .find_map(|line| line.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("charts/secret-inject/Chart.yaml has no appVersion")
}

/// Build our image (from the binary `cargo test` built, its debug info stripped), busybox and
/// pause with `scripts/build-image` and push them with `scripts/push-image`.
fn push_images(registry: &str, dir: &Path) -> Images {
    let build = |image: &str, extra: &[&str], references: &[&str]| {
        let out = dir.join("images").join(image);
        let mut command = Command::new(repo_root().join("scripts/build-image"));
        command
            .arg(image)
            .arg("--out")
            .arg(&out)
            .args(["--compression", "none"])
            .args(extra);
        run(&mut command, &format!("scripts/build-image {image}"));
        for reference in references {
            let mut push = Command::new(repo_root().join("scripts/push-image"));
            push.arg(&out).arg(reference);
            run(
                &mut push,
                &format!("scripts/push-image {image} {reference}"),
            );
        }
    };
    let tag = chart_app_version();
    let repository = format!("{registry}/secret-inject");
    let secret_inject = format!("{repository}:{tag}");
    build(
        "secret-inject",
        &["--binary", env!("CARGO_BIN_EXE_secret-inject"), "--strip"],
        &[&secret_inject],
    );
    // As itself, and as docker.io's `busybox:1.28` (the seed's app image).
    let busybox = format!("{registry}/busybox:test");
    build(
        "busybox",
        &[],
        &[&busybox, &format!("{registry}/library/busybox:1.28")],
    );
    let pause = format!("{registry}/pause:test");
    build("pause", &[], &[&pause]);
    Images {
        secret_inject,
        secret_inject_repository: repository,
        busybox,
        pause,
    }
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `helm install` the chart for a node test: the webhook runs as the chart's Deployment's pods
/// (our image from the node's registry, by the tag the chart renders), scoped to the test's app
/// namespace; agents reach `moto` through the chart's agent settings (`sidecar.env`), as an
/// operator would point them at a VPC endpoint. Waits until the webhook's pods are ready.
pub fn install_chart(ns: &Namespaces, moto: &super::moto::Moto, extra: &[&str]) {
    let node = shared();
    let chart = repo_root().join("charts/secret-inject");
    let selector = format!(
        "webhook.namespaceSelector.matchLabels.secret-inject-test={}",
        ns.name
    );
    let repository = format!("image.repository={}", node.images.secret_inject_repository);
    let endpoint = format!("sidecar.env.AWS_ENDPOINT_URL={}", moto.endpoint());
    let mut args = vec![
        "install",
        &ns.name,
        chart.to_str().unwrap(),
        "--namespace",
        &ns.release,
        "--set",
        &selector,
        "--set",
        &repository,
        "--set",
        &endpoint,
        "--wait",
        "--timeout",
        "300s",
    ];
    args.extend_from_slice(extra);
    let output = node.plane.helm(&args);
    assert!(
        output.status.success(),
        "helm install failed:\n{}{}\nwebhook pods: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(
            &node
                .plane
                .kubectl(&["get", "pods", "-n", &ns.release, "-o", "wide"])
                .stdout
        )
    );
}

/// Register the EKS Pod Identity Webhook stand-in for the test's app namespace, called before
/// ours (configurations are called in the order of their names).
pub fn register_irsa(ns: &Namespaces, irsa: &super::irsa_webhook::IrsaWebhook) {
    register_irsa_as(ns, irsa, &format!("0-irsa-{}", ns.name));
}

/// [`register_irsa`] as the webhook configuration `configuration`, whose name orders it among
/// the others (`zzzz-...`: after every other webhook).
pub fn register_irsa_as(
    ns: &Namespaces,
    irsa: &super::irsa_webhook::IrsaWebhook,
    configuration: &str,
) {
    use base64::Engine as _;
    let configuration = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": [{
            "name": "pod-identity-webhook.amazonaws.com",
            "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded",
            "clientConfig": {"url": irsa.url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&irsa.ca_pem)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"secret-inject-test": ns.name}}
        }]
    });
    let output = ns.plane.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(serde_json::to_string(&configuration).unwrap().as_bytes()),
    );
    assert!(
        output.status.success(),
        "registering the IRSA stand-in: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Wait until `check` holds for the pods selected by `selector` in `namespace` (`kubectl get
/// pods -l`), or fail with their state. Liveness only: `timeout` is generous.
pub fn wait_pods(
    plane: &ControlPlane,
    namespace: &str,
    selector: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let pods = plane.get_json(&["pods", "-n", namespace, "-l", selector]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() && check(&items) {
            return items;
        }
        if Instant::now() > deadline {
            let describe = plane.kubectl(&["describe", "pods", "-n", namespace, "-l", selector]);
            panic!(
                "timed out after {timeout:?} waiting for {what}:\n{}",
                String::from_utf8_lossy(&describe.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pod's phase.
pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// A ServiceAccount `name` in the test's app namespace, annotated with `role` for IRSA, and the
/// EKS Pod Identity Webhook stand-in that gives its pods the role's env and the kubelet-projected
/// token, registered for the namespace (ahead of ours). Keep the stand-in while pods start.
pub fn irsa_service_account(
    ns: &Namespaces,
    name: &str,
    role: &str,
) -> super::irsa_webhook::IrsaWebhook {
    create_ok(
        ns.plane,
        &ns.app,
        &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "annotations": {"eks.amazonaws.com/role-arn": role}}}),
    );
    let irsa = super::irsa_webhook::IrsaWebhook::start(name, role);
    register_irsa(ns, &irsa);
    irsa
}

/// `kubectl create -f -` of `object` in `namespace`: what kubectl answered.
pub fn create(plane: &ControlPlane, namespace: &str, object: &Value) -> std::process::Output {
    plane.kubectl_stdin(
        &["create", "-n", namespace, "-f", "-"],
        Some(object.to_string().as_bytes()),
    )
}

/// [`create`] that must succeed.
pub fn create_ok(plane: &ControlPlane, namespace: &str, object: &Value) {
    let output = create(plane, namespace, object);
    assert!(
        output.status.success(),
        "kubectl create {}: {}",
        object["metadata"]["name"],
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `kubectl exec` of `command` in `container` of `pod`: its stdout (it must succeed).
pub fn exec(
    plane: &ControlPlane,
    namespace: &str,
    pod: &str,
    container: &str,
    command: &[&str],
) -> String {
    let mut args = vec!["exec", "-n", namespace, pod, "-c", container, "--"];
    args.extend_from_slice(command);
    plane.kubectl_ok(&args)
}

/// The seed's walkthrough in `ns`'s app namespace, verbatim but for the secret's ARN (its
/// readers put their own there): the IRSA stand-in for the blog's ServiceAccount, the
/// ServiceAccount and `webserver` Deployment of examples/; the pod runs after the agent exited 0,
/// and `kubectl logs` prints `value` (`echo $(cat /tmp/secret)`: the JSON, word-split and joined
/// by spaces). The running pod, and the IRSA stand-in, which must live as long as the test.
pub fn seed_walkthrough(
    ns: &Namespaces,
    arn: &str,
    value: &str,
) -> (Value, super::irsa_webhook::IrsaWebhook) {
    let plane = ns.plane;
    let irsa = super::irsa_webhook::IrsaWebhook::start(
        "webserver-service-account",
        "arn:aws:iam::123456789012:role/webserver-secrets-role",
    );
    register_irsa(ns, &irsa);
    let examples = repo_root().join("examples");
    let account = examples.join("webserver-service-account.yaml");
    plane.kubectl_ok(&["apply", "-n", &ns.app, "-f", account.to_str().unwrap()]);
    let deployment = std::fs::read_to_string(examples.join("webserver-deployment.yaml"))
        .unwrap()
        .replace(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF",
            arn,
        );
    let applied = plane.kubectl_stdin(
        &["apply", "-n", &ns.app, "-f", "-"],
        Some(deployment.as_bytes()),
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let pods = wait_pods(
        plane,
        &ns.app,
        "run=webserver",
        "the webserver pod to run",
        POD_START,
        |pods| pods.iter().any(|p| phase(p) == "Running"),
    );
    let pod = pods.into_iter().find(|p| phase(p) == "Running").unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    // The agent ran to completion before the app started.
    let agent = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(agent["name"], "secrets-init-container", "{pod}");
    assert_eq!(agent["state"]["terminated"]["exitCode"], 0, "{pod}");
    let mut logs = String::new();
    plane.wait_for("the webserver's log line", Duration::from_secs(60), || {
        logs = plane.kubectl_ok(&["logs", "-n", &ns.app, &name, "-c", "webserver"]);
        !logs.is_empty()
    });
    assert_eq!(logs.trim(), value, "kubectl logs");
    (pod, irsa)
}

/// How long a pod may take to start on the node (liveness only: image pulls and the kubelet's
/// loops on a loaded machine).
pub const POD_START: Duration = Duration::from_secs(180);
