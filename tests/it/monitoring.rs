//! Monitoring (issue 22): the rotation sidecar's metrics scraped from the real agent running
//! against moto (a rotation, a denial, throttling from the fault proxy), the chart's alerts
//! checked and unit-tested by the real `promtool`, and every metric that an alert or the
//! dashboard names found in what the webhook and the agent serve.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common;
use crate::common::agent::{Group, ram_dir};
use crate::common::moto::{Fault, FaultProxy, Moto};
use crate::common::webhook::Webhook;

const RELEASE: &str = "t";
const SERVICE_DNS: &str = "secret-inject.testns.svc";
const VALUE: &str = "s3cr3t-value-one";
const ROTATED: &str = "s3cr3t-value-two";
const SECRET_NAME: &str = "team-a/db-password";

/// A free loopback port (released before the agent binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent as a rotation sidecar serving metrics on `port`, secret `db` from `arn`.
fn sidecar(endpoint: &str, out: &Path, arn: &str, port: u16, keys: (&str, &str)) -> Group {
    let secrets = json!([{"name": "db", "arn": arn, "file": "db"}]);
    sidecar_with(endpoint, out, &secrets, port, keys)
}

/// The agent as a rotation sidecar of `secrets` (the JSON of SECRET_INJECT_SECRETS).
fn sidecar_with(
    endpoint: &str,
    out: &Path,
    secrets: &Value,
    port: u16,
    keys: (&str, &str),
) -> Group {
    let secrets = secrets.to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_secret-inject"));
    command
        .args(["--log-format", "plain", "agent"])
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1)
        .env("SECRET_INJECT_OUTPUT_DIR", out)
        .env("SECRET_INJECT_SECRETS", secrets)
        .env("SECRET_INJECT_REFRESH_INTERVAL", "1s")
        .env("SECRET_INJECT_ATTEMPT_TIMEOUT", "2s")
        .env("SECRET_INJECT_METRICS_PORT", port.to_string())
        .env(
            "SECRET_INJECT_TERMINATION_LOG",
            out.join("..termination-log"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Group::spawn(command)
}

/// `GET /metrics` on loopback `port`; `None` until it answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    Some(body.to_owned())
}

