//! `iam-policy` and the agent agree, checked on random manifests: for a fixed-seed sample of
//! valid annotation sets ([`random_pod::sample`]), the real agent runs the plan `inject`
//! rendered against moto behind the counting proxy, and
//!
//! - every (action, resource) that IAM would check for a request it sent is allowed by the
//!   policy `iam-policy` printed for the pod's ServiceAccount (BatchGetSecretValue: the action
//!   on `*` and GetSecretValue on each secret of the list; a partial ARN: the full ARN of the
//!   secret it names), and every request is signed for the region of the ARNs it names;
//! - every action a policy grants was used by its own case when the agent got as far as its
//!   first write (rotation is given a few rounds), and across the sample each of the agent's
//!   actions was used, through each path: a batch, a failover to the replicas, a rotation
//!   round, a partial ARN.
//!
//! The generated sets name two secrets in two regions and one parameter; each case maps them
//! onto secrets in moto: as generated (every third case: one secret per ARN, shared by the
//! pod's secrets), else one secret per secret name, in the generated region or (every third
//! case, so that pods batch) all in us-east-1 and at `AWSCURRENT`; as partial ARNs every
//! fourth case. A pod with a
//! failover region and no parameter finds its primary regions dead, so the agent fails over.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common::agent::ram_dir;
use crate::common::moto::{AwsProxy, Call, Moto, Route};
use crate::common::{random_pod, secret_inject};

/// Cases in the sample: each is one agent run of a fraction of a second (a rotating one until
/// it has checked once).
const CASES: usize = 30;
const FAILOVER: &str = "us-west-2";
/// The version id the generated sets pin some secrets to.
const VERSION_ID: &str = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111";
/// Every secret's and the parameter's value: the keys and env bindings the sets select.
const VALUE: &str =
    r#"{"username":"u","password":"p","my-key":"k","db.port":"5432","db":{"host":"h"}}"#;
/// The generated secrets (region, name), and the prefixes of their per-name copies.
const SECRETS: [(&str, &str); 2] = [
    ("us-east-1", "database-password"),
    ("eu-west-1", "app/api-key"),
];
const PREFIXES: [&str; 8] = [
    "", "seed/", "db/", "api/", "cache/", "tls/", "token-2/", "x9/",
];
/// Rotation rounds every this long here (the agent takes 1 s and more, the webhook 30 s).
const INTERVAL: &str = "1s";

/// moto with the secrets (each in both regions, with a replica in [`FAILOVER`]) and the
/// parameter.
struct Fixture {
    moto: Moto,
    /// `(region, name)` -> full ARN.
    secrets: BTreeMap<(String, String), String>,
    /// Every full ARN, replicas too.
    known: Vec<String>,
}

fn fixture() -> Fixture {
    let moto = Moto::start();
    let mut secrets = BTreeMap::new();
    let mut known = Vec::new();
    for region in SECRETS.map(|(region, _)| region) {
        for (prefix, (_, base)) in PREFIXES.iter().flat_map(|p| SECRETS.map(|s| (p, s))) {
            let name = format!("{prefix}{base}");
            let (status, body) = moto.json(
                region,
                "secretsmanager.CreateSecret",
                &json!({"Name": name, "SecretString": VALUE,
                        "AddReplicaRegions": [{"Region": FAILOVER}]}),
            );
            assert_eq!(status, 200, "{body}");
            let arn = body["ARN"].as_str().unwrap().to_owned();
            // A second version, the one the sets pin: the first is then AWSPREVIOUS.
            let (status, body) = moto.json(
                region,
                "secretsmanager.PutSecretValue",
                &json!({"SecretId": arn, "SecretString": VALUE, "ClientRequestToken": VERSION_ID}),
            );
            assert_eq!(status, 200, "{body}");
            known.push(arn.replace(&format!(":{region}:"), &format!(":{FAILOVER}:")));
            known.push(arn.clone());
            secrets.insert((region.to_owned(), name), arn);
        }
    }
    // Three versions: the sets pin version 3.
    for _ in 0..3 {
        let (status, body) = moto.json(
            "us-east-1",
            "AmazonSSM.PutParameter",
            &json!({"Name": "/app/url", "Type": "SecureString", "Value": VALUE, "Overwrite": true}),
        );
        assert_eq!(status, 200, "{body}");
    }
    Fixture {
        moto,
        secrets,
        known,
    }
}

