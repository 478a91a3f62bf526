//! Many secrets per pod, end to end: the plan the webhook renders (its own `mutate`), the real
//! agent binary, moto behind a proxy that counts every AWS call, and the files read back by
//! their real consumers (`sh`, python-dotenv, Python's json, the kubelet's own env-file parser).
//!
//! Covered: 25 secrets and 5 parameters in 3 calls; the fallback to GetSecretValue when
//! BatchGetSecretValue is denied; formats and keys; errors that name the secret, key and
//! annotation but never the value; env bindings through the kubelet's parser; failover to a
//! replica region, and no failover for a missing or denied secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::common::agent::{agent, ram_dir};
use crate::common::moto::{AwsProxy, Moto, Route};
use crate::common::{controlplane, tool};

const BATCH: &str = "secretsmanager.BatchGetSecretValue";
const GET: &str = "secretsmanager.GetSecretValue";
const PARAMETERS: &str = "AmazonSSM.GetParameters";
/// What the agent logs, once, when BatchGetSecretValue fails and it fetches one by one.
const FALLBACK_LOG: &str = "BatchGetSecretValue failed; fetching each secret with GetSecretValue";

fn static_credentials(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The visible names of the output directory: everything but `..data` and the set it points to.
fn entries(dir: &Path) -> Vec<String> {
    let current = std::fs::read_link(dir.join("..data")).ok();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name != "..data"
                && current
                    .as_deref()
                    .is_none_or(|c| c.as_os_str() != name.as_str())
        })
        .collect();
    names.sort();
    names
}

/// Read `relative` below the output directory the way an app does, after checking that its
/// top-level name is the kubelet-style symlink into `..data`.
fn read(out: &Path, relative: &str) -> Vec<u8> {
    let top = relative.split('/').next().unwrap();
    let link = std::fs::read_link(out.join(top))
        .unwrap_or_else(|e| panic!("{top} is not a symlink in {}: {e}", out.display()));
    assert_eq!(
        link,
        Path::new("..data").join(top),
        "{top} must point into ..data"
    );
    std::fs::read(out.join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative} in {}: {e}", out.display()))
}

fn read_text(out: &Path, relative: &str) -> String {
    String::from_utf8(read(out, relative)).unwrap()
}

/// The injected pod, as the webhook's own mutation renders it.
struct Injected {
    /// The injected container's environment: the plan.
    env: Vec<(String, String)>,
    /// The whole JSON Patch.
    patch: Value,
}