/// The value of the sample `name{labels}` (labels as written, sorted as the agent writes them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Wait until `check` holds on a scrape, or fail with the last scrape after `limit`.
fn eventually(port: u16, limit: Duration, what: &str, check: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(port).unwrap_or_default();
        if check(&text) {
            return text;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No value, no ARN, no account id and no AWS-side name anywhere in the output.
fn assert_nothing_secret(text: &str, arn: &str) {
    for forbidden in [VALUE, ROTATED, arn, "123456789012", SECRET_NAME, "arn:aws"] {
        assert!(
            !text.contains(forbidden),
            "{forbidden:?} in the metrics:\n{text}"
        );
    }
}

const CALLS: &str = "secret_inject_agent_aws_calls_total";
const CHECK: &str = "secret_inject_agent_last_check_timestamp_seconds{secret=\"db\"}";
const CHANGE: &str = "secret_inject_agent_last_change_timestamp_seconds{secret=\"db\"}";

#[test]
fn agent_metrics_move_on_throttling_and_on_a_rotation_and_name_no_secret() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", SECRET_NAME, VALUE);
    // The first call (GetSecretValue) passes; the first rotation check (DescribeSecret) is
    // throttled twice, then passes on a retry.
    let proxy = FaultProxy::start(
        moto.port,
        vec![Fault::Pass, Fault::Throttle, Fault::Throttle],
    );
    let out = ram_dir();
    let port = free_port();
    let _agent = sidecar(
        &proxy.endpoint(),
        out.path(),
        &arn,
        port,
        ("AKIATESTTESTTESTTEST", "test-secret-key"),
    );
    let limit = Duration::from_secs(30);
    let first = eventually(port, limit, "the first write", |t| {
        sample(t, CHANGE).is_some()
    });
    assert_eq!(
        std::fs::read_to_string(out.path().join("db")).unwrap(),
        VALUE
    );
    assert_eq!(
        sample(
            &first,
            &format!("{CALLS}{{operation=\"GetSecretValue\",outcome=\"success\"}}")
        ),
        Some(1.0),
        "{first}"
    );
    assert_eq!(
        sample(&first, "secret_inject_agent_refresh_interval_seconds"),
        Some(1.0)
    );
    let first_change = sample(&first, CHANGE).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - first_change).abs() < 60.0, "a unix time: {first}");

    // Throttling: counted by operation and outcome; the check then succeeds.
    let throttled = format!("{CALLS}{{operation=\"DescribeSecret\",outcome=\"throttled\"}}");
    let described = format!("{CALLS}{{operation=\"DescribeSecret\",outcome=\"success\"}}");
    let text = eventually(port, limit, "throttled checks counted", |t| {
        sample(t, &throttled) == Some(2.0) && sample(t, &described).is_some_and(|n| n >= 1.0)
    });
    assert!(
        sample(&text, CHECK).unwrap() >= sample(&first, CHECK).unwrap(),
        "{text}"
    );
    // Transient errors retried within a round are no failure of the round.
    assert_eq!(
        sample(
            &text,
            "secret_inject_agent_failures_total{kind=\"unavailable\"}"
        ),
        Some(0.0),
        "{text}"
    );

    // A rotation: the change time moves, the new value is fetched with one more call.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = moto.json(
        "us-east-1",
        "secretsmanager.PutSecretValue",
        &json!({"SecretId": arn, "SecretString": ROTATED,
                "ClientRequestToken": "00000000-0000-4000-8000-000000000002"}),
    );
    assert_eq!(status, 200, "{body}");
    let text = eventually(port, limit, "the rotation counted", |t| {
        sample(t, CHANGE).is_some_and(|c| c > first_change)
    });
    assert_eq!(
        std::fs::read_to_string(out.path().join("db")).unwrap(),
        ROTATED
    );
    assert_eq!(
        sample(
            &text,
            &format!("{CALLS}{{operation=\"GetSecretValue\",outcome=\"success\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert!(sample(&text, CHECK).unwrap() >= sample(&text, CHANGE).unwrap() - 1.0);
    assert_nothing_secret(&text, &arn);
}

#[test]
fn agent_metrics_count_a_denied_check_as_a_failure_by_kind() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", SECRET_NAME, VALUE);
    // The pod's identity may read the value but not describe the secret: every rotation check
    // is denied (moto's IAM enforcement), the files stay.
    let keys = moto.iam_user(
        "reader",
        &json!([{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]),
    );
    moto.reset_auth(0);
    let out = ram_dir();
    let port = free_port();
    let _agent = sidecar(&moto.endpoint(), out.path(), &arn, port, (&keys.0, &keys.1));
    let denied = format!("{CALLS}{{operation=\"DescribeSecret\",outcome=\"denied\"}}");
    let failures = "secret_inject_agent_failures_total{kind=\"access_denied\"}";
    let text = eventually(port, Duration::from_secs(30), "denials counted", |t| {
        sample(t, &denied).is_some_and(|n| n >= 2.0)
            && sample(t, failures).is_some_and(|n| n >= 2.0)
    });
    assert_eq!(
        std::fs::read_to_string(out.path().join("db")).unwrap(),
        VALUE,
        "the last good files stay"
    );
    // The secret was checked once (its first fetch), never since.
    assert!(sample(&text, CHECK).is_some(), "{text}");
    assert_nothing_secret(&text, &arn);
}

/// The chart's PrometheusRule, rendered by `helm template`.
fn rendered_rules() -> Value {
    let chart = common::repo_root().join("charts/secret-inject");
    let yaml = common::run_tool(
        "helm",
        &[
            "template",
            RELEASE,
            &chart.to_string_lossy(),
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        None,
    );
    Value::deserialize(yaml_serde::Deserializer::from_slice(&yaml)).unwrap()
}

/// promtool, built by scripts/build-monitoring.
fn promtool() -> PathBuf {
    let path = common::repo_root().join(".tools/monitoring/current/bin/promtool");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-monitoring (scripts/test does) to build promtool from \
         tests/monitoring/go.mod",
        path.display()
    );
    path
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alerts' names and expressions, and every expression of the rules.
fn alerts(rules: &Value) -> Vec<(String, String)> {
    rules["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn promtool_checks_the_charts_alerts_and_each_fires_and_stays_quiet_in_its_unit_test() {
    let rules = rendered_rules();
    assert_eq!(rules["kind"], "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    let groups = json!({"groups": rules["spec"]["groups"]});
    std::fs::write(
        dir.path().join("rules.yaml"),
        yaml_serde::to_string(&groups).unwrap(),
    )
    .unwrap();
    let tests =
        std::fs::read_to_string(common::repo_root().join("tests/monitoring/alerts.test.yaml"))
            .unwrap();
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests).unwrap();
    let checked = run_promtool(&["check", "rules", "rules.yaml"], dir.path());
    let names = alerts(&rules);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{checked}"
    );
    run_promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    // Every alert has a case where it fires and one where it stays quiet.
    let tests = Value::deserialize(yaml_serde::Deserializer::from_str(&tests)).unwrap();
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .collect();
    for (alert, _) in &names {
        let of = |firing: bool| {
            cases.iter().any(|c| {
                c["alertname"] == alert.as_str()
                    && c["exp_alerts"].as_array().unwrap().is_empty() != firing
            })
        };
        assert!(of(true), "{alert}: no case where it fires");
        assert!(of(false), "{alert}: no case where it stays quiet");
    }
    for expected in [
        "SecretInjectWebhookDown",
        "SecretInjectWebhookErrors",
        "SecretInjectDenialSpike",
        "SecretInjectCertificateExpiring",
        "SecretInjectRotationFailing",
        "SecretInjectRotationStale",
        "SecretInjectAwsThrottling",
    ] {
        assert!(names.iter().any(|(n, _)| n == expected), "{expected}");
    }
}

/// The metric names of the exposition text (sample lines).
fn served_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The `secret_inject_...` names a PromQL expression uses.
fn named_metrics(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("secret_inject_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_an_alert_or_the_dashboard_names_is_served_by_the_webhook_or_the_agent() {
    // The webhook's /metrics, after one review (so its per-outcome series exist).
    let webhook = Webhook::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stream = common::webhook::connect(
            webhook.webhook,
            &webhook.ca_path(),
            SERVICE_DNS,
            &[b"http/1.1"],
        )
        .await
        .unwrap();
        let mut client = common::webhook::Client::new(stream).await;
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}});
        let review = common::admission_review(&pod, "u1");
        let (status, _) = client
            .post("/mutating-pods", serde_json::to_vec(&review).unwrap())
            .await
            .unwrap();
        assert_eq!(status, 200);
    });
    let webhook_text = common::webhook::metrics(webhook.admin);
    let mut served = served_names(&webhook_text);
    // The agent's, as a sidecar after its first write.
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", SECRET_NAME, VALUE);
    let out = ram_dir();
    let port = free_port();
    let _agent = sidecar(
        &moto.endpoint(),
        out.path(),
        &arn,
        port,
        ("AKIATESTTESTTESTTEST", "test-secret-key"),
    );
    let agent_text = eventually(port, Duration::from_secs(30), "a check", |t| {
        sample(t, CHECK).is_some()
    });
    served.extend(served_names(&agent_text));

    let mut used: Vec<(String, String)> = Vec::new();
    for (alert, expr) in alerts(&rendered_rules()) {
        used.extend(named_metrics(&expr).into_iter().map(|n| (alert.clone(), n)));
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::repo_root().join("charts/secret-inject/dashboards/secret-inject.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in exprs {
        used.extend(
            named_metrics(&expr)
                .into_iter()
                .map(|n| ("dashboard".to_owned(), n)),
        );
    }
    let missing: Vec<&(String, String)> =
        used.iter().filter(|(_, n)| !served.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "named but not served: {missing:?}\nserved: {served:?}"
    );
    // Both servers' metrics are used.
    assert!(
        used.iter()
            .any(|(_, n)| n.starts_with("secret_inject_agent_"))
    );
    assert!(
        used.iter()
            .any(|(_, n)| n == "secret_inject_admission_reviews_total")
    );
}

