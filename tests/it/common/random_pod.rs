//! One generator of random pods and one of annotation sets, shared by the property tests
//! (`properties.rs`) and the API-server sample (`controlplane.rs`).
//!
//! Pods: 0-5 app containers and 0-5 init containers (some native sidecars), with or without
//! volumes, mounts, env vars, existing annotations, pod and container security contexts,
//! container and pod-level resources, and an IRSA identity. Every pod with at least one app
//! container is a valid Pod for the API server: DNS-label names unique across the pod, images,
//! mounts of existing volumes at absolute, distinct paths.
//!
//! Annotation sets: the seed's single secret and named `.<n>` secrets (ARNs of Secrets Manager
//! and Parameter Store, file names, keys, formats, versions, env vars), mount path, container
//! selection, init-container position, failover region and rotation. An invalid set is a valid
//! one with exactly one thing broken on purpose, so whether a set is valid, and which annotation
//! a denial must name, is known by construction ([`Outcome`]), never asked of `mutate`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

/// Secrets Manager secrets in two regions and a Parameter Store parameter.
const SM_EAST: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";
const SM_WEST: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/api-key-AbCdEf";
const PARAMETER: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/app/url";
const ARNS: [&str; 3] = [SM_EAST, SM_WEST, PARAMETER];
/// A region that holds none of the ARNs above.
const FAILOVER: &str = "us-west-2";

/// Names of named secrets (the `.<n>` suffix).
const SECRET_NAMES: [&str; 6] = ["db", "api", "cache", "tls", "token-2", "x9"];
/// Mount paths of the secret volume, as annotated and as mounted (trailing `/` trimmed).
const MOUNT_PATHS: [(&str, &str); 4] = [
    ("/var/run/secrets/app", "/var/run/secrets/app"),
    ("/secrets/", "/secrets"),
    ("/mnt/s3cr3t", "/mnt/s3cr3t"),
    ("/tmp", "/tmp"),
];
/// The IRSA identity a webhook like amazon-eks-pod-identity-webhook adds.
const IRSA_TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const IRSA_VOLUME: &str = "aws-iam-token";

/// What the set asks for, known when it was generated.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A valid set: what the injection must look like.
    Inject(Injection),
    /// A broken set: the annotation the denial must name, and what was broken.
    Deny { key: String, broken: String },
}

/// The injection a valid set asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Where the volume is mounted (trailing `/` trimmed).
    pub mount_path: String,
    /// The containers that get the mount and env vars: (`containers` or `initContainers`,
    /// index in the original pod).
    pub selected: Vec<(&'static str, usize)>,
    /// The agent goes after the existing init containers.
    pub last: bool,
    /// The `fileKeyRef` env vars every selected container gets, in order.
    pub env: Vec<String>,
    /// Rotation: the agent is a native sidecar.
    pub rotates: bool,
    /// A reload signal: the pod gets `shareProcessNamespace: true`.
    pub shares_pids: bool,
    /// The pod carries an IRSA identity the agent must copy.
    pub irsa: bool,
}

/// One generated case: a whole Pod object (`apiVersion`, `kind`, `metadata.name`) whose
/// annotations hold the set, and what the set must give.
#[derive(Debug, Clone)]
pub struct Case {
    pub pod: Value,
    /// Our annotations only (the pod's own annotations are in `pod`).
    pub ours: BTreeMap<String, String>,
    pub outcome: Outcome,
}

impl Case {
    /// Whether the set is valid.
    pub fn valid(&self) -> bool {
        matches!(self.outcome, Outcome::Inject(_))
    }