/// The ARN field at `index` (3: region).
fn field(arn: &str, index: usize) -> &str {
    arn.split(':').nth(index).unwrap_or("")
}

/// Case `i`'s pod: in its own namespace, its Secrets Manager ARNs mapped onto moto's secrets.
fn pod_of(i: usize, case: &random_pod::Case, fixture: &Fixture) -> Value {
    let mut pod = case.pod.clone();
    pod["metadata"]["namespace"] = json!(format!("case-{i}"));
    let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
    if i % 3 == 2 {
        // All at AWSCURRENT: the Secrets Manager secrets' versions dropped.
        let secrets: Vec<String> = annotations
            .iter()
            .filter(|(_, v)| v.as_str().is_some_and(|v| field(v, 2) == "secretsmanager"))
            .filter_map(|(k, _)| Some(k.strip_prefix("secrets.k8s.aws/secret-arn")?.to_owned()))
            .collect();
        for suffix in secrets {
            for base in ["version-stage", "version-id"] {
                annotations.remove(&format!("secrets.k8s.aws/{base}{suffix}"));
            }
        }
    }
    for (key, value) in annotations.iter_mut() {
        let Some(rest) = key.strip_prefix("secrets.k8s.aws/secret-arn") else {
            continue;
        };
        let arn = value.as_str().unwrap();
        if field(arn, 2) != "secretsmanager" {
            continue; // the parameter: moto's ARN already
        }
        let base = SECRETS.iter().find(|(r, _)| *r == field(arn, 3)).unwrap().1;
        let region = if i % 3 == 2 {
            "us-east-1"
        } else {
            field(arn, 3)
        };
        let prefix = match (i % 3, rest.strip_prefix('.')) {
            (0, _) => String::new(),
            (_, Some(name)) => format!("{name}/"),
            (_, None) => "seed/".to_owned(),
        };
        let full = &fixture.secrets[&(region.to_owned(), format!("{prefix}{base}"))];
        let arn = if i % 4 == 1 {
            full[..full.len() - 7].to_owned()
        } else {
            full.clone()
        };
        *value = json!(arn);
    }
    pod
}

/// The environment of the agent container `inject` renders for `pod` (the rotating one, when
/// there are two).
fn agent_env(pod: &Value) -> Vec<(String, String)> {
    // A cluster with EnvFiles: random pods bind env vars.
    let output = secret_inject(
        &["inject", "-f", "-", "--kubernetes-version", "1.35"],
        Some(pod.to_string().as_bytes()),
    );
    assert!(
        output.status.success(),
        "inject: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let injected =
        Value::deserialize(yaml_serde::Deserializer::from_slice(&output.stdout)).unwrap();
    let agents: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| injected["spec"][list].as_array().into_iter().flatten())
        .filter(|c| {
            let name = c["name"].as_str().unwrap();
            name == secret_inject::contract::CONTAINER_NAME
                || name == secret_inject::contract::SIDECAR_NAME
        })
        .collect();
    let env_of = |c: &Value| -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let rotating = agents.iter().find(|c| {
        env_of(c)
            .iter()
            .any(|(k, _)| k.ends_with("REFRESH_INTERVAL"))
    });
    env_of(rotating.or(agents.first()).expect("the agent container"))
        .into_iter()
        // The pod's own identity is the static keys of the run.
        .filter(|(k, _)| !k.starts_with("AWS_"))
        .collect()
}