/// Run the webhook's mutation on a pod with these annotations and one app container running as
/// uid 1000 (so the files get mode 0400).
fn webhook(annotations: &[(String, String)]) -> Injected {
    let metadata = ObjectMeta {
        annotations: Some(annotations.iter().cloned().collect()),
        ..Default::default()
    };
    let spec = PodSpec {
        containers: vec![Container {
            name: "app".to_owned(),
            image: Some("nginx".to_owned()),
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mutation = secret_inject::mutate::mutate(
        &(&metadata).into(),
        &(&spec).into(),
        &secret_inject::mutate::MutationConfig::default(),
    )
    .unwrap_or_else(|e| panic!("the webhook denies the pod: {e}"))
    .patch
    .expect("the webhook injects the pod");
    let patch = serde_json::to_value(&mutation).unwrap();
    let op = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"] == "/spec/initContainers")
        .expect("the patch adds the init container");
    let container = &op["value"][0];
    assert_eq!(container["name"], "secrets-init-container");
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let value = var["value"].as_str().unwrap_or_else(|| {
                panic!(
                    "{var}: the plan must be rendered as values (what runs is what was admitted)"
                )
            });
            (var["name"].as_str().unwrap().to_owned(), value.to_owned())
        })
        .collect();
    Injected { env, patch }
}

fn annotations(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn plus(base: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    base.iter().chain(extra).cloned().collect()
}

/// 25 secrets (JSON and plain; the unnamed seed secret among them) and 5 parameters (String,
/// StringList, SecureString) in one pod, with what each file must hold afterwards.
struct ManySecrets {
    annotations: Vec<(String, String)>,
    /// `(path below the output directory, bytes)`.
    files: Vec<(String, Vec<u8>)>,
    /// The visible top-level names.
    top_level: Vec<String>,
}

fn many_secrets(moto: &Moto, out: &Path) -> ManySecrets {
    let mut annotations = vec![(
        "secrets.k8s.aws/mount-path".to_owned(),
        out.to_str().unwrap().to_owned(),
    )];
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |key: &str, value: &str| annotations.push((key.to_owned(), value.to_owned()));
    for i in 1..=25 {
        let name = format!("s{i:02}");
        let json = i % 2 == 1;
        let password = format!("pw-{i} $HOME \"q\" `x`");
        let value = if json {
            json!({"user": format!("user-{i}"), "password": password, "port": 5400 + i}).to_string()
        } else {
            format!("plain value {i}: $HOME 'single' \\ ünïcødé\n")
        };
        let arn = moto.create_secret("us-east-1", &format!("many/{name}"), &value);
        if i == 25 {
            // The seed's unnamed secret, in the same pod.
            add("secrets.k8s.aws/secret-arn", &arn);
            files.push(("secret".to_owned(), value.into_bytes()));
            continue;
        }
        add(&format!("secrets.k8s.aws/secret-arn.{name}"), &arn);
        match i {
            2 => {
                add(
                    &format!("secrets.k8s.aws/secret-filename.{name}"),
                    "nested/deeper/two.txt",
                );
                files.push(("nested/deeper/two.txt".to_owned(), value.into_bytes()));
            }
            3 => {
                add(&format!("secrets.k8s.aws/secret-key.{name}"), "password");
                files.push((name, password.into_bytes()));
            }
            5 => {
                add(&format!("secrets.k8s.aws/secret-format.{name}"), "json");
                files.push((name, value.into_bytes()));
            }
            7 => {
                add(&format!("secrets.k8s.aws/secret-format.{name}"), "split");
                files.push((format!("{name}/user"), b"user-7".to_vec()));
                files.push((format!("{name}/password"), password.into_bytes()));
                files.push((format!("{name}/port"), b"5407".to_vec()));
            }
            9 => {
                add(&format!("secrets.k8s.aws/secret-key.{name}"), "port");
                files.push((name, b"5409".to_vec()));
            }
            _ => files.push((name, value.into_bytes())),
        }
    }
    let parameters = [
        (
            "p1",
            "/app/p1",
            "String",
            "a plain string",
            None,
            "p1",
            "a plain string",
        ),
        ("p2", "/app/p2", "StringList", "a,b,c", None, "p2", "a,b,c"),
        (
            "p3",
            "/app/p3",
            "SecureString",
            "s3cure $value",
            None,
            "p3",
            "s3cure $value",
        ),
        (
            "p4",
            "/app/p4",
            "String",
            r#"{"endpoint":"https://api.internal","retries":3}"#,
            Some("endpoint"),
            "p4",
            "https://api.internal",
        ),
        (
            "p5",
            "/app/nested/p5",
            "SecureString",
            "deep secure",
            None,
            "conf/p5",
            "deep secure",
        ),
    ];
    for (name, path, kind, value, key, file, expected) in parameters {
        let arn = moto.put_parameter("us-east-1", path, kind, value);
        add(&format!("secrets.k8s.aws/secret-arn.{name}"), &arn);
        if let Some(key) = key {
            add(&format!("secrets.k8s.aws/secret-key.{name}"), key);
        }
        if file != name {
            add(&format!("secrets.k8s.aws/secret-filename.{name}"), file);
        }
        files.push((file.to_owned(), expected.as_bytes().to_vec()));
    }
    let mut top_level: Vec<String> = files
        .iter()
        .map(|(path, _)| path.split('/').next().unwrap().to_owned())
        .collect();
    top_level.sort();
    top_level.dedup();
    ManySecrets {
        annotations,
        files,
        top_level,
    }
}

fn assert_files(out: &Path, fixture: &ManySecrets) {
    assert_eq!(entries(out), fixture.top_level, "the visible names");
    for (path, expected) in &fixture.files {
        assert_eq!(
            read(out, path),
            *expected,
            "{path}: {:?}",
            String::from_utf8_lossy(expected)
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join("s01"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o400, "the mode the webhook chose for a uid-1000 pod");
}

#[test]
fn twenty_five_secrets_and_five_parameters_take_three_calls() {
    let moto = Moto::start();
    let out = ram_dir();
    let fixture = many_secrets(&moto, out.path());
    let injected = webhook(&fixture.annotations);
    let names: Vec<&str> = injected.env.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"SECRET_ARN") && names.contains(&"SECRET_INJECT_SECRETS"),
        "the plan carries the unnamed and the named secrets: {names:?}"
    );
    let proxy = AwsProxy::counting(moto.port);
    let env = plus(&static_credentials(&proxy.endpoint()), &injected.env);
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.output, run.termination);
    assert_files(out.path(), &fixture);
    assert!(
        run.termination
            .contains(&format!("for 30 secret(s) into {}", out.path().display())),
        "{}",
        run.termination
    );
    let counts = proxy.counts();
    assert_eq!(
        counts,
        BTreeMap::from([(BATCH.to_owned(), 2), (PARAMETERS.to_owned(), 1)]),
        "25 secrets in one region: ceil(25/20) BatchGetSecretValue calls, 5 parameters in one \
         GetParameters call, and nothing else (no GetSecretValue, no STS): {:#?}",
        proxy.calls()
    );
    assert!(
        proxy
            .calls()
            .iter()
            .all(|c| c.status == 200 && c.region == "us-east-1"),
        "{:#?}",
        proxy.calls()
    );
    assert!(!run.output.contains(FALLBACK_LOG), "{}", run.output);
}

#[test]
fn without_batch_permission_each_secret_is_fetched_once_and_the_fallback_logged_once() {
    let moto = Moto::start();
    let out = ram_dir();
    let fixture = many_secrets(&moto, out.path());
    // Resource "*": moto evaluates actions, not resources.
    let (key_id, secret_key) = moto.iam_user(
        "app",
        &json!([{
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameters"],
            "Resource": "*"
        }]),
    );
    moto.reset_auth(0); // IAM enforcement from the next request on
    let injected = webhook(&fixture.annotations);
    let proxy = AwsProxy::counting(moto.port);
    let mut env = vec![
        ("AWS_ENDPOINT_URL".to_owned(), proxy.endpoint()),
        ("AWS_ACCESS_KEY_ID".to_owned(), key_id),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), secret_key),
    ];
    env.extend(injected.env);
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.output, run.termination);
    assert_files(out.path(), &fixture);
    let calls = proxy.calls();
    let of = |operation: &str, status: u16| {
        calls
            .iter()
            .filter(|c| c.operation == operation && c.status == status)
            .count()
    };
    assert_eq!(of(BATCH, 403), 2, "two denied batch calls: {calls:#?}");
    assert_eq!(
        of(GET, 200),
        25,
        "one GetSecretValue per secret: {calls:#?}"
    );
    assert_eq!(of(PARAMETERS, 200), 1, "{calls:#?}");
    assert_eq!(calls.len(), 28, "nothing else: {calls:#?}");
    assert_eq!(
        run.output.matches(FALLBACK_LOG).count(),
        1,
        "the fallback is logged once:\n{}",
        run.output
    );
    assert!(
        run.output.contains("AccessDenied"),
        "the log says why: {}",
        run.output
    );
}