    /// Number of app containers.
    pub fn app_containers(&self) -> usize {
        self.pod["spec"]["containers"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

#[derive(Debug, Clone)]
struct ContainerDraft {
    prefix: usize,
    image: usize,
    env: Vec<String>,
    mounts: Vec<bool>,
    /// (runAsUser, hardened).
    security: Option<(Option<i64>, bool)>,
    resources: bool,
    /// For init containers: `restartPolicy: Always` (a native sidecar).
    sidecar: bool,
    command: bool,
}

fn container_draft() -> impl Strategy<Value = ContainerDraft> {
    (
        0..3usize,
        0..3usize,
        prop::collection::vec("[a-zA-Z0-9 ./=:$(){}-]{0,12}", 0..3),
        prop::collection::vec(prop::bool::weighted(0.4), 4),
        prop::option::of((
            prop::option::of(prop_oneof![Just(0i64), Just(1000), Just(1001)]),
            any::<bool>(),
        )),
        any::<bool>(),
        prop::bool::weighted(0.3),
        any::<bool>(),
    )
        .prop_map(
            |(prefix, image, env, mounts, security, resources, sidecar, command)| ContainerDraft {
                prefix,
                image,
                env,
                mounts,
                security,
                resources,
                sidecar,
                command,
            },
        )
}

#[derive(Debug, Clone)]
struct PodDraft {
    apps: Vec<ContainerDraft>,
    inits: Vec<ContainerDraft>,
    /// Kinds of the pod's volumes (0 emptyDir, 1 in-memory emptyDir, 2 configMap).
    volumes: Option<Vec<usize>>,
    annotations: Vec<String>,
    default_container: bool,
    /// (runAsUser, fsGroup).
    security: Option<(Option<i64>, Option<i64>)>,
    resources: bool,
    irsa: bool,
}

fn pod_draft() -> impl Strategy<Value = PodDraft> {
    (
        prop::collection::vec(container_draft(), 0..=5),
        prop::collection::vec(container_draft(), 0..=5),
        prop::option::of(prop::collection::vec(0..3usize, 0..=4)),
        prop::collection::vec("[a-zA-Z0-9 ./:_=-]{0,16}", 0..3),
        any::<bool>(),
        prop::option::of((
            prop::option::of(prop_oneof![Just(0i64), Just(1000), Just(65532)]),
            prop::option::of(Just(2000i64)),
        )),
        any::<bool>(),
        prop::bool::weighted(0.25),
    )
        .prop_map(
            |(apps, inits, volumes, annotations, default_container, security, resources, irsa)| {
                PodDraft {
                    apps,
                    inits,
                    volumes,
                    annotations,
                    default_container,
                    security,
                    resources,
                    irsa,
                }
            },
        )
}

const IMAGES: [&str; 3] = [
    "busybox:1.36",
    "nginx:1.27",
    "registry.example.com/team/app:v2",
];

fn container(name: String, draft: &ContainerDraft, volumes: &[String], init: bool) -> Value {
    let mut c = json!({ "name": name, "image": IMAGES[draft.image] });
    if draft.command {
        c["command"] = json!(["sleep", "3600"]);
    }
    if !draft.env.is_empty() {
        c["env"] = draft
            .env
            .iter()
            .enumerate()
            .map(|(k, value)| json!({ "name": format!("APP_{k}"), "value": value }))
            .collect();
    }
    let mounts: Vec<Value> = volumes
        .iter()
        .zip(&draft.mounts)
        .filter(|(_, on)| **on)
        .map(|(volume, _)| json!({ "name": volume, "mountPath": format!("/data/{volume}") }))
        .collect();
    if !mounts.is_empty() {
        c["volumeMounts"] = json!(mounts);
    }
    if let Some((uid, hardened)) = draft.security {
        let mut s = json!({});
        if let Some(uid) = uid {
            s["runAsUser"] = json!(uid);
            if uid != 0 {
                s["runAsNonRoot"] = json!(true);
            }
        }
        if hardened {
            s["allowPrivilegeEscalation"] = json!(false);
            s["capabilities"] = json!({ "drop": ["ALL"] });
            s["readOnlyRootFilesystem"] = json!(true);
        }
        c["securityContext"] = s;
    }
    if draft.resources {
        c["resources"] = json!({
            "requests": { "cpu": "50m", "memory": "32Mi" },
            "limits": { "memory": "64Mi" }
        });
    }
    if init && draft.sidecar {
        c["restartPolicy"] = json!("Always");
    }
    c
}

fn build_pod(draft: &PodDraft) -> Value {
    const APP_PREFIXES: [&str; 3] = ["app", "web", "worker"];
    const INIT_PREFIXES: [&str; 3] = ["init", "setup", "mesh"];
    let volume_names: Vec<String> = draft
        .volumes
        .iter()
        .flatten()
        .enumerate()
        .map(|(j, kind)| format!("{}-{j}", ["data", "cache", "config"][*kind]))
        .collect();
    let apps: Vec<Value> = draft
        .apps
        .iter()
        .enumerate()
        .map(|(i, d)| {
            container(
                format!("{}-{i}", APP_PREFIXES[d.prefix]),
                d,
                &volume_names,
                false,
            )
        })
        .collect();
    let inits: Vec<Value> = draft
        .inits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            container(
                format!("{}-{i}", INIT_PREFIXES[d.prefix]),
                d,
                &volume_names,
                true,
            )
        })
        .collect();
    let mut spec = json!({ "containers": apps });
    if !inits.is_empty() {
        spec["initContainers"] = json!(inits);
    }
    if let Some(kinds) = &draft.volumes {
        spec["volumes"] = volume_names
            .iter()
            .zip(kinds)
            .map(|(name, kind)| match kind {
                0 => json!({ "name": name, "emptyDir": {} }),
                1 => {
                    json!({ "name": name, "emptyDir": { "medium": "Memory", "sizeLimit": "8Mi" } })
                }
                _ => {
                    json!({ "name": name, "configMap": { "name": "app-config", "optional": true } })
                }
            })
            .collect();
    }
    if let Some((uid, fs_group)) = draft.security {
        let mut s = json!({ "seccompProfile": { "type": "RuntimeDefault" } });
        if let Some(uid) = uid {
            s["runAsUser"] = json!(uid);
        }
        if let Some(group) = fs_group {
            s["fsGroup"] = json!(group);
        }
        spec["securityContext"] = s;
    }
    if draft.resources {
        // Room for every container's requests and limits, and ours.
        spec["resources"] = json!({
            "requests": { "cpu": "1", "memory": "1Gi" },
            "limits": { "cpu": "2", "memory": "2Gi" }
        });
    }
    // The identity an IRSA webhook gives the first app container.
    if draft.irsa && !spec["containers"].as_array().unwrap().is_empty() {
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        let mut volumes = volumes;
        volumes.push(json!({ "name": IRSA_VOLUME, "projected": { "sources": [
            { "serviceAccountToken": { "audience": "sts.amazonaws.com",
                                       "expirationSeconds": 86400, "path": "token" } }
        ] } }));
        spec["volumes"] = json!(volumes);
        let first = &mut spec["containers"][0];
        let mut env = first["env"].as_array().cloned().unwrap_or_default();
        env.extend([
            json!({ "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/app" }),
            json!({ "name": "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "value": format!("{IRSA_TOKEN_DIR}/token") }),
        ]);
        first["env"] = json!(env);
        let mut mounts = first["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        mounts.push(json!({ "name": IRSA_VOLUME, "mountPath": IRSA_TOKEN_DIR, "readOnly": true }));
        first["volumeMounts"] = json!(mounts);
    }
    let mut annotations: serde_json::Map<String, Value> = draft
        .annotations
        .iter()
        .enumerate()
        .map(|(k, v)| (format!("example.com/note-{k}"), json!(v)))
        .collect();
    if draft.default_container
        && let Some(first) = spec["containers"][0]["name"].as_str()
    {
        annotations.insert(
            "kubectl.kubernetes.io/default-container".to_owned(),
            json!(first),
        );
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "generated", "labels": { "app": "generated" },
                      "annotations": annotations },
        "spec": spec
    })
}

#[derive(Debug, Clone)]
struct SecretDraft {
    arn: usize,
    /// Pattern of an explicit file name (unique per secret), or the default.
    file: Option<usize>,
    format: Option<usize>,
    key: Option<usize>,
    /// 0 stage, 1 id.
    version: Option<usize>,
    env: usize,
    spaced_env: bool,
}

fn secret_draft() -> impl Strategy<Value = SecretDraft> {
    (
        0..ARNS.len(),
        prop::option::of(0..3usize),
        prop::option::of(0..4usize),
        prop::option::of(0..3usize),
        prop::option::of(0..2usize),
        prop_oneof![2 => Just(0usize), 1 => 1..=3usize],
        any::<bool>(),
    )
        .prop_map(
            |(arn, file, format, key, version, env, spaced_env)| SecretDraft {
                arn,
                file,
                format,
                key,
                version,
                env,
                spaced_env,
            },
        )
}

#[derive(Debug, Clone)]
struct RefreshDraft {
    interval: usize,
    url: bool,
    /// Reload by signal: the signal annotation (none: the default HUP).
    process: Option<Option<usize>>,
    restart: Option<bool>,
    /// Metrics: a port, on loopback (false) or the pod IP (true), the address always stated.
    metrics: Option<(u16, bool)>,
}

/// One thing broken on purpose; see [`break_set`].
#[derive(Debug, Clone, Copy)]
enum Break {
    BadArn,
    Traversal,
    UnknownKey,
    SameFile,
    UnknownContainer,
    BadContainerName,
    BadMountPath,
    MountClash,
    BadFormat,
    StageAndId,
    SuffixedPodKey,
    BadInterval,
    ReloadWithoutInterval,
    FailoverSameRegion,
    BadRegion,
    BadSwitch,
    DuplicateEnv,
    EnvClash,
    InitBeforeOurs,
    BadSecretName,
    FileWithoutArn,
    NoArn,
    BadPosition,
}

const BREAKS: [Break; 23] = [
    Break::BadArn,
    Break::Traversal,
    Break::UnknownKey,
    Break::SameFile,
    Break::UnknownContainer,
    Break::BadContainerName,
    Break::BadMountPath,
    Break::MountClash,
    Break::BadFormat,
    Break::StageAndId,
    Break::SuffixedPodKey,
    Break::BadInterval,
    Break::ReloadWithoutInterval,
    Break::FailoverSameRegion,
    Break::BadRegion,
    Break::BadSwitch,
    Break::DuplicateEnv,
    Break::EnvClash,
    Break::InitBeforeOurs,
    Break::BadSecretName,
    Break::FileWithoutArn,
    Break::NoArn,
    Break::BadPosition,
];

#[derive(Debug, Clone)]
struct SetDraft {
    switch: bool,
    unnamed: Option<SecretDraft>,
    named: Vec<(usize, SecretDraft)>,
    mount_path: Option<usize>,
    /// `init-container-position`: `Some(true)` last, `Some(false)` first.
    position: Option<bool>,
    /// A `containers` selection: which of the eligible containers, how it is written.
    selection: Option<(Vec<bool>, bool, bool)>,
    failover: bool,
    refresh: Option<RefreshDraft>,
    /// Broken: which breakage and a number that picks its target.
    breakage: Option<(Break, usize)>,
}

fn set_draft() -> impl Strategy<Value = SetDraft> {
    (
        any::<bool>(),
        prop::option::of(secret_draft()),
        prop::collection::vec((0..SECRET_NAMES.len(), secret_draft()), 0..4),
        prop::option::of(0..MOUNT_PATHS.len()),
        prop::option::of(any::<bool>()),
        prop::option::of((
            prop::collection::vec(any::<bool>(), 10),
            any::<bool>(),
            any::<bool>(),
        )),
        prop::bool::weighted(0.2),
        prop::option::of(
            (
                0..3usize,
                any::<bool>(),
                prop::option::of(prop::option::of(0..3usize)),
                prop::option::of(any::<bool>()),
                prop::option::of((1024..=65535u16, any::<bool>())),
            )
                .prop_map(|(interval, url, process, restart, metrics)| RefreshDraft {
                    interval,
                    url,
                    process,
                    restart,
                    metrics,
                }),
        ),
        prop_oneof![
            1 => Just(None),
            1 => (prop::sample::select(BREAKS.to_vec()), any::<usize>()).prop_map(Some),
        ],
    )
        .prop_map(
            |(
                switch,
                unnamed,
                named,
                mount_path,
                position,
                selection,
                failover,
                refresh,
                breakage,
            )| {
                SetDraft {
                    switch,
                    unnamed,
                    named,
                    mount_path,
                    position,
                    selection,
                    failover,
                    refresh,
                    breakage,
                }
            },
        )
}

/// Random pods with random annotation sets, half of them broken.
pub fn case() -> impl Strategy<Value = Case> {
    (pod_draft(), set_draft()).prop_map(|(pod, set)| build_case(&pod, &set))
}

fn key(base: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("secrets.k8s.aws/{base}.{name}"),
        None => format!("secrets.k8s.aws/{base}"),
    }
}

/// One secret of a set, resolved: its name and annotations.
struct Secret {
    name: Option<&'static str>,
    arn: &'static str,
    keys: BTreeMap<String, String>,
    env: Vec<String>,
}

/// The `name`s of a pod's `spec.<field>` list, in order.
pub fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn build_case(pod_draft: &PodDraft, set: &SetDraft) -> Case {
    let mut pod = build_pod(pod_draft);
    let apps = names(&pod, "containers");
    let inits = names(&pod, "initContainers");

    // The secrets in the order the grammar keeps them: the unnamed first, then by name; the
    // seed's single secret when the draft has none.
    let seed = SecretDraft {
        arn: 0,
        file: None,
        format: None,
        key: None,
        version: None,
        env: 0,
        spaced_env: false,
    };
    let mut drafts: BTreeMap<Option<&'static str>, &SecretDraft> = BTreeMap::new();
    if let Some(unnamed) = &set.unnamed {
        drafts.insert(None, unnamed);
    }
    for (name, draft) in &set.named {
        drafts.entry(Some(SECRET_NAMES[*name])).or_insert(draft);
    }
    if drafts.is_empty() {
        drafts.insert(None, &seed);
    }
    let mut secrets: Vec<Secret> = drafts
        .iter()
        .enumerate()
        .map(|(i, (name, d))| {
            let name = *name;
            let arn = ARNS[d.arn];
            let mut keys = BTreeMap::from([(key("secret-arn", name), arn.to_owned())]);
            if let Some(pattern) = d.file {
                // Unique per secret, never a secret's name or inside another's file.
                let file = [
                    format!("s{i}"),
                    format!("dir{i}/file"),
                    format!("conf{i}/x.json"),
                ][pattern]
                    .clone();
                keys.insert(key("secret-filename", name), file);
            }
            if let Some(format) = d.format {
                keys.insert(
                    key("secret-format", name),
                    ["raw", "json", "env", "split"][format].to_owned(),
                );
            }
            if let Some(k) = d.key {
                keys.insert(
                    key("secret-key", name),
                    ["password", "db.host", "my-key"][k].to_owned(),
                );
            }
            match (d.version, arn == PARAMETER) {
                (Some(0), _) => {
                    keys.insert(key("version-stage", name), "AWSPREVIOUS".to_owned());
                }
                (Some(_), true) => {
                    keys.insert(key("version-id", name), "3".to_owned());
                }
                (Some(_), false) => {
                    keys.insert(
                        key("version-id", name),
                        "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111".to_owned(),
                    );
                }
                (None, _) => {}
            }
            let env: Vec<String> = (0..d.env).map(|k| format!("S{i}_VAR_{k}")).collect();
            if !env.is_empty() {
                let sep = if d.spaced_env { " , " } else { "," };
                let list: Vec<String> = env
                    .iter()
                    .enumerate()
                    .map(|(k, var)| format!("{var}={}", ["username", "password", "db.port"][k]))
                    .collect();
                keys.insert(key("env", name), list.join(sep));
            }
            Secret {
                name,
                arn,
                keys,
                env,
            }
        })
        .collect();

    let last = set.position == Some(true);
    let mount = set.mount_path.map(|i| MOUNT_PATHS[i]);
    let mut pod_keys: BTreeMap<String, String> = BTreeMap::new();
    if set.switch {
        pod_keys.insert(key("sidecarInjectorWebhook", None), "enabled".to_owned());
    }
    if let Some((annotated, _)) = mount {
        pod_keys.insert(key("mount-path", None), annotated.to_owned());
    }
    if let Some(position) = set.position {
        pod_keys.insert(
            key("init-container-position", None),
            if position { "last" } else { "first" }.to_owned(),
        );
    }
    // The containers that can be selected: the app containers, and the init containers that run
    // after ours.
    let eligible: Vec<(&'static str, usize, &String)> = apps
        .iter()
        .enumerate()
        .map(|(i, n)| ("containers", i, n))
        .chain(
            inits
                .iter()
                .enumerate()
                .filter(|_| !last)
                .map(|(i, n)| ("initContainers", i, n)),
        )
        .collect();
    let mut selection: Option<Vec<String>> = None;
    if let Some((mask, spaced, duplicate)) = &set.selection
        && !eligible.is_empty()
    {
        let mut chosen: Vec<String> = eligible
            .iter()
            .zip(mask.iter().cycle())
            .filter(|(_, on)| **on)
            .map(|(e, _)| e.2.clone())
            .collect();
        if chosen.is_empty() {
            chosen.push(eligible[0].2.clone());
        }
        let mut written = chosen.clone();
        if *duplicate {
            written.push(chosen[0].clone());
        }
        written.reverse();
        let sep = if *spaced { ", " } else { "," };
        pod_keys.insert(key("containers", None), written.join(sep));
        selection = Some(chosen);
    }
    if set.failover {
        pod_keys.insert(key("failover-region", None), FAILOVER.to_owned());
    }
    let mut shares_pids = false;
    if let Some(refresh) = &set.refresh {
        pod_keys.insert(
            key("refresh-interval", None),
            ["5m", "1h30m", "30s"][refresh.interval].to_owned(),
        );
        if refresh.url {
            pod_keys.insert(
                key("reload-url", None),
                "http://127.0.0.1:9090/-/reload".to_owned(),
            );
        }
        if let Some(signal) = refresh.process {
            shares_pids = true;
            pod_keys.insert(key("reload-process", None), "nginx".to_owned());
            if let Some(signal) = signal {
                pod_keys.insert(
                    key("reload-signal", None),
                    ["HUP", "SIGUSR1", "WINCH"][signal].to_owned(),
                );
            }
        }
        if let Some(restart) = refresh.restart {
            pod_keys.insert(key("restart-on-change", None), restart.to_string());
        }
        if let Some((port, on_pod)) = refresh.metrics {
            pod_keys.insert(key("metrics-port", None), port.to_string());
            let address = if on_pod { "pod" } else { "loopback" };
            pod_keys.insert(key("metrics-address", None), address.to_owned());
        }
    }

    let selected_of = |selection: &Option<Vec<String>>, last: bool| -> Vec<(&'static str, usize)> {
        let in_selection = |name: &String| selection.as_ref().is_none_or(|s| s.contains(name));
        apps.iter()
            .enumerate()
            .filter(|(_, n)| in_selection(n))
            .map(|(i, _)| ("containers", i))
            .chain(
                inits
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| !last && in_selection(n))
                    .map(|(i, _)| ("initContainers", i)),
            )
            .collect()
    };

    let outcome = match set.breakage {
        None => Outcome::Inject(Injection {
            mount_path: mount.map_or("/tmp", |m| m.1).to_owned(),
            selected: selected_of(&selection, last),
            last,
            env: secrets.iter().flat_map(|s| s.env.clone()).collect(),
            rotates: set.refresh.is_some(),
            shares_pids,
            irsa: pod_draft.irsa && !apps.is_empty(),
        }),
        Some((kind, pick)) => {
            let selected = selected_of(&selection, last);
            let (key, fell_back) = break_set(
                kind,
                pick,
                &pod,
                &mut secrets,
                &mut pod_keys,
                &selected,
                &inits,
            );
            let broken = if fell_back {
                format!("BadArn (no target for {kind:?})")
            } else {
                format!("{kind:?}")
            };
            Outcome::Deny { key, broken }
        }
    };

    let mut ours = pod_keys;
    for secret in &secrets {
        ours.extend(secret.keys.clone());
    }
    let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
    for (k, v) in &ours {
        annotations.insert(k.clone(), json!(v));
    }
    Case { pod, ours, outcome }
}

/// Break one thing in a valid set; the annotation the denial must name, and whether the
/// breakage fell back to a bad ARN because the pod or set gives it no target.
#[allow(clippy::too_many_arguments)]
fn break_set(
    kind: Break,
    pick: usize,
    pod: &Value,
    secrets: &mut [Secret],
    pod_keys: &mut BTreeMap<String, String>,
    selected: &[(&'static str, usize)],
    inits: &[String],
) -> (String, bool) {
    let n = secrets.len();
    let one = pick % n;
    let name = secrets[one].name;
    let set = |secrets: &mut [Secret], i: usize, base: &str, value: &str| {
        let k = key(base, secrets[i].name);
        secrets[i].keys.insert(k.clone(), value.to_owned());
        k
    };
    let pick_of = |options: &[&'static str]| options[pick / 7 % options.len()];
    let mut fell_back = false;
    let key = match kind {
        Break::BadArn => set(
            secrets,
            one,
            "secret-arn",
            pick_of(&[
                "nope",
                "",
                "arn:aws:s3:::bucket",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
                "arn:aws:ssm:us-east-1:123456789012:parameter/",
            ]),
        ),
        Break::Traversal => set(
            secrets,
            one,
            "secret-filename",
            pick_of(&[
                "../etc/passwd",
                "a/../../b",
                "/etc/passwd",
                "..data",
                "x/./y",
                "a//b",
                "dir/",
            ]),
        ),
        Break::UnknownKey => {
            let k = pick_of(&[
                "secrets.k8s.aws/mount-paht",
                "secrets.k8s.aws/colour",
                "secrets.k8s.aws/secret-fromat.db",
            ]);
            pod_keys.insert(k.to_owned(), "x".to_owned());
            k.to_owned()
        }
        Break::SameFile if n >= 2 => {
            let (a, b) = (one, (one + 1 + pick / 7 % (n - 1)) % n);
            let (a, b) = (a.min(b), a.max(b));
            let (file_a, file_b) = if pick.is_multiple_of(2) {
                ("shared/file", "shared/file")
            } else {
                ("shared", "shared/inner")
            };
            // Either order: the later secret is named.
            let (file_a, file_b) = if pick.is_multiple_of(3) {
                (file_b, file_a)
            } else {
                (file_a, file_b)
            };
            set(secrets, a, "secret-filename", file_a);
            set(secrets, b, "secret-filename", file_b)
        }
        Break::UnknownContainer => {
            pod_keys.insert(key("containers", None), "nosuch-0".to_owned());
            key("containers", None)
        }
        Break::BadContainerName => {
            pod_keys.insert(key("containers", None), "App_1".to_owned());
            key("containers", None)
        }
        Break::BadMountPath => {
            pod_keys.insert(
                key("mount-path", None),
                pick_of(&["relative", "/", "/a/../b", "", "/a//b", "/x/."]).to_owned(),
            );
            key("mount-path", None)
        }
        Break::MountClash
            if let Some(path) = selected.iter().find_map(|(field, i)| {
                pod["spec"][field][i]["volumeMounts"][0]["mountPath"].as_str()
            }) =>
        {
            pod_keys.insert(key("mount-path", None), path.to_owned());
            key("mount-path", None)
        }
        Break::BadFormat => set(secrets, one, "secret-format", pick_of(&["yaml", "RAW", ""])),
        Break::StageAndId => {
            set(secrets, one, "version-stage", "AWSCURRENT");
            set(secrets, one, "version-id", "7")
        }
        Break::SuffixedPodKey => {
            let k = format!(
                "{}.{}",
                pick_of(&["secrets.k8s.aws/mount-path", "secrets.k8s.aws/containers"]),
                name.unwrap_or("db")
            );
            pod_keys.insert(k.clone(), "/x".to_owned());
            k
        }
        Break::BadInterval => {
            pod_keys.insert(
                key("refresh-interval", None),
                pick_of(&["10s", "25h", "5", "soon"]).to_owned(),
            );
            key("refresh-interval", None)
        }
        Break::ReloadWithoutInterval => {
            pod_keys.retain(|k, _| {
                ![
                    "refresh-interval",
                    "reload-url",
                    "reload-process",
                    "reload-signal",
                    "restart-on-change",
                    "metrics-port",
                    "metrics-address",
                ]
                .iter()
                .any(|base| *k == key(base, None))
            });
            let base = pick_of(&["reload-url", "restart-on-change"]);
            let value = if base == "reload-url" {
                "http://127.0.0.1:8080/"
            } else {
                "true"
            };
            pod_keys.insert(key(base, None), value.to_owned());
            key(base, None)
        }
        Break::FailoverSameRegion if let Some(s) = secrets.iter().find(|s| s.arn != PARAMETER) => {
            let region = s.arn.split(':').nth(3).unwrap();
            pod_keys.insert(key("failover-region", None), region.to_owned());
            key("failover-region", None)
        }
        Break::BadRegion => {
            pod_keys.insert(key("failover-region", None), "mars".to_owned());
            key("failover-region", None)
        }
        Break::BadSwitch => {
            pod_keys.insert(
                key("sidecarInjectorWebhook", None),
                pick_of(&["true", "Enabled", "yes"]).to_owned(),
            );
            key("sidecarInjectorWebhook", None)
        }
        Break::DuplicateEnv if n >= 2 => {
            let (a, b) = (0, 1 + pick % (n - 1));
            set(secrets, a, "env", "SHARED_VAR=username");
            set(secrets, b, "env", "SHARED_VAR=password")
        }
        Break::EnvClash
            if let Some(var) = selected
                .iter()
                .find_map(|(field, i)| pod["spec"][field][i]["env"][0]["name"].as_str()) =>
        {
            set(secrets, one, "env", &format!("{var}=username"))
        }
        Break::InitBeforeOurs if !inits.is_empty() => {
            pod_keys.insert(key("init-container-position", None), "last".to_owned());
            pod_keys.insert(key("containers", None), inits[pick % inits.len()].clone());
            key("containers", None)
        }
        Break::BadSecretName => {
            let k = key("secret-arn", Some(pick_of(&["DB", "-db", "db_x", "db-"])));
            pod_keys.insert(k.clone(), SM_EAST.to_owned());
            k
        }
        Break::FileWithoutArn => {
            let k = key("secret-filename", Some("ghost"));
            pod_keys.insert(k.clone(), "ghost-file".to_owned());
            k
        }
        Break::NoArn => {
            for secret in secrets.iter_mut() {
                secret
                    .keys
                    .retain(|k, _| !k.starts_with("secrets.k8s.aws/secret-arn"));
            }
            pod_keys.insert(key("sidecarInjectorWebhook", None), "enabled".to_owned());
            key("secret-arn", None)
        }
        Break::BadPosition => {
            pod_keys.insert(
                key("init-container-position", None),
                pick_of(&["middle", "First", "0"]).to_owned(),
            );
            key("init-container-position", None)
        }
        // No target in this pod or set.
        Break::SameFile
        | Break::MountClash
        | Break::FailoverSameRegion
        | Break::DuplicateEnv
        | Break::EnvClash
        | Break::InitBeforeOurs => {
            fell_back = true;
            set(
                secrets,
                one,
                "secret-arn",
                "arn:aws:iam::123456789012:role/x",
            )
        }
    };
    (key, fell_back)
}

/// A deterministic sample of the generated cases (proptest's fixed-seed runner): `valid` valid
/// cases and `invalid` invalid ones, each with at least one app container, so that each is a
/// Pod the API server accepts before admission. Named `sample-<i>`.
pub fn sample(valid: usize, invalid: usize) -> Vec<Case> {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = case();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while good.len() < valid || bad.len() < invalid {
        let mut case = strategy.new_tree(&mut runner).unwrap().current();
        if case.app_containers() == 0 {
            continue;
        }
        let name = format!("sample-{}", good.len() + bad.len());
        let (list, wanted) = if case.valid() {
            (&mut good, valid)
        } else {
            (&mut bad, invalid)
        };
        if list.len() < wanted {
            case.pod["metadata"]["name"] = json!(name);
            list.push(case);
        }
    }
    good.into_iter().chain(bad).collect()
}

/// The injected pod a valid case must give, built from the original pod and what the case asks
/// for: our annotation added; our volume and the agent's empty stand-in for the Kubernetes API
/// token appended; our read-only mount, then our env vars, appended to
/// each selected container; the agent inserted first or last among the init containers;
/// `shareProcessNamespace` for a reload signal; nothing else changed. The agent and the volume
/// are taken from `patched` (their contents are checked by the unit tests and [`check_agent`]).
pub fn expected_pod(case: &Case, patched: &Value) -> Result<Value, String> {
    let Outcome::Inject(injection) = &case.outcome else {
        return Err("an invalid case has no injected pod".to_owned());
    };
    let mut expected = case.pod.clone();
    expected["metadata"]["annotations"]["secrets.k8s.aws/status"] = json!("injected");

    let volumes = patched["spec"]["volumes"]
        .as_array()
        .ok_or("the patched pod has no volumes")?;
    let [.., volume, no_token] = volumes.as_slice() else {
        return Err("the patched pod has fewer than two volumes".to_owned());
    };
    if volume["name"] != "secret-vol" || volume["emptyDir"]["medium"] != "Memory" {
        return Err(format!(
            "the last but one volume is not our in-memory secret-vol: {volume}"
        ));
    }
    if *no_token
        != json!({ "name": "secret-inject-no-api-token",
                   "emptyDir": { "medium": "Memory", "sizeLimit": "4Ki" } })
    {
        return Err(format!(
            "the last volume is not the agent's empty stand-in for the API token: {no_token}"
        ));
    }
    push(&mut expected["spec"], "volumes", volume.clone());
    push(&mut expected["spec"], "volumes", no_token.clone());

    let mount =
        json!({ "name": "secret-vol", "mountPath": injection.mount_path, "readOnly": true });
    let env: Vec<Value> = injection
        .env
        .iter()
        .map(|var| {
            json!({ "name": var, "valueFrom": { "fileKeyRef": {
                "volumeName": "secret-vol", "path": "..data/..env", "key": var } } })
        })
        .collect();
    for (field, index) in &injection.selected {
        let container = &mut expected["spec"][*field][*index];
        push(container, "volumeMounts", mount.clone());
        for var in &env {
            push(container, "env", var.clone());
        }
    }

    let inits = patched["spec"]["initContainers"]
        .as_array()
        .ok_or("the patched pod has no init containers")?;
    let agent = if injection.last {
        inits.last()
    } else {
        inits.first()
    }
    .ok_or("no init containers")?;
    if agent["name"] != "secrets-init-container" {
        return Err(format!(
            "the {} init container is not ours: {}",
            if injection.last { "last" } else { "first" },
            agent["name"]
        ));
    }
    match expected["spec"]["initContainers"].as_array_mut() {
        Some(existing) if !injection.last => existing.insert(0, agent.clone()),
        _ => push(&mut expected["spec"], "initContainers", agent.clone()),
    }
    if injection.shares_pids {
        expected["spec"]["shareProcessNamespace"] = json!(true);
    }
    Ok(expected)
}

fn push(object: &mut Value, field: &str, item: Value) {
    match object[field].as_array_mut() {
        Some(items) => items.push(item),
        None => object[field] = json!([item]),
    }
}

/// The agent of an injected pod (`spec.initContainers` as stored or patched): it mounts the
/// volume at the mount path, is a native sidecar exactly when the set rotates, and carries the
/// pod's IRSA identity when it has one.
pub fn check_agent(injection: &Injection, pod: &Value) -> Result<(), String> {
    let agent = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "secrets-init-container")
        .ok_or("no secrets-init-container")?;
    let mounts = agent["volumeMounts"]
        .as_array()
        .ok_or("agent has no mounts")?;
    let ours: Vec<&Value> = mounts
        .iter()
        .filter(|m| m["name"] == "secret-vol")
        .collect();
    if ours.len() != 1 || ours[0]["mountPath"] != injection.mount_path.as_str() {
        return Err(format!(
            "agent mounts {ours:?}, expected secret-vol at {}",
            injection.mount_path
        ));
    }
    // No Kubernetes API token: an empty read-only stand-in where it would be mounted.
    let api_token: Vec<&Value> = mounts
        .iter()
        .filter(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        .collect();
    if api_token.len() != 1
        || api_token[0]["name"] != "secret-inject-no-api-token"
        || api_token[0]["readOnly"] != true
    {
        return Err(format!(
            "agent mounts {api_token:?} at the API token's directory, expected only the empty \
             secret-inject-no-api-token"
        ));
    }
    let native = agent["restartPolicy"] == "Always";
    if native != injection.rotates {
        return Err(format!(
            "agent restartPolicy {}, but the set {} rotate",
            agent["restartPolicy"],
            if injection.rotates {
                "does"
            } else {
                "does not"
            }
        ));
    }
    if injection.irsa {
        let has_env = |name: &str| {
            agent["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == name)
        };
        let token = mounts
            .iter()
            .any(|m| m["name"] == IRSA_VOLUME && m["mountPath"] == IRSA_TOKEN_DIR);
        if !(has_env("AWS_ROLE_ARN") && has_env("AWS_WEB_IDENTITY_TOKEN_FILE") && token) {
            return Err(format!("agent lacks the pod's IRSA identity: {agent}"));
        }
    }
    Ok(())
}

/// How many times each container of `pod` (`containers`, then `initContainers` other than the
/// agent, in order) mounts our volume.
pub fn secret_mounts(pod: &Value) -> Vec<(String, usize)> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|field| pod["spec"][*field].as_array().cloned().unwrap_or_default())
        .filter(|c| c["name"] != "secrets-init-container")
        .map(|c| {
            let n = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["name"] == "secret-vol")
                .count();
            (c["name"].as_str().unwrap_or_default().to_owned(), n)
        })
        .collect()
}

/// [`secret_mounts`] as the case asks: once in each selected container, never elsewhere.
pub fn expected_secret_mounts(case: &Case, injection: &Injection) -> Vec<(String, usize)> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|field| {
            names(&case.pod, field)
                .into_iter()
                .enumerate()
                .map(move |(i, name)| (*field, i, name))
        })
        .map(|(field, i, name)| {
            let n = usize::from(injection.selected.contains(&(field, i)));
            (name, n)
        })
        .collect()
}
