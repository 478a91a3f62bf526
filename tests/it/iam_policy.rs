//! `secret-inject iam-policy -f FILE|-`, run as a user runs it, and its policies checked by
//! third parties: the IAM policy linter parliament (PyPI), and moto's IAM enforcement with the
//! real AWS SDK and the real agent.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common::secret_inject;
use crate::common::{self, moto::Moto};

mod agrees;

const EXAMPLE: &str = "examples/many-secrets.yaml";
const GET: &str = "secretsmanager:GetSecretValue";
const BATCH: &str = "secretsmanager:BatchGetSecretValue";
const PARAMETERS: &str = "ssm:GetParameters";
/// What the agent logs when its BatchGetSecretValue call is denied and it reads one by one.
const FALLBACK_LOG: &str = "BatchGetSecretValue failed; fetching each secret with GetSecretValue";

/// The policies `iam-policy` prints for `input` (a path or `-`), with its stderr.
fn iam_policy(file: &str, stdin: Option<&[u8]>) -> (Value, String) {
    let output = secret_inject(&["iam-policy", "-f", file], stdin);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "iam-policy -f {file}: {stderr}");
    let policies = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (policies, stderr)
}

fn example_path() -> String {
    common::repo_root()
        .join(EXAMPLE)
        .to_string_lossy()
        .into_owned()
}

fn statement(sid: &str, action: &str, resource: Value) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource})
}

#[test]
fn the_example_gets_one_least_privilege_policy_per_service_account() {
    let (policies, stderr) = iam_policy(&example_path(), None);
    let sm = |region: &str, name: &str| {
        format!("arn:aws:secretsmanager:{region}:123456789012:secret:{name}")
    };
    let ssm =
        |region: &str, name: &str| format!("arn:aws:ssm:{region}:123456789012:parameter/{name}");
    let version = "2012-10-17";
    assert_eq!(
        policies,
        json!({
            // Pod debug: no serviceAccountName, no namespace; one secret under two names.
            "default/default": {"Version": version, "Statement": [
                statement("ReadSecrets", GET, json!([sm("us-east-1", "debug/token-Zz9Yy8")])),
            ]},
            // StatefulSet worker inside a List: one secret at AWSPREVIOUS and one at AWSCURRENT
            // is no batch; Job migrate opts out, so jobs/admin is not allowed.
            "jobs/worker": {"Version": version, "Statement": [
                statement("ReadSecrets", GET, json!([
                    sm("us-east-1", "jobs/api-token-Ab12Cd"),
                    sm("us-east-1", "jobs/queue-password-Rt5Yu8"),
                ])),
                statement("ReadParameters", PARAMETERS, json!([
                    ssm("eu-west-1", "jobs/worker/concurrency"),
                ])),
            ]},
            // Deployment api and CronJob report: the shared secret once, the partial ARN
            // widened, the replicas of api's secrets in its failover region, a batch (api reads
            // two secrets at AWSCURRENT in us-east-1), both parameters.
            "shop/api": {"Version": version, "Statement": [
                statement("ReadSecrets", GET, json!([
                    sm("eu-west-1", "shop/smtp-Lm4Np2"),
                    sm("us-east-1", "shop/db-credentials-Xq3Zt1"),
                    sm("us-east-1", "shop/session-key-??????"),
                ])),
                statement("ReadSecretReplicasInFailoverRegions", GET, json!([
                    sm("us-west-2", "shop/db-credentials-Xq3Zt1"),
                    sm("us-west-2", "shop/session-key-??????"),
                ])),
                statement("BatchReadSecretsEachAlsoNeedsGetSecretValue", BATCH, json!("*")),
                statement("ReadParameters", PARAMETERS, json!([
                    ssm("us-east-1", "shop/api/url"),
                    ssm("us-east-1", "shop/report/schedule"),
                ])),
            ]},
        })
    );
    // The notes go to stderr, one line each, never into the JSON; so does the one warning:
    // pod debug runs as its namespace's default ServiceAccount.
    let (warnings, notes): (Vec<&str>, Vec<&str>) = stderr
        .lines()
        .partition(|line| line.starts_with("warning: "));
    assert!(notes.iter().all(|n| n.starts_with("info: ")), "{stderr}");
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("the policy of default/default is for the default ServiceAccount")
            && warnings[0].contains("document 5 (Pod/debug)"),
        "{stderr}"
    );
    let note = |needle: &str| {
        notes
            .iter()
            .find(|n| n.contains(needle))
            .unwrap_or_else(|| panic!("no note about {needle}:\n{stderr}"))
    };
    let partial = note("partial ARN");
    assert!(
        partial.contains("secret:shop/session-key, in document 2 (Deployment/api)")
            && partial.contains("shop/session-key-??????"),
        "{partial}"
    );
    let kms = note("kms:Decrypt");
    for service in [
        "secretsmanager.us-east-1.amazonaws.com",
        "secretsmanager.us-west-2.amazonaws.com",
        "secretsmanager.eu-west-1.amazonaws.com",
        "ssm.us-east-1.amazonaws.com",
        "ssm.eu-west-1.amazonaws.com",
    ] {
        assert!(kms.contains(service), "{service}: {kms}");
    }
    note("no resource-level permissions");
    // Standard input gives the same bytes.
    let example = std::fs::read(example_path()).unwrap();
    let from_file = secret_inject(&["iam-policy", "-f", &example_path()], None);
    let from_stdin = secret_inject(&["iam-policy", "-f", "-"], Some(&example));
    assert!(from_stdin.status.success());
    assert_eq!(from_stdin.stdout, from_file.stdout);
    // `inject` walks the same templates: the four that opt in get the agent.
    let injected = secret_inject(&["inject", "-f", &example_path()], None);
    assert!(
        injected.status.success(),
        "{}",
        String::from_utf8_lossy(&injected.stderr)
    );
    let agents = String::from_utf8_lossy(&injected.stdout)
        .matches("name: secrets-init-container")
        .count();
    assert_eq!(agents, 4);
}