#[test]
fn a_metrics_port_the_sidecar_cannot_bind_fails_it_at_start_naming_the_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = ram_dir();
    let run = common::agent::agent(
        &[
            (
                "SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
            ),
            ("SECRET_INJECT_OUTPUT_DIR", &out.path().to_string_lossy()),
            ("SECRET_INJECT_REFRESH_INTERVAL", "1s"),
            ("SECRET_INJECT_METRICS_PORT", &port),
        ],
        &[],
    );
    assert_eq!(run.code, Some(2), "{}", run.output);
    assert!(
        run.termination.contains(&format!("127.0.0.1:{port}"))
            && run.termination.contains("secrets.k8s.aws/metrics-port"),
        "{}",
        run.termination
    );
    // Nothing was fetched or written.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    // A metrics port without rotation is refused by the agent's own parser: an init-only agent
    // serves nothing.
    let run = common::agent::agent(
        &[
            (
                "SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
            ),
            ("SECRET_INJECT_OUTPUT_DIR", &out.path().to_string_lossy()),
            ("SECRET_INJECT_METRICS_PORT", "9102"),
        ],
        &[],
    );
    assert_eq!(run.code, Some(2), "{}", run.output);
    assert!(
        run.termination.contains("SECRET_INJECT_REFRESH_INTERVAL"),
        "{}",
        run.termination
    );
}

#[test]
fn a_secret_pinned_to_a_version_id_counts_as_checked_every_round() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", SECRET_NAME, VALUE);
    let (status, body) = moto.json(
        "us-east-1",
        "secretsmanager.DescribeSecret",
        &json!({"SecretId": arn}),
    );
    assert_eq!(status, 200, "{body}");
    let version = body["VersionIdsToStages"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let out = ram_dir();
    let port = free_port();
    let secrets = json!([{"name": "pinned", "arn": arn, "file": "pinned", "versionId": version}]);
    let _agent = sidecar_with(
        &moto.endpoint(),
        out.path(),
        &secrets,
        port,
        ("AKIATESTTESTTESTTEST", "test-secret-key"),
    );
    let series = "secret_inject_agent_last_check_timestamp_seconds{secret=\"pinned\"}";
    let limit = Duration::from_secs(30);
    let first = eventually(port, limit, "the first check", |t| {
        sample(t, series).is_some()
    });
    let at = sample(&first, series).unwrap();
    // Never asked about (its version cannot change), yet not stale: checked at each round.
    let text = eventually(port, limit, "a later round", |t| {
        sample(t, series).is_some_and(|later| later >= at + 1.0)
    });
    assert_eq!(
        sample(
            &text,
            &format!("{CALLS}{{operation=\"DescribeSecret\",outcome=\"success\"}}")
        ),
        None,
        "{text}"
    );
}