/// One agent run against `endpoint`: the exit code and whether the first write happened. A
/// rotating agent is stopped (SIGTERM) once `wanted` actions were all seen by `proxy`, or after
/// a few rounds.
fn run_agent(
    env: &[(String, String)],
    endpoint: &str,
    proxy: &AwsProxy,
    wanted: &BTreeSet<String>,
) -> (Option<i32>, bool, String) {
    let out = ram_dir();
    let scratch = tempfile::tempdir().unwrap();
    let termination = scratch.path().join("termination-log");
    let log = scratch.path().join("log");
    let rotating = env.iter().any(|(k, _)| k.ends_with("REFRESH_INTERVAL"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(["--log-format", "plain", "agent", "--deadline", "10s"])
        .args(["--attempt-timeout", "2s"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SECRET_INJECT_OUTPUT_DIR", out.path())
        .env("SECRET_INJECT_TERMINATION_LOG", &termination)
        .env("HOME", scratch.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .envs(rotating.then_some(("SECRET_INJECT_REFRESH_INTERVAL", INTERVAL)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let wrote = || {
        std::fs::read_to_string(&termination).is_ok_and(|t| t.starts_with("secret-inject: wrote"))
    };
    // Calls made by the first write (of a rotating agent).
    let mut at_write: Option<usize> = None;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        let calls = proxy.calls();
        if at_write.is_none() && wrote() {
            at_write = Some(calls.len());
        }
        let seen: BTreeSet<String> = calls.iter().flat_map(actions_of).collect();
        // A round has begun, and everything granted was asked for; or time is up.
        let checked = at_write.is_some_and(|n| calls.len() > n) && wanted.is_subset(&seen);
        if rotating && (checked || started.elapsed() > Duration::from_secs(5)) {
            rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::TERM,
            )
            .unwrap();
            break child.wait().unwrap().code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let wrote = wrote();
    let termination = std::fs::read_to_string(&termination).unwrap_or_default();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    (code, wrote, format!("{termination}\n{log}"))
}

/// The IAM actions a request needs (without resources).
fn actions_of(call: &Call) -> Vec<String> {
    match call.operation.as_str() {
        "secretsmanager.BatchGetSecretValue" => vec![
            "secretsmanager:BatchGetSecretValue".to_owned(),
            "secretsmanager:GetSecretValue".to_owned(),
        ],
        operation => vec![iam_action(operation)],
    }
}

fn iam_action(operation: &str) -> String {
    match operation.split_once('.') {
        Some(("AmazonSSM", op)) => format!("ssm:{op}"),
        Some(("secretsmanager", op)) => format!("secretsmanager:{op}"),
        _ => panic!("the agent sent an unexpected request: {operation}"),
    }
}

/// What IAM checks for a request: (action, resource) pairs. A secret named by a partial ARN is
/// checked as its full ARN.
fn checks_of(call: &Call, known: &[String]) -> Vec<(String, String)> {
    let full = |sent: &str| -> String {
        known
            .iter()
            .find(|k| {
                *k == sent
                    || k.strip_prefix(sent)
                        .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
            })
            .cloned()
            .unwrap_or_else(|| sent.to_owned())
    };
    match call.operation.as_str() {
        "secretsmanager.BatchGetSecretValue" => {
            let mut checks = vec![(
                "secretsmanager:BatchGetSecretValue".to_owned(),
                "*".to_owned(),
            )];
            checks.extend(
                call.resources
                    .iter()
                    .map(|r| ("secretsmanager:GetSecretValue".to_owned(), full(r))),
            );
            checks
        }
        "AmazonSSM.GetParameters" => call
            .resources
            .iter()
            // `ARN:version` or `ARN:label`: IAM checks the parameter's ARN.
            .map(|r| {
                let arn: Vec<&str> = r.splitn(7, ':').take(6).collect();
                ("ssm:GetParameters".to_owned(), arn.join(":"))
            })
            .collect(),
        operation => call
            .resources
            .iter()
            .map(|r| (iam_action(operation), full(r)))
            .collect(),
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` any one.
fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn allowed(policy: &Value, action: &str, resource: &str) -> bool {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Effect"] == "Allow" && s["Action"] == action)
        .any(|s| match &s["Resource"] {
            Value::String(pattern) => matches(pattern, resource),
            Value::Array(patterns) => patterns
                .iter()
                .any(|p| matches(p.as_str().unwrap(), resource)),
            _ => false,
        })
}

#[test]
fn iam_wildcards_match_as_iam_does() {
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCd12";
    assert!(matches("*", arn));
    assert!(matches(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-??????",
        arn
    ));
    assert!(!matches(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:d-??????",
        arn
    ));
    assert!(!matches(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-?????",
        arn
    ));
    assert!(matches("arn:aws:*:db-*", arn));
    assert!(!matches(arn, &format!("{arn}x")));
}

#[test]
fn every_call_the_agent_makes_is_allowed_and_every_granted_action_is_used() {
    let fixture = fixture();
    let cases = random_pod::sample(CASES, 0);
    let mut violations: Vec<String> = Vec::new();
    let mut granted_total: BTreeSet<String> = BTreeSet::new();
    let mut used_total: BTreeSet<String> = BTreeSet::new();
    let (mut wrote_cases, mut batches, mut failovers, mut rounds, mut partials) = (0, 0, 0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        let pod = pod_of(i, case, &fixture);
        let annotations = pod["metadata"]["annotations"].as_object().unwrap();
        // The policy iam-policy prints for this pod's ServiceAccount.
        let output = secret_inject(&["iam-policy", "-f", "-"], Some(pod.to_string().as_bytes()));
        assert!(
            output.status.success(),
            "case {i}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let policies: Value = serde_json::from_slice(&output.stdout).unwrap();
        let policies = policies.as_object().unwrap();
        assert_eq!(policies.len(), 1, "case {i}: {policies:#?}");
        let (account, policy) = policies.iter().next().unwrap();
        assert!(account.starts_with(&format!("case-{i}/")), "{account}");
        let granted: BTreeSet<String> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Action"].as_str().unwrap().to_owned())
            .collect();
        granted_total.extend(granted.iter().cloned());

        // The agent: a pod with a failover region and no parameter finds its primary regions
        // dead.
        let has_parameter = annotations
            .values()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with("arn:aws:ssm:")));
        let fails_over =
            annotations.contains_key("secrets.k8s.aws/failover-region") && !has_parameter;
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let routes = if fails_over {
            SECRETS
                .iter()
                .map(|(r, _)| (*r, Route::Forward(dead)))
                .collect()
        } else {
            Vec::new()
        };
        let proxy = AwsProxy::routed(routes, Route::Forward(fixture.moto.port));
        let env = agent_env(&pod);
        let (code, wrote, log) = run_agent(&env, &proxy.endpoint(), &proxy, &granted);

        let calls = proxy.calls();
        assert!(!calls.is_empty(), "case {i}: no call at all\n{log}");
        let mut used: BTreeSet<String> = BTreeSet::new();
        for call in &calls {
            for resource in &call.resources {
                let region = field(resource, 3);
                if region != call.region {
                    violations.push(format!(
                        "case {i}: {} signed for {} names {resource}",
                        call.operation, call.region
                    ));
                }
            }
            for (action, resource) in checks_of(call, &fixture.known) {
                if !allowed(policy, &action, &resource) {
                    violations.push(format!(
                        "case {i} ({account}): {} sent, {action} on {resource} not allowed by \
                         {policy:#}",
                        call.operation
                    ));
                }
                used.insert(action);
            }
            match call.operation.as_str() {
                "secretsmanager.BatchGetSecretValue" => batches += 1,
                "secretsmanager.DescribeSecret" => rounds += 1,
                _ => {}
            }
            if call.region == FAILOVER {
                failovers += 1;
            }
            partials += call
                .resources
                .iter()
                .filter(|r| !fixture.known.contains(r) && field(r, 2) == "secretsmanager")
                .count();
        }
        // Nothing granted that this case did not use, once the agent got to its first write.
        if wrote {
            wrote_cases += 1;
            let unused: Vec<&String> = granted.difference(&used).collect();
            if !unused.is_empty() {
                violations.push(format!(
                    "case {i} ({account}): granted but never used: {unused:?}; calls {calls:#?}\n{log}"
                ));
            }
        } else {
            eprintln!("case {i}: the agent exited with {code:?} before writing:\n{log}");
        }
        used_total.extend(used);
    }
    assert!(violations.is_empty(), "{}", violations.join("\n\n"));
    // Across the sample: every action granted was used, and every path was taken.
    assert_eq!(granted_total, used_total);
    assert_eq!(
        used_total,
        BTreeSet::from(
            [
                "secretsmanager:GetSecretValue",
                "secretsmanager:BatchGetSecretValue",
                "secretsmanager:DescribeSecret",
                "ssm:GetParameters"
            ]
            .map(str::to_owned)
        )
    );
    eprintln!(
        "{} cases, {wrote_cases} written; {batches} batch calls, {failovers} calls to the \
         failover region, {rounds} DescribeSecret calls, {partials} partial ARNs sent",
        cases.len()
    );
    assert!(
        wrote_cases >= CASES / 3,
        "{wrote_cases} of {CASES} cases wrote their files"
    );
    assert!(batches > 0 && failovers > 0 && rounds > 0 && partials > 0);
}