#[test]
fn bad_input_fails_with_the_document_and_object_and_prints_nothing() {
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  template:
    metadata:
      annotations:
        secrets.k8s.aws/secret-arn.db: arn:aws:s3:::bucket
    spec:
      containers: [{name: api, image: api}]
"#;
    for (input, file, expected) in [
        (
            manifest,
            "-",
            "error: standard input: document 2 (Deployment/api): annotation \
             secrets.k8s.aws/secret-arn.db: \"arn:aws:s3:::bucket\" is an ARN of service \"s3\"",
        ),
        (
            "kind: [",
            "-",
            "error: standard input: document 1: not valid YAML or JSON: ",
        ),
        (
            "",
            "/nonexistent/app.yaml",
            "error: cannot read /nonexistent/app.yaml: ",
        ),
    ] {
        let output = secret_inject(&["iam-policy", "-f", file], Some(input.as_bytes()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing on stdout after an error");
        assert!(stderr.starts_with(expected), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // Nothing that asks for secrets: an empty object, and a note that says so.
    let (policies, stderr) = iam_policy(
        "-",
        Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
    );
    assert_eq!(policies, json!({}));
    assert!(stderr.contains("nothing to allow"), "{stderr}");
}

/// A Deployment in namespace `ns` running as `account` (none: the default ServiceAccount) that
/// reads `secrets` secrets named `<name><i>`.
fn deployment_reading(account: Option<&str>, secrets: usize, name: &str) -> String {
    let annotations: serde_json::Map<String, Value> = (0..secrets)
        .map(|i| {
            (
                format!("secrets.k8s.aws/secret-arn.s{i}"),
                json!(format!(
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}{i}-AbCd12"
                )),
            )
        })
        .collect();
    let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
    if let Some(account) = account {
        spec["serviceAccountName"] = json!(account);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "ns"},
        "spec": {"template": {"metadata": {"annotations": annotations}, "spec": spec}}
    })
    .to_string()
}

/// A policy IAM would refuse for its size fails, naming the ServiceAccount, the size, the limit
/// and the fix, and prints nothing to pipe into IAM; `--policy-type` says which limit applies.
#[test]
fn a_policy_larger_than_iam_accepts_fails_with_the_limit_the_size_and_a_fix() {
    // 100 secrets with short names: over the managed limit, within the inline one.
    let manifest = deployment_reading(Some("app"), 100, "app/s");
    let output = secret_inject(&["iam-policy", "-f", "-"], Some(manifest.as_bytes()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "a policy IAM refuses was printed");
    for expected in [
        "error: standard input: the policy of ns/app has ",
        "characters (whitespace not counted; 100 secrets and 0 parameters), more than the 6144 \
         IAM accepts for a customer managed policy",
        "fewer secrets",
        "PREFIX/*",
        "--policy-type inline allows 10240",
    ] {
        assert!(stderr.contains(expected), "{expected:?}: {stderr}");
    }
    assert!(!stderr.contains("info: "), "{stderr}");
    let (policies, _) = iam_policy_with(&["--policy-type", "inline"], manifest.as_bytes());
    let size: usize = serde_json::to_string(&policies["ns/app"])
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .count();
    assert!((6145..=10240).contains(&size), "{size}");
    assert!(
        stderr.contains(&format!("has {size} characters")),
        "{stderr}"
    );
    // Long names: over both limits.
    let manifest = deployment_reading(Some("app"), 100, &"long-name/".repeat(10));
    let output = secret_inject(
        &["iam-policy", "--policy-type", "inline", "-f", "-"],
        Some(manifest.as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("more than the 10240 IAM accepts for the inline policies of one role"),
        "{stderr}"
    );
}

/// `iam-policy` with `args` before `-f -`, reading `input`: the policies and stderr.
fn iam_policy_with(args: &[&str], input: &[u8]) -> (Value, String) {
    let mut all = vec!["iam-policy"];
    all.extend_from_slice(args);
    all.extend(["-f", "-"]);
    let output = secret_inject(&all, Some(input));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{all:?}: {stderr}");
    (serde_json::from_slice(&output.stdout).unwrap(), stderr)
}

/// A policy for a namespace's default ServiceAccount, which every pod there that names none
/// runs as, is printed with a warning that says so and how to fix it; a dedicated one is not.
#[test]
fn a_policy_for_the_default_service_account_is_printed_with_a_warning() {
    for account in [None, Some("default")] {
        let manifest = deployment_reading(account, 1, "app/db");
        let (policies, stderr) = iam_policy_with(&[], manifest.as_bytes());
        assert!(policies.get("ns/default").is_some(), "{policies}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .collect();
        assert_eq!(warnings.len(), 1, "{account:?}: {stderr}");
        for expected in [
            "warning: standard input: the policy of ns/default is for the default \
             ServiceAccount of namespace ns, which every pod there that names no \
             serviceAccountName runs as",
            "document 1 (Deployment/app)",
            "a ServiceAccount of its own",
        ] {
            assert!(warnings[0].contains(expected), "{expected:?}: {stderr}");
        }
    }
    let manifest = deployment_reading(Some("app"), 1, "app/db");
    let (_, stderr) = iam_policy_with(&[], manifest.as_bytes());
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// The README's `iam-policy` example runs as written, and the role it gives the policy to is the
/// one the example's ServiceAccount for that key names in its IRSA annotation.
#[test]
fn the_readmes_example_is_self_consistent() {
    use serde::Deserialize as _;
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .find(|block| block.contains("secret-inject iam-policy") && block.contains("--role-name"))
        .expect("the README has an iam-policy example with --role-name");
    let block = &block[..block.find("```").unwrap()];
    let command: Vec<&str> = block
        .lines()
        .find(|l| l.starts_with("secret-inject iam-policy"))
        .unwrap()
        .split(" > ")
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let between = |text: &'static str, start: &str, end: &str| -> String {
        let from = block
            .find(start)
            .unwrap_or_else(|| panic!("{start}: {text}"))
            + start.len();
        block[from..from + block[from..].find(end).unwrap()].to_owned()
    };
    let key = between("jq key", "jq '.\"", "\"'");
    let role = between("role name", "--role-name ", " ");
    // Run from the repository, as the README's paths are.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(&command)
        .current_dir(common::repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let policies: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(policies.get(&key).is_some(), "{key} not in {policies}");
    // The ServiceAccount `key` names, in the file the command reads.
    let file = command[command.iter().position(|a| *a == "-f").unwrap() + 1];
    let text = std::fs::read_to_string(common::repo_root().join(file)).unwrap();
    let (namespace, name) = key.split_once('/').unwrap();
    let annotation = yaml_serde::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .find(|object| {
            object["kind"] == "ServiceAccount"
                && object["metadata"]["name"] == name
                && object["metadata"]["namespace"] == namespace
        })
        .unwrap_or_else(|| panic!("{file} has no ServiceAccount {key}"))["metadata"]["annotations"]
        ["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        annotation.ends_with(&format!(":role/{role}")),
        "the README gives the policy of {key} to role {role}, but its ServiceAccount's role is \
         {annotation}"
    );
}

/// parliament's findings on one policy document (every auditor, down to INFO), each as its
/// JSON object. It reads the policy from stdin: its `--file` refuses to run when stdin is not
/// a terminal, as under a test runner.
fn parliament(policy: &Value) -> Vec<Value> {
    let output = common::run_tool_raw(
        "parliament",
        &[
            "--json",
            "--minimum_severity",
            "INFO",
            "--include-community-auditors",
        ],
        Some(policy.to_string().as_bytes()),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let findings: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("parliament said {line:?}: {e}"))
        })
        .collect();
    // 0: no findings; 1: findings; anything else: parliament itself failed.
    let expected = if findings.is_empty() { 0 } else { 1 };
    assert_eq!(
        output.status.code(),
        Some(expected),
        "parliament: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    findings
}

/// `(issue, detail)` of each finding.
fn issues(findings: &[Value]) -> Vec<(String, Value)> {
    findings
        .iter()
        .map(|f| (f["issue"].as_str().unwrap().to_owned(), f["detail"].clone()))
        .collect()
}

#[test]
fn parliament_finds_nothing_in_any_printed_policy() {
    let (policies, _) = iam_policy(&example_path(), None);
    let policies = policies.as_object().unwrap();
    assert_eq!(policies.len(), 3);
    for (account, policy) in policies {
        // No findings at all: parliament's own IAM definitions say that BatchGetSecretValue
        // has no resource type, so "*" is the one Resource it accepts for it (no RESOURCE_STAR),
        // and that the partial-ARN pattern `-??????` and the parameter ARNs match the
        // resource formats of GetSecretValue and GetParameters (no RESOURCE_MISMATCH).
        assert_eq!(issues(&parliament(policy)), [], "{account}: {policy:#}");
    }
    // The linter does look at these statements: the same policy with BatchGetSecretValue
    // scoped to the secrets, or GetSecretValue and GetParameters on "*", is flagged.
    let mut scoped = policies["shop/api"].clone();
    let secrets = scoped["Statement"][0]["Resource"].clone();
    scoped["Statement"][2]["Resource"] = secrets;
    assert_eq!(
        issues(&parliament(&scoped)),
        [(
            "RESOURCE_MISMATCH".to_owned(),
            json!([{"action": BATCH, "required_format": "*"}])
        )]
    );
    let mut star = policies["jobs/worker"].clone();
    for statement in star["Statement"].as_array_mut().unwrap() {
        statement["Resource"] = json!("*");
    }
    assert_eq!(
        issues(&parliament(&star)),
        [
            ("RESOURCE_STAR".to_owned(), json!([GET])),
            ("RESOURCE_STAR".to_owned(), json!([PARAMETERS])),
        ]
    );
}

// --- moto's IAM enforcement ---------------------------------------------------------------
//
// moto 5.2.5 evaluates a policy's actions, but authorizes Secrets Manager and SSM calls against
// the resource "*": a statement on specific ARNs matches nothing there and denies everything.
// So the policies below keep exactly the generated statements and actions, with every
// Resource rewritten to "*". That checks the action set (each one needed, none missing); the
// resources are checked by parliament above and by the exact JSON of the first test.

/// The actions of a policy's statements.
fn actions(policy: &Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Action"].as_str().unwrap().to_owned())
        .collect()
}

/// `policy` without the statements of `action`, every Resource "*" (see above).
fn for_moto(policy: &Value, without: Option<&str>) -> Value {
    let mut policy = policy.clone();
    let statements = policy["Statement"].as_array_mut().unwrap();
    statements.retain(|s| Some(s["Action"].as_str().unwrap()) != without);
    for statement in statements.iter_mut() {
        statement["Resource"] = json!("*");
    }
    policy
}

fn create_secret(moto: &Moto, name: &str, value: &str, replica: Option<&str>) -> String {
    let mut body = json!({"Name": name, "SecretString": value});
    if let Some(region) = replica {
        body["AddReplicaRegions"] = json!([{"Region": region}]);
    }
    let (status, body) = moto.json("us-east-1", "secretsmanager.CreateSecret", &body);
    assert_eq!(status, 200, "{body}");
    body["ARN"].as_str().unwrap().to_owned()
}

fn put_parameter(moto: &Moto, name: &str, value: &str) -> String {
    let (status, body) = moto.json(
        "us-east-1",
        "AmazonSSM.PutParameter",
        &json!({"Name": name, "Type": "SecureString", "Value": value}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = moto.json(
        "us-east-1",
        "AmazonSSM.GetParameter",
        &json!({"Name": name}),
    );
    assert_eq!(status, 200, "{body}");
    body["Parameter"]["ARN"].as_str().unwrap().to_owned()
}

/// The SDK configuration of an IAM user of moto (static keys, no retries).
async fn sdk_config(moto: &Moto, (key_id, secret_key): &(String, String)) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client)
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_credential_types::Credentials::new(
            key_id,
            secret_key,
            None,
            None,
            "moto-iam-user",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// The HTTP status of a call: 200, or the error's.
fn status<T, E: std::fmt::Debug>(
    result: Result<
        T,
        aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
    >,
) -> u16 {
    match result {
        Ok(_) => 200,
        Err(error) => error
            .raw_response()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|| panic!("no HTTP answer: {error:?}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_allows_each_generated_action_and_denies_it_without_its_statement() {
    let (policies, _) = iam_policy(&example_path(), None);
    let policy = &policies["shop/api"];
    assert_eq!(
        actions(policy),
        BTreeSet::from([GET.to_owned(), BATCH.to_owned(), PARAMETERS.to_owned()])
    );
    let moto = Moto::start();
    // The example's secrets and parameter, in moto (whose ARNs get their own suffixes).
    let db = create_secret(&moto, "shop/db-credentials", "db-value", Some("us-west-2"));
    let session = create_secret(&moto, "shop/session-key", "session-value", None);
    let replica = db.replace(":us-east-1:", ":us-west-2:");
    let url = put_parameter(&moto, "/shop/api/url", "https://shop.example.com");
    let variants = [None, Some(GET), Some(BATCH), Some(PARAMETERS)];
    let mut users = Vec::new();
    for (i, without) in variants.iter().enumerate() {
        let policy = for_moto(policy, *without);
        users.push((
            *without,
            actions(&policy),
            moto.iam_user(&format!("u{i}"), &policy["Statement"]),
        ));
    }
    moto.reset_auth(0);
    for (without, allowed, keys) in &users {
        let config = sdk_config(&moto, keys).await;
        let clients = secret_inject::aws::Clients::new(config);
        let east = clients.secrets_manager("us-east-1");
        let west = clients.secrets_manager("us-west-2");
        let ssm = clients.ssm("us-east-1");
        let batch = east
            .batch_get_secret_value()
            .secret_id_list(&db)
            .secret_id_list(&session)
            .send()
            .await;
        if let Ok(answer) = &batch {
            assert_eq!(answer.secret_values().len(), 2, "{answer:?}");
        }
        let calls = [
            (
                GET,
                status(
                    east.get_secret_value()
                        .secret_id(&db)
                        .version_stage("AWSCURRENT")
                        .send()
                        .await,
                ),
            ),
            (
                GET,
                status(west.get_secret_value().secret_id(&replica).send().await),
            ),
            (BATCH, status(batch)),
            (
                PARAMETERS,
                status(
                    ssm.get_parameters()
                        .names(&url)
                        .with_decryption(true)
                        .send()
                        .await,
                ),
            ),
        ];
        for (action, got) in calls {
            // Allowed exactly when the policy has the action. (Without GetSecretValue, moto
            // still answers BatchGetSecretValue with the values; real AWS answers it with 200
            // too, but with an AccessDenied error per secret, as it checks GetSecretValue on
            // each.)
            let expected = if allowed.contains(action) { 200 } else { 403 };
            assert_eq!(
                got, expected,
                "{action} with the policy without {without:?}"
            );
        }
    }
}

/// A tmpfs directory, as the emptyDir with `medium: Memory` is.
fn ram_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("secret-inject-iam-")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm must exist (a tmpfs) for the agent tests");
    secret_inject::agent::write::check_in_memory(dir.path(), false)
        .expect("/dev/shm must be a tmpfs for the agent tests");
    dir
}

/// Run the real agent with the injected container's env, the user's keys, and `out` as the
/// volume: `(exit code, log, termination message)`.
fn agent(
    env: &[(String, String)],
    keys: &(String, String),
    moto: &Moto,
    out: &Path,
) -> (Option<i32>, String, String) {
    let scratch = tempfile::tempdir().unwrap();
    let termination = scratch.path().join("termination-log");
    let output = Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(["--log-format", "plain", "agent"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SECRET_INJECT_OUTPUT_DIR", out)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", scratch.path())
        .env("SECRET_INJECT_TERMINATION_LOG", &termination)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", &keys.0)
        .env("AWS_SECRET_ACCESS_KEY", &keys.1)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        std::fs::read_to_string(&termination).unwrap_or_default(),
    )
}

#[test]
fn the_agent_runs_on_exactly_the_generated_actions() {
    let moto = Moto::start();
    let db = create_secret(&moto, "shop/db-credentials", "db-value", None);
    let session = create_secret(&moto, "shop/session-key", "session-value", None);
    let url = put_parameter(&moto, "/shop/api/url", "https://shop.example.com");
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api"}, "annotations": {
                "secrets.k8s.aws/secret-arn.db": db,
                "secrets.k8s.aws/secret-arn.session": session,
                "secrets.k8s.aws/secret-arn.url": url,
            }},
            "spec": {"serviceAccountName": "api",
                     "containers": [{"name": "api", "image": "registry.example.com/api:1"}]}
        }}
    })
    .to_string();
    let (policies, _) = iam_policy("-", Some(manifest.as_bytes()));
    let policy = &policies["shop/api"];
    assert_eq!(
        actions(policy),
        BTreeSet::from([GET.to_owned(), BATCH.to_owned(), PARAMETERS.to_owned()])
    );
    // The injected container's env: the plan the agent runs.
    let injected = secret_inject(&["inject", "-f", "-"], Some(manifest.as_bytes()));
    assert!(injected.status.success());
    let document =
        Value::deserialize(yaml_serde::Deserializer::from_slice(&injected.stdout)).unwrap();
    let env: Vec<(String, String)> =
        document["spec"]["template"]["spec"]["initContainers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let value = e["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{e}: not a value"));
                (e["name"].as_str().unwrap().to_owned(), value.to_owned())
            })
            .collect();
    let everything = moto.iam_user("everything", &for_moto(policy, None)["Statement"]);
    let no_batch = moto.iam_user("no-batch", &for_moto(policy, Some(BATCH))["Statement"]);
    moto.reset_auth(0);
    let read = |out: &Path, name: &str| std::fs::read_to_string(out.join(name)).unwrap();

    // The generated actions are enough: every file written, and the batch call was not
    // denied (no fallback). (A policy without GetSecretValue is not tried here: moto lets
    // BatchGetSecretValue through without it, where AWS checks GetSecretValue on each secret;
    // the SDK test above shows that GetSecretValue itself is denied without it. Nor one
    // without GetParameters: moto's denial of it is an HTTP 403 XML body that the agent, which
    // expects AWS's JSON, takes for a transient error and retries until its deadline.)
    let out = ram_dir();
    let (code, log, termination) = agent(&env, &everything, &moto, out.path());
    assert_eq!(code, Some(0), "{log}\n{termination}");
    assert_eq!(read(out.path(), "db"), "db-value");
    assert_eq!(read(out.path(), "session"), "session-value");
    assert_eq!(read(out.path(), "url"), "https://shop.example.com");
    assert!(!log.contains(FALLBACK_LOG), "{log}");

    // The agent does call BatchGetSecretValue: without that statement it is denied, logged,
    // and the agent falls back to GetSecretValue.
    let out = ram_dir();
    let (code, log, termination) = agent(&env, &no_batch, &moto, out.path());
    assert_eq!(code, Some(0), "{log}\n{termination}");
    assert_eq!(log.matches(FALLBACK_LOG).count(), 1, "{log}");
    assert!(log.contains("AccessDenied"), "{log}");
    assert_eq!(read(out.path(), "session"), "session-value");
}

