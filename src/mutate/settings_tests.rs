//! The operator's settings of the injected agent (`--sidecar-deadline`, `--sidecar-env`, ...):
//! checked once when the webhook starts, rendered into every agent container, read back by the
//! agent's own parser.

use serde_json::{Value, json};

use super::*;
use crate::contract::{AgentSettings, env};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

fn config(settings: Settings<'_>) -> Result<MutationConfig, SettingsError> {
    MutationConfig::new(&settings)
}

fn agent_env(config: &MutationConfig) -> Vec<(String, String)> {
    let pod: Value = json!({
        "metadata": { "annotations": { "secrets.k8s.aws/secret-arn": ARN } },
        "spec": { "containers": [{ "name": "app", "image": "app" }] },
    });
    let metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(pod["metadata"].clone()).unwrap();
    let spec: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(pod["spec"].clone()).unwrap();
    let patch = mutate(&(&metadata).into(), &(&spec).into(), config)
        .unwrap()
        .patch
        .expect("a patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch.to_patch()).unwrap();
    let agent = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == contract::CONTAINER_NAME)
        .unwrap()
        .clone();
    agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn unset_settings_render_nothing_and_the_agent_keeps_its_defaults() {
    let vars = agent_env(&MutationConfig::default());
    for name in [
        env::DEADLINE,
        env::ATTEMPT_TIMEOUT,
        env::BATCH_THRESHOLD,
        env::LOG_LEVEL,
    ] {
        assert!(
            vars.iter().all(|(n, _)| n != name),
            "{name} rendered: {vars:?}"
        );
    }
    assert_eq!(
        SettingsFields::default().parse().unwrap(),
        AgentSettings::DEFAULT
    );
    // A deadline shorter than the default attempt timeout is fine: attempts are cut to it.
    let short = SettingsFields {
        deadline: Some("2s".into()),
        ..Default::default()
    };
    assert_eq!(
        short.parse().unwrap().deadline,
        std::time::Duration::from_secs(2)
    );
}

#[test]
fn the_operators_settings_and_extra_env_reach_every_agent_container_after_the_plan() {
    let extra = [
        "HTTPS_PROXY=http://proxy.internal:3128".to_owned(),
        "NO_PROXY=10.0.0.0/8,.svc,.cluster.local".to_owned(),
        "AWS_USE_FIPS_ENDPOINT=true".to_owned(),
        "EMPTY=".to_owned(),
    ];
    let config = config(Settings {
        agent: SettingsFields {
            deadline: Some("5m".into()),
            attempt_timeout: Some("20s".into()),
            batch_threshold: Some("0".into()),
        },
        agent_log_level: Some("debug"),
        agent_env: &extra,
        ..Settings::default()
    })
    .unwrap();
    let vars = agent_env(&config);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let tail = &names[names.len() - 8..];
    assert_eq!(
        tail,
        [
            env::DEADLINE,
            env::ATTEMPT_TIMEOUT,
            env::BATCH_THRESHOLD,
            env::LOG_LEVEL,
            "HTTPS_PROXY",
            "NO_PROXY",
            "AWS_USE_FIPS_ENDPOINT",
            "EMPTY",
        ]
    );
    assert_eq!(names[0], env::SECRET_ARN, "the plan comes first: {names:?}");
    let value = |name: &str| vars.iter().find(|(n, _)| n == name).unwrap().1.as_str();
    assert_eq!(value(env::DEADLINE), "5m");
    assert_eq!(value("NO_PROXY"), "10.0.0.0/8,.svc,.cluster.local");
    assert_eq!(value("EMPTY"), "");
    // What the agent makes of them.
    let fields = SettingsFields {
        deadline: Some(value(env::DEADLINE).into()),
        attempt_timeout: Some(value(env::ATTEMPT_TIMEOUT).into()),
        batch_threshold: Some(value(env::BATCH_THRESHOLD).into()),
    };
    assert_eq!(
        fields.parse().unwrap(),
        AgentSettings {
            deadline: std::time::Duration::from_secs(300),
            attempt_timeout: std::time::Duration::from_secs(20),
            batch_threshold: 0,
        }
    );
}

#[test]
fn bad_settings_are_refused_at_start_naming_the_flag_and_the_fix() {
    let refused = |agent: SettingsFields, env: &[&str]| {
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        config(Settings {
            agent,
            agent_env: &env,
            ..Settings::default()
        })
        .unwrap_err()
        .to_string()
    };
    let cases: Vec<(SettingsFields, &[&str], &str, &str)> = vec![
        (
            SettingsFields {
                deadline: Some("soon".into()),
                ..Default::default()
            },
            &[],
            "--sidecar-deadline \"soon\"",
            "not a duration",
        ),
        (
            SettingsFields {
                deadline: Some("0s".into()),
                ..Default::default()
            },
            &[],
            "--sidecar-deadline",
            "positive duration",
        ),
        (
            SettingsFields {
                deadline: Some("5s".into()),
                attempt_timeout: Some("30s".into()),
                ..Default::default()
            },
            &[],
            "--sidecar-attempt-timeout",
            "longer than the deadline",
        ),
        (
            SettingsFields {
                batch_threshold: Some("-1".into()),
                ..Default::default()
            },
            &[],
            "--sidecar-batch-threshold",
            "whole number",
        ),
        (
            SettingsFields::default(),
            &["HTTPS_PROXY"],
            "--sidecar-env",
            "NAME=VALUE",
        ),
        (
            SettingsFields::default(),
            &["1PROXY=x"],
            "--sidecar-env",
            "letters, digits",
        ),
        (
            SettingsFields::default(),
            &["MY-VAR=x"],
            "--sidecar-env",
            "letters, digits",
        ),
        (
            SettingsFields::default(),
            &["SECRET_INJECT_DEADLINE=5m"],
            "--sidecar-env",
            "--sidecar-deadline",
        ),
        (
            SettingsFields::default(),
            &["SECRET_ARN=x"],
            "--sidecar-env",
            "the webhook's to render",
        ),
        (
            SettingsFields::default(),
            &["AWS_ROLE_ARN=arn"],
            "--sidecar-env",
            "own ServiceAccount",
        ),
        (
            SettingsFields::default(),
            &["AWS_REGION=us-east-1"],
            "--sidecar-env",
            "identity or region",
        ),
        (
            SettingsFields::default(),
            &["AWS_ACCESS_KEY_ID=AKIA"],
            "--sidecar-env",
            "same AWS identity",
        ),
        (
            SettingsFields::default(),
            &["HTTPS_PROXY=a", "HTTPS_PROXY=b"],
            "--sidecar-env",
            "given twice",
        ),
    ];
    for (agent, env, flag, fix) in cases {
        let message = refused(agent, env);
        assert!(message.contains(flag), "{message}");
        assert!(message.contains(fix), "{message}");
    }
}