/// Values no quoting scheme likes. Each must come back exactly from `sh` and python-dotenv.
fn awkward_env_values() -> Vec<(&'static str, Value)> {
    vec![
        ("HOME_REF", json!("$HOME and $(id) and $ and $$ and ${")),
        ("BACKTICKS", json!("`id` runs nothing")),
        ("DOUBLE_QUOTES", json!("say \"hi\" \"")),
        ("SPACES", json!("  two  spaces  ")),
        ("NEWLINES", json!("line one\nline two\n  indented")),
        ("UNICODE", json!("ünïcødé ✓ 日本語 🚀")),
        ("HASH", json!("a # not a comment #")),
        ("EQUALS", json!("k=v=w=")),
        ("BACKSLASH", json!("C:\\temp\\new \\n")),
        ("SEMICOLON", json!("a; exit 3; b && c || d | e > f")),
        ("EMPTY", json!("")),
        ("NUMBER", json!(5432)),
        ("BOOL", json!(true)),
        ("OBJECT", json!({"a": [1, "two"]})),
    ]
}

/// What `sh` (`set -a; . ./FILE`, in the output directory) sets `keys` to.
fn sh_reads(out: &Path, file: &str, keys: &[&str]) -> Vec<String> {
    let script = format!(
        "set -a; . ./{file}; printf '%s\\0' {}",
        keys.iter()
            .map(|k| format!("\"${k}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let sh = Command::new(tool("sh"))
        .args(["-c", &script])
        .current_dir(out)
        .env_clear()
        .env("HOME", "/home/must-not-be-expanded")
        .output()
        .unwrap();
    assert!(
        sh.status.success(),
        "sh: {}",
        String::from_utf8_lossy(&sh.stderr)
    );
    let mut values: Vec<String> = String::from_utf8(sh.stdout)
        .unwrap()
        .split('\0')
        .map(str::to_owned)
        .collect();
    assert_eq!(values.pop().as_deref(), Some(""), "printf ends with a NUL");
    values
}

/// What python-dotenv's `dotenv_values` (defaults, as an app calls it) reads from `file`.
fn dotenv_reads(file: &Path) -> BTreeMap<String, Option<String>> {
    let dotenv = Command::new(tool("python"))
        .args([
            "-c",
            "import json, sys\n\
             from dotenv import dotenv_values\n\
             json.dump(dotenv_values(sys.argv[1]), sys.stdout)",
        ])
        .arg(file)
        .env_clear()
        .env("HOME", "/home/must-not-be-expanded")
        .output()
        .unwrap();
    assert!(
        dotenv.status.success(),
        "python-dotenv (pinned in tests/requirements.txt; scripts/test installs it): {}",
        String::from_utf8_lossy(&dotenv.stderr)
    );
    serde_json::from_slice(&dotenv.stdout).unwrap()
}

#[test]
fn a_brace_variable_in_an_env_format_value_reads_back_the_same_or_is_refused() {
    // python-dotenv expands ${NAME} and ${NAME:-default} even inside single quotes (its
    // default, interpolate=True); sh does not. The agent must refuse such a value (exit 6), as
    // it refuses a ', or write it so that both read it back the same.
    let moto = Moto::start();
    let out = ram_dir();
    let value = "hello ${HOME} and ${USER:-nobody}";
    let arn = moto.create_secret(
        "us-east-1",
        "braces/app",
        &json!({ "GREETING": value }).to_string(),
    );
    let good = moto.create_secret("us-east-1", "braces/good", "fine");
    let pairs = [
        ("secrets.k8s.aws/mount-path", out.path().to_str().unwrap()),
        ("secrets.k8s.aws/secret-arn.good", good.as_str()),
        ("secrets.k8s.aws/secret-arn.app", arn.as_str()),
        ("secrets.k8s.aws/secret-format.app", "env"),
        ("secrets.k8s.aws/secret-filename.app", "app.env"),
    ];
    let injected = webhook(&annotations(&pairs));
    let run = agent(
        &plus(&static_credentials(&moto.endpoint()), &injected.env),
        &[],
    );
    match run.code {
        Some(6) => {
            // The key by its place, never by its name: anyone who may get the pod reads the
            // termination message.
            for expected in [
                "secret app",
                "the 1st of the 1 top-level keys",
                "secrets.k8s.aws/secret-format.app",
            ] {
                assert!(
                    run.termination.contains(expected),
                    "{expected:?}: {}",
                    run.termination
                );
            }
            assert!(!run.termination.contains(value), "{}", run.termination);
            assert!(!run.termination.contains("GREETING"), "{}", run.termination);
            assert!(entries(out.path()).is_empty());
        }
        Some(0) => {
            let from_sh = sh_reads(out.path(), "app.env", &["GREETING"]);
            let from_dotenv = dotenv_reads(&out.path().join("app.env"));
            assert_eq!(from_sh, [value], "sh");
            assert_eq!(
                from_dotenv.get("GREETING").cloned().flatten().as_deref(),
                Some(value),
                "BUG (src/agent/render.rs, dotenv_problem): the agent wrote a format=env value \
                 holding ${{...}}, which python-dotenv {} expands even inside single quotes \
                 (dotenv_values/load_dotenv interpolate by default), so sh and python-dotenv \
                 read different values; refuse values holding \"${{\" as \"'\" is refused",
                "1.2.4"
            );
        }
        other => panic!("exit {other:?}: {}\n{}", run.output, run.termination),
    }
}

/// The text a value has in a file: strings as they are, anything else as compact JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn formats_and_keys_read_back_by_real_consumers() {
    let moto = Moto::start();
    let out = ram_dir();
    let awkward = awkward_env_values();
    let dotenv_value: serde_json::Map<String, Value> = awkward
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let structured = json!({
        "username": "app",
        "password": "p4ss w0rd $HOME",
        "port": 5432,
        "tls": true,
        "ratio": 0.25,
        "db": {"hosts": ["db-1.internal", "db-2.internal"], "name": "ünï"},
    });
    let dotenv_arn = moto.create_secret(
        "us-east-1",
        "formats/dotenv",
        &Value::Object(dotenv_value).to_string(),
    );
    let structured_arn =
        moto.create_secret("us-east-1", "formats/structured", &structured.to_string());
    let pairs = [
        ("secrets.k8s.aws/mount-path", out.path().to_str().unwrap()),
        ("secrets.k8s.aws/secret-arn.dotenv", dotenv_arn.as_str()),
        ("secrets.k8s.aws/secret-format.dotenv", "env"),
        ("secrets.k8s.aws/secret-filename.dotenv", "app.env"),
        ("secrets.k8s.aws/secret-arn.whole", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-format.whole", "json"),
        ("secrets.k8s.aws/secret-filename.whole", "config/whole.json"),
        ("secrets.k8s.aws/secret-arn.part", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-format.part", "json"),
        ("secrets.k8s.aws/secret-key.part", "db"),
        ("secrets.k8s.aws/secret-arn.split", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-format.split", "split"),
        ("secrets.k8s.aws/secret-arn.flat", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-key.flat", "password"),
        ("secrets.k8s.aws/secret-arn.nested", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-key.nested", "db.hosts[0]"),
        ("secrets.k8s.aws/secret-arn.number", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-key.number", "port"),
        ("secrets.k8s.aws/secret-arn.bool", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-key.bool", "tls"),
        ("secrets.k8s.aws/secret-arn.object", structured_arn.as_str()),
        ("secrets.k8s.aws/secret-key.object", "db"),
    ];
    let injected = webhook(&annotations(&pairs));
    let proxy = AwsProxy::counting(moto.port);
    let run = agent(
        &plus(&static_credentials(&proxy.endpoint()), &injected.env),
        &[],
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.output, run.termination);
    // Two distinct secrets behind ten files: each fetched once, in one batch call.
    assert_eq!(
        proxy.counts(),
        BTreeMap::from([(BATCH.to_owned(), 1)]),
        "{:#?}",
        proxy.calls()
    );

    // format env, read by sh (dash) and by python-dotenv: both exactly the values.
    let keys: Vec<&str> = awkward.iter().map(|(k, _)| *k).collect();
    let expected: Vec<String> = awkward.iter().map(|(_, v)| text_of(v)).collect();
    assert_eq!(
        sh_reads(out.path(), "app.env", &keys),
        expected,
        "sh read the env file differently"
    );
    let want: BTreeMap<String, Option<String>> = keys
        .iter()
        .zip(&expected)
        .map(|(k, v)| ((*k).to_owned(), Some(v.clone())))
        .collect();
    assert_eq!(
        dotenv_reads(&out.path().join("app.env")),
        want,
        "python-dotenv read the env file differently"
    );

    // format json, parsed by Python's json: the same value.
    let python_json = |path: &str| -> Value {
        let output = Command::new(tool("python"))
            .args([
                "-c",
                "import json, sys\njson.dump(json.load(open(sys.argv[1], encoding='utf-8')), sys.stdout)",
            ])
            .arg(out.path().join(path))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "python json on {path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    read(out.path(), "config/whole.json");
    assert_eq!(python_json("config/whole.json"), structured);
    read(out.path(), "part");
    assert_eq!(python_json("part"), structured["db"]);

    // split: one file per top-level key; non-strings as compact JSON.
    for (key, value) in structured.as_object().unwrap() {
        assert_eq!(
            read_text(out.path(), &format!("split/{key}")),
            text_of(value),
            "split/{key}"
        );
    }
    assert_eq!(
        read_text(out.path(), "split/db"),
        r#"{"hosts":["db-1.internal","db-2.internal"],"name":"ünï"}"#
    );
    // Keys: flat, nested (JMESPath), number, bool, object.
    for (file, expected) in [
        ("flat", "p4ss w0rd $HOME"),
        ("nested", "db-1.internal"),
        ("number", "5432"),
        ("bool", "true"),
        (
            "object",
            r#"{"hosts":["db-1.internal","db-2.internal"],"name":"ünï"}"#,
        ),
    ] {
        assert_eq!(read_text(out.path(), file), expected, "{file}");
    }
    assert_eq!(
        entries(out.path()),
        [
            "app.env", "bool", "config", "flat", "nested", "number", "object", "part", "split"
        ]
    );
}

#[test]
fn unusable_values_fail_naming_secret_key_and_annotation_never_the_value() {
    let moto = Moto::start();
    let out = ram_dir();
    let dir = out.path().to_str().unwrap();
    let good = moto.create_secret("us-east-1", "errors/good", r#"{"a":"fine"}"#);
    let leak = "VALUE-that-must-never-be-shown";
    let cases = [
        (
            "missing key",
            json!({"password": leak}).to_string(),
            ("secrets.k8s.aws/secret-key.db", "passwd"),
            "secrets.k8s.aws/secret-key.db",
            "\"passwd\"",
        ),
        (
            "a single quote for an env binding",
            json!({"password": format!("it's-{leak}")}).to_string(),
            ("secrets.k8s.aws/env.db", "DB_PASSWORD=password"),
            "secrets.k8s.aws/env.db",
            "key password",
        ),
        (
            "a single quote in an env-format value",
            json!({"TOKEN": format!("it's-{leak}")}).to_string(),
            ("secrets.k8s.aws/secret-format.db", "env"),
            "secrets.k8s.aws/secret-format.db",
            // A key of the value, not of the annotations: by its place, never by its name
            // (anyone who may get the pod reads the termination message).
            "the 1st of the 1 top-level keys",
        ),
    ];
    for (i, (case, value, extra, annotation, key)) in cases.into_iter().enumerate() {
        let arn = moto.create_secret("us-east-1", &format!("errors/db-{i}"), &value);
        let pairs = [
            ("secrets.k8s.aws/mount-path", dir),
            ("secrets.k8s.aws/secret-arn.good", good.as_str()),
            ("secrets.k8s.aws/secret-arn.db", arn.as_str()),
            extra,
        ];
        let injected = webhook(&annotations(&pairs));
        let run = agent(
            &plus(&static_credentials(&moto.endpoint()), &injected.env),
            &[],
        );
        assert_eq!(
            run.code,
            Some(6),
            "{case}: {}\n{}",
            run.output,
            run.termination
        );
        for expected in ["secret db", arn.as_str(), annotation, key, "Fix:"] {
            assert!(
                run.termination.contains(expected),
                "{case}: {expected:?} missing from the termination message: {}",
                run.termination
            );
        }
        assert!(
            !run.termination.contains(leak) && !run.output.contains(leak),
            "{case}: the value leaked:\n{}\n{}",
            run.termination,
            run.output
        );
        assert!(
            !run.termination.contains("TOKEN"),
            "{case}: a key name of the value in the termination message: {}",
            run.termination
        );
        assert!(
            entries(out.path()).is_empty(),
            "{case}: a file was written, though the good secret alone was fine: {:?}",
            entries(out.path())
        );
        assert!(
            !out.path().join("..data").exists(),
            "{case}: a set was published"
        );
    }
}

#[test]
fn two_secrets_on_one_file_fail_with_nothing_written() {
    // The webhook denies this at admission; an agent given it by hand must not write either.
    let moto = Moto::start();
    let out = ram_dir();
    let a = moto.create_secret("us-east-1", "clash/a", "value-a");
    let b = moto.create_secret("us-east-1", "clash/b", r#"{"x":"value-b"}"#);
    let base = static_credentials(&moto.endpoint());
    let dir = out.path().to_str().unwrap().to_owned();
    let run_with = |secrets: Value| {
        let mut env = base.clone();
        env.push(("SECRET_INJECT_OUTPUT_DIR".to_owned(), dir.clone()));
        env.push(("SECRET_INJECT_SECRETS".to_owned(), secrets.to_string()));
        agent(&env, &[])
    };
    // The same file.
    let run = run_with(json!([
        {"name": "a", "arn": a, "file": "same"},
        {"name": "b", "arn": b, "file": "same"}
    ]));
    assert_eq!(run.code, Some(2), "{}\n{}", run.output, run.termination);
    assert!(
        run.termination.contains("SECRET_INJECT_SECRETS")
            && run.termination.contains("same name or file"),
        "{}",
        run.termination
    );
    assert!(entries(out.path()).is_empty(), "{:?}", entries(out.path()));
    // A file that a split secret's key also writes: found when the set is assembled.
    let run = run_with(json!([
        {"name": "a", "arn": a, "file": "conf/x"},
        {"name": "b", "arn": b, "file": "conf", "format": "split"}
    ]));
    assert_eq!(run.code, Some(8), "{}\n{}", run.output, run.termination);
    assert!(
        run.termination.contains("FileCollision") && run.termination.contains("conf/x"),
        "the message names the path: {}",
        run.termination
    );
    assert!(entries(out.path()).is_empty(), "{:?}", entries(out.path()));
    assert!(!out.path().join("..data").exists());
}

#[test]
fn env_bindings_read_back_by_the_kubelets_own_parser() {
    let envfile = controlplane::bin("kubelet-envfile");
    let moto = Moto::start();
    let out = ram_dir();
    let db = json!({
        "user": "app user",
        "password": "p$ss \\ w0rd \"q\" `x` $(id) ${HOME}",
        "backslashes": "a\\\\b\\nc\\",
        "dsn": "postgres://u:p@h:5432/db?sslmode=require&x=$Y#frag",
        "multi": "line one\nline two\n  indented",
        "unicode": "ünïcødé ✓ 日本語",
        "port": 5432,
        "tls": false,
    });
    // Stored pretty-printed, keys unsorted: the raw files must hold exactly these bytes.
    let db_stored = format!(
        "{{\n  \"user\": {},\n  \"password\": {},\n  \"backslashes\": {},\n  \"dsn\": {},\n  \
         \"multi\": {},\n  \"unicode\": {},\n  \"port\": 5432,\n  \"tls\": false\n}}\n",
        db["user"], db["password"], db["backslashes"], db["dsn"], db["multi"], db["unicode"]
    );
    assert_eq!(serde_json::from_str::<Value>(&db_stored).unwrap(), db);
    let db_arn = moto.create_secret("us-east-1", "env/db", &db_stored);
    let seed = json!({"token": "tok=en # $x"});
    let seed_stored = "{ \"token\" : \"tok=en # $x\" }";
    assert_eq!(serde_json::from_str::<Value>(seed_stored).unwrap(), seed);
    let seed_arn = moto.create_secret("us-east-1", "env/seed", seed_stored);
    let cache = json!({"url": "redis://cache:6379/0", "pool": 8});
    let cache_arn = moto.create_secret("us-east-1", "env/cache", &cache.to_string());
    let bindings = [
        ("DB_USER", &db["user"]),
        ("DB_PASSWORD", &db["password"]),
        ("DB_BACKSLASHES", &db["backslashes"]),
        ("DB_DSN", &db["dsn"]),
        ("DB_MULTI", &db["multi"]),
        ("DB_UNICODE", &db["unicode"]),
        ("DB_PORT", &db["port"]),
        ("DB_TLS", &db["tls"]),
        ("API_TOKEN", &seed["token"]),
        ("CACHE_URL", &cache["url"]),
    ];
    let pairs = [
        ("secrets.k8s.aws/mount-path", out.path().to_str().unwrap()),
        ("secrets.k8s.aws/secret-arn", seed_arn.as_str()),
        ("secrets.k8s.aws/env", "API_TOKEN=token"),
        ("secrets.k8s.aws/secret-arn.db", db_arn.as_str()),
        (
            "secrets.k8s.aws/env.db",
            "DB_USER=user,DB_PASSWORD=password,DB_BACKSLASHES=backslashes,DB_DSN=dsn,\
             DB_MULTI=multi,DB_UNICODE=unicode,DB_PORT=port,DB_TLS=tls",
        ),
        ("secrets.k8s.aws/secret-arn.cache", cache_arn.as_str()),
        ("secrets.k8s.aws/secret-format.cache", "split"),
        ("secrets.k8s.aws/env.cache", "CACHE_URL=url"),
    ];
    let injected = webhook(&annotations(&pairs));
    // Where the app container's fileKeyRef env vars point: one file for all of them.
    let app_env: Vec<Value> = injected
        .patch
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/spec/containers/0/env"))
        })
        .flat_map(|op| match &op["value"] {
            Value::Array(vars) => vars.clone(),
            other => vec![other.clone()],
        })
        .collect();
    let mut paths: Vec<&str> = Vec::new();
    for (var, _) in &bindings {
        let found = app_env
            .iter()
            .find(|v| v["name"] == *var)
            .unwrap_or_else(|| panic!("the app container has no {var}: {app_env:#?}"));
        let reference = &found["valueFrom"]["fileKeyRef"];
        assert_eq!(reference["volumeName"], "secret-vol", "{found}");
        assert_eq!(reference["key"], *var, "{found}");
        paths.push(reference["path"].as_str().unwrap());
    }
    paths.dedup();
    assert_eq!(paths, ["..data/..env"], "one env file for every binding");

    let run = agent(
        &plus(&static_credentials(&moto.endpoint()), &injected.env),
        &[],
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.output, run.termination);
    assert!(
        run.termination.contains("and 10 env var(s)"),
        "{}",
        run.termination
    );
    let file = out.path().join(paths[0]);
    let vars: Vec<&str> = bindings.iter().map(|(v, _)| *v).collect();
    let parsed = Command::new(&envfile)
        .arg(&file)
        .args(&vars)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "kubelet-envfile {}: {}",
        file.display(),
        String::from_utf8_lossy(&parsed.stderr)
    );
    let got: BTreeMap<String, String> = serde_json::from_slice(&parsed.stdout).unwrap();
    let want: BTreeMap<String, String> = bindings
        .iter()
        .map(|(var, value)| ((*var).to_owned(), text_of(value)))
        .collect();
    assert_eq!(
        got, want,
        "the kubelet reads other values than the secrets hold"
    );
    // The env file is reached through ..data only; the secrets' own files are visible.
    assert_eq!(
        entries(out.path()),
        ["cache", "db", "secret"],
        "a ..-name (the env file) must not get a top-level symlink of its own: contract::ENV_FILE \
         is ..data/..env, and ..-names are reserved for the atomic writer"
    );
    assert_eq!(read_text(out.path(), "cache/pool"), "8");
}

#[test]
fn a_secret_with_env_bindings_keeps_its_raw_file_as_stored() {
    // README: "raw (default): the value as stored; with a key, that key's value." An env
    // binding must not change what the secret's own file holds.
    let moto = Moto::start();
    let out = ram_dir();
    let stored = "{\n  \"user\": \"app\",\n  \"password\": \"p4ss\"\n}\n";
    let arn = moto.create_secret("us-east-1", "raw-env/db", stored);
    let plain = moto.create_secret("us-east-1", "raw-env/plain", stored);
    let pairs = [
        ("secrets.k8s.aws/mount-path", out.path().to_str().unwrap()),
        ("secrets.k8s.aws/secret-arn.db", arn.as_str()),
        ("secrets.k8s.aws/env.db", "DB_USER=user"),
        ("secrets.k8s.aws/secret-arn.plain", plain.as_str()),
    ];
    let injected = webhook(&annotations(&pairs));
    let run = agent(
        &plus(&static_credentials(&moto.endpoint()), &injected.env),
        &[],
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.output, run.termination);
    assert_eq!(
        read_text(out.path(), "plain"),
        stored,
        "without env bindings"
    );
    assert_eq!(
        read_text(out.path(), "db"),
        stored,
        "BUG (src/agent/render.rs, render(), the OutputFormat::Raw arm): secret db has format \
         raw, no key and an env binding; its file must hold the value as stored, but the agent \
         writes scalar_text(&selected), a re-serialization (keys sorted, whitespace dropped), \
         because the env binding made it parse the JSON"
    );
}

/// A port nobody listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn replicated_secret(moto: &Moto, name: &str, value: &str) -> String {
    let (status, body) = moto.json(
        "us-east-1",
        "secretsmanager.CreateSecret",
        &json!({"Name": name, "SecretString": value, "AddReplicaRegions": [{"Region": "us-west-2"}]}),
    );
    assert_eq!(status, 200, "{body}");
    body["ARN"].as_str().unwrap().to_owned()
}

#[test]
fn a_dead_primary_region_fails_over_to_the_replicas() {
    let moto = Moto::start();
    let out = ram_dir();
    let a = replicated_secret(&moto, "failover/a", "value-a");
    let b = replicated_secret(&moto, "failover/b", "value-b");
    let seed = replicated_secret(&moto, "failover/seed", "value-seed");
    let proxy = AwsProxy::routed(
        vec![("us-east-1", Route::Forward(dead_port()))],
        Route::Forward(moto.port),
    );
    let base = static_credentials(&proxy.endpoint());
    let dir = out.path().to_str().unwrap();
    // Several secrets (the batch path), then one (the GetSecretValue path).
    for (pairs, files) in [
        (
            vec![
                ("secrets.k8s.aws/secret-arn.a", a.as_str()),
                ("secrets.k8s.aws/secret-arn.b", b.as_str()),
            ],
            vec![("a", "value-a"), ("b", "value-b")],
        ),
        (
            vec![("secrets.k8s.aws/secret-arn", seed.as_str())],
            vec![("secret", "value-seed")],
        ),
    ] {
        proxy.reset();
        let mut pairs = pairs;
        pairs.push(("secrets.k8s.aws/mount-path", dir));
        pairs.push(("secrets.k8s.aws/failover-region", "us-west-2"));
        let injected = webhook(&annotations(&pairs));
        assert!(
            injected.env.contains(&(
                "SECRET_INJECT_FAILOVER_REGION".to_owned(),
                "us-west-2".to_owned()
            )),
            "{:?}",
            injected.env
        );
        let run = agent(&plus(&base, &injected.env), &["--deadline", "60s"]);
        assert_eq!(run.code, Some(0), "{}\n{}", run.output, run.termination);
        for (file, value) in &files {
            assert_eq!(read_text(out.path(), file), *value);
        }
        let names: Vec<&str> = files.iter().map(|(f, _)| *f).collect();
        assert_eq!(entries(out.path()), names);
        assert!(
            run.termination
                .contains("served by the failover region us-west-2"),
            "{}",
            run.termination
        );
        let calls = proxy.calls();
        let west: Vec<_> = calls.iter().filter(|c| c.region == "us-west-2").collect();
        assert_eq!(
            west.len(),
            files.len(),
            "one GetSecretValue per secret from the replica: {calls:#?}"
        );
        assert!(
            west.iter().all(|c| c.operation == GET && c.status == 200),
            "{calls:#?}"
        );
        assert!(
            calls
                .iter()
                .filter(|c| c.region != "us-west-2")
                .all(|c| c.region == "us-east-1" && c.status == 502),
            "{calls:#?}"
        );
        // A transient failure fails over after 3 attempts in the primary region: of the batch
        // call (then its secrets go straight to their replicas, not to the dead region again),
        // or of the one GetSecretValue.
        let primary = |operation: &str| {
            calls
                .iter()
                .filter(|c| c.region == "us-east-1" && c.operation == operation)
                .count()
        };
        if files.len() > 1 {
            assert_eq!(primary(BATCH), 3, "{calls:#?}");
            assert_eq!(primary(GET), 0, "{calls:#?}");
        } else {
            assert_eq!(primary(GET), 3, "{calls:#?}");
        }
        // The replica ARN is the secret's own ARN in the failover region; the message names
        // the secrets that were served from there.
        for (_, arn) in pairs.iter().filter(|(k, _)| k.contains("secret-arn")) {
            assert!(run.termination.contains(arn), "{}", run.termination);
        }
        std::fs::remove_dir_all(out.path()).unwrap();
        std::fs::create_dir(out.path()).unwrap();
    }
}

#[test]
fn a_missing_or_denied_secret_never_fails_over() {
    let moto = Moto::start();
    let out = ram_dir();
    let dir = out.path().to_str().unwrap();
    // Only in us-west-2: its ARN in us-east-1 names a secret that does not exist there.
    let west = moto.create_secret("us-west-2", "only-west", "west-value");
    let missing = west.replace(":us-west-2:", ":us-east-1:");
    let west_b = moto.create_secret("us-west-2", "only-west-b", "west-value-b");
    let missing_b = west_b.replace(":us-west-2:", ":us-east-1:");
    let denied = r#"{"__type":"AccessDeniedException","message":"User is not authorized to perform: secretsmanager:GetSecretValue"}"#;
    for (case, route, pairs, code, expected) in [
        (
            "not found, one secret",
            Route::Forward(moto.port),
            vec![("secrets.k8s.aws/secret-arn", missing.as_str())],
            5,
            "ResourceNotFoundException",
        ),
        (
            "not found, a batch",
            Route::Forward(moto.port),
            vec![
                ("secrets.k8s.aws/secret-arn.a", missing.as_str()),
                ("secrets.k8s.aws/secret-arn.b", missing_b.as_str()),
            ],
            5,
            "ResourceNotFoundException",
        ),
        (
            "denied, one secret",
            Route::Answer(400, denied.to_owned()),
            vec![("secrets.k8s.aws/secret-arn", missing.as_str())],
            4,
            "AccessDeniedException",
        ),
        (
            "denied, a batch",
            Route::Answer(400, denied.to_owned()),
            vec![
                ("secrets.k8s.aws/secret-arn.a", missing.as_str()),
                ("secrets.k8s.aws/secret-arn.b", missing_b.as_str()),
            ],
            4,
            "AccessDeniedException",
        ),
    ] {
        let proxy = AwsProxy::routed(vec![("us-east-1", route)], Route::Forward(moto.port));
        let mut pairs = pairs;
        pairs.push(("secrets.k8s.aws/mount-path", dir));
        pairs.push(("secrets.k8s.aws/failover-region", "us-west-2"));
        let injected = webhook(&annotations(&pairs));
        let run = agent(
            &plus(&static_credentials(&proxy.endpoint()), &injected.env),
            &[],
        );
        assert_eq!(
            run.code,
            Some(code),
            "{case}: {}\n{}",
            run.output,
            run.termination
        );
        assert!(
            run.termination.contains(expected),
            "{case}: {}",
            run.termination
        );
        let calls = proxy.calls();
        assert!(!calls.is_empty(), "{case}: the agent called nothing");
        assert!(
            calls.iter().all(|c| c.region == "us-east-1"),
            "{case}: the failover region was asked: {calls:#?}"
        );
        assert!(
            !run.output.contains("failing over"),
            "{case}: {}",
            run.output
        );
        assert!(entries(out.path()).is_empty(), "{case}");
    }
}

/// Where the tools of this module come from, so a missing one fails with instructions.
#[test]
fn the_oracles_are_installed() {
    let python = tool("python");
    let output = Command::new(&python)
        .args([
            "-c",
            "import dotenv, importlib.metadata as m; print(m.version('python-dotenv'))",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} cannot import python-dotenv; run scripts/test (tests/requirements.txt pins it): {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let pinned =
        std::fs::read_to_string(crate::common::repo_root().join("tests/requirements.txt")).unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    assert!(
        pinned
            .lines()
            .any(|l| l.trim() == format!("python-dotenv=={}", version.trim())),
        "the installed python-dotenv {} is not the one tests/requirements.txt pins",
        version.trim()
    );
    let envfile: PathBuf = controlplane::bin("kubelet-envfile");
    let usage = Command::new(&envfile).output().unwrap();
    assert!(
        String::from_utf8_lossy(&usage.stderr).contains("usage: kubelet-envfile"),
        "{}: {}",
        envfile.display(),
        String::from_utf8_lossy(&usage.stderr)
    );
}

/// The counting proxy itself: requests, not connections, are counted; a kept-alive connection
/// carries several; query-protocol calls are named by their Action.
#[test]
fn the_proxy_counts_requests_on_kept_alive_connections() {
    use std::io::{Read as _, Write as _};
    let proxy = AwsProxy::routed(Vec::new(), Route::Answer(200, "{}".to_owned()));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let request = |target: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: {target}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential=AKID/20261201/eu-west-1/secretsmanager/aws4_request, SignedHeaders=host, \
             Signature=0\r\nContent-Length: 2\r\n\r\n{{}}"
        )
    };
    let mut answers = String::new();
    for target in [GET, BATCH] {
        stream.write_all(request(target).as_bytes()).unwrap();
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).unwrap();
        answers.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    drop(stream);
    let body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15";
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        proxy.counts(),
        BTreeMap::from([
            (BATCH.to_owned(), 1),
            (GET.to_owned(), 1),
            ("AssumeRoleWithWebIdentity".to_owned(), 1)
        ])
    );
    assert_eq!(proxy.count(GET), 1);
    assert_eq!(proxy.calls()[0].region, "eu-west-1");
    assert_eq!(proxy.calls()[2].region, "", "unsigned");
    assert_eq!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}