// --- the secret writer's policy -------------------------------------------------------------

const WRITER_ACTIONS: [&str; 6] = [
    "secretsmanager:CreateSecret",
    "secretsmanager:TagResource",
    "secretsmanager:DescribeSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:DeleteSecret",
];

/// `iam-policy --secret-writer` for prefix and cluster `prod-eu`.
fn writer_policy() -> Value {
    let output = secret_inject(
        &[
            "iam-policy",
            "--secret-writer",
            "--secret-writer-prefix",
            "prod-eu",
            "--cluster-name",
            "prod-eu",
            "--region",
            "eu-west-1",
            "--account",
            "123456789012",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("kms:GenerateDataKey"), "{stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_secret_writers_policy_is_scoped_to_the_prefix_and_the_owner_tags_and_lints_clean() {
    let policy = writer_policy();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(
        statements
            .iter()
            .map(|s| s["Action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        WRITER_ACTIONS
    );
    for statement in statements {
        assert_eq!(
            statement["Resource"],
            json!(["arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-eu/*"])
        );
        let condition = &statement["Condition"];
        match statement["Action"].as_str().unwrap() {
            // Creating and tagging: only with this cluster's owner tags, and no other tag key.
            "secretsmanager:CreateSecret" | "secretsmanager:TagResource" => {
                assert_eq!(
                    condition["StringEquals"],
                    json!({"aws:RequestTag/app.kubernetes.io/managed-by": "secret-inject",
                           "aws:RequestTag/kubernetes.io/cluster": "prod-eu"})
                );
                assert_eq!(
                    condition["ForAllValues:StringEquals"]["aws:TagKeys"],
                    json!([
                        "kubernetes.io/cluster",
                        "kubernetes.io/namespace",
                        "kubernetes.io/name",
                        "app.kubernetes.io/managed-by"
                    ])
                );
            }
            // Reading metadata: the writer checks all four tags itself, also for a secret that
            // does not exist yet (a tag condition would turn "not found" into a denial).
            "secretsmanager:DescribeSecret" => assert!(condition.is_null(), "{statement}"),
            // Every write: only to a secret this cluster's writer created.
            _ => assert_eq!(
                condition["StringEquals"],
                json!({"aws:ResourceTag/app.kubernetes.io/managed-by": "secret-inject",
                       "aws:ResourceTag/kubernetes.io/cluster": "prod-eu"}),
                "{statement}"
            ),
        }
    }
    assert_eq!(issues(&parliament(&policy)), [], "{policy:#}");
}

/// Each call the writer and its promotion loop make, under moto's IAM enforcement: allowed with
/// the printed statements, denied without the statement of its action (see the note above on
/// moto and Resource "*"; moto does not evaluate the tag conditions, which real IAM does).
#[tokio::test(flavor = "multi_thread")]
async fn moto_allows_each_writer_action_and_denies_it_without_its_statement() {
    let policy = writer_policy();
    let moto = Moto::start();
    let variants: Vec<Option<&str>> = std::iter::once(None)
        .chain(WRITER_ACTIONS.iter().copied().map(Some))
        .collect();
    let mut users = Vec::new();
    for (i, without) in variants.iter().enumerate() {
        let mut policy = for_moto(&policy, *without);
        for statement in policy["Statement"].as_array_mut().unwrap() {
            statement.as_object_mut().unwrap().remove("Condition");
        }
        users.push((
            *without,
            actions(&policy),
            moto.iam_user(&format!("w{i}"), &policy["Statement"]),
        ));
    }
    // One secret per user, created before enforcement, for the calls on an existing secret.
    let mut existing = Vec::new();
    for i in 0..users.len() {
        existing.push(create_secret(
            &moto,
            &format!("prod-eu/ns/existing-{i}"),
            "v0",
            None,
        ));
    }
    moto.reset_auth(0);
    for (i, (without, allowed, keys)) in users.iter().enumerate() {
        let config = sdk_config(&moto, keys).await;
        let sm = secret_inject::aws::Clients::new(config).secrets_manager("us-east-1");
        let tag = |k: &str, v: &str| {
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        };
        let target = &existing[i];
        let version = format!("{:0>48}", i);
        let calls = [
            (
                "secretsmanager:CreateSecret",
                status(
                    sm.create_secret()
                        .name(format!("prod-eu/ns/new-{i}"))
                        .tags(tag("app.kubernetes.io/managed-by", "secret-inject"))
                        .send()
                        .await,
                ),
            ),
            (
                "secretsmanager:DescribeSecret",
                status(sm.describe_secret().secret_id(target).send().await),
            ),
            (
                "secretsmanager:PutSecretValue",
                status(
                    sm.put_secret_value()
                        .secret_id(target)
                        .secret_string("v1")
                        .client_request_token(&version)
                        .version_stages("secret-inject-pending")
                        .send()
                        .await,
                ),
            ),
            (
                "secretsmanager:UpdateSecretVersionStage",
                status(
                    sm.update_secret_version_stage()
                        .secret_id(target)
                        .version_stage("secret-inject-pending")
                        .remove_from_version_id(&version)
                        .send()
                        .await,
                ),
            ),
            (
                "secretsmanager:DeleteSecret",
                status(
                    sm.delete_secret()
                        .secret_id(target)
                        .force_delete_without_recovery(true)
                        .send()
                        .await,
                ),
            ),
        ];
        for (action, got) in calls {
            let expected = if allowed.contains(action) { 200 } else { 403 };
            // UpdateSecretVersionStage on a version PutSecretValue could not stage is a 4xx of
            // its own; only the denial matters there.
            if action == "secretsmanager:UpdateSecretVersionStage"
                && *without == Some("secretsmanager:PutSecretValue")
            {
                assert_ne!(got, 200, "{action} without {without:?}");
                continue;
            }
            assert_eq!(
                got, expected,
                "{action} with the policy without {without:?}"
            );
        }
    }
}
