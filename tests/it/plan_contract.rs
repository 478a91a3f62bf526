//! The contract between the webhook and the agent, through the parser production uses: random
//! plans (from the random-pod generator's valid annotation sets) render into the injected
//! container's environment and the agent's own command-line parser reads them back to the same
//! plan, every field; the container `mutate` really injects parses back the same way.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use secret_inject::cli::AgentArgs;
use secret_inject::contract::{
    self, Carrier, FileMode, Plan, PlanError, PodFields, SecretFields, SecretPlan, env,
};
use secret_inject::mutate::{MutationConfig, mutate};
use secret_inject::spec::{InjectionSpec, Request};
use serde_json::Value;

use crate::common::random_pod::{self, Case};

/// The plan the webhook resolves from a valid case's annotations, with `file_mode`.
fn plan_of(case: &Case, file_mode: FileMode) -> Plan {
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(case.pod["metadata"]["annotations"].clone()).unwrap();
    let Ok(Request::Inject(injection)) = InjectionSpec::from_annotations(Some(&annotations)) else {
        panic!("a valid set asks for injection: {annotations:?}");
    };
    Plan {
        secrets: injection.secrets.iter().map(SecretPlan::for_spec).collect(),
        output_dir: injection.mount_path.clone(),
        file_mode,
        failover_region: injection.failover_region.clone(),
        refresh: injection.refresh.clone(),
    }
}

/// Read rendered variables with the agent's own parser.
fn agent_reads<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Result<Plan, PlanError>, String> {
    Ok(AgentArgs::from_rendered(vars)?.plan_fields().parse())
}

/// The agent container of a mutated pod (init container or classic sidecar).
fn injected_agent(pod: &Value) -> Container {
    let metadata: ObjectMeta = serde_json::from_value(pod["metadata"].clone()).unwrap();
    let spec: PodSpec = serde_json::from_value(pod["spec"].clone()).unwrap();
    let mutation = mutate(
        &(&metadata).into(),
        &(&spec).into(),
        &MutationConfig::default(),
    )
    .unwrap()
    .patch
    .expect("a valid set is injected");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.to_patch()).unwrap();
    let patched: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched).unwrap();
    let spec = patched.spec.unwrap();
    spec.init_containers
        .into_iter()
        .flatten()
        .chain(spec.containers)
        .find(|c| c.name == contract::CONTAINER_NAME || c.name == contract::SIDECAR_NAME)
        .expect("the patch adds the agent")
}

fn file_mode() -> impl Strategy<Value = FileMode> {
    prop_oneof![
        Just(FileMode::OwnerRead),
        Just(FileMode::GroupRead),
        Just(FileMode::WorldRead),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Render, then parse with the agent's command-line parser: the same plan, every field. The
    /// container that `mutate` injects for the same pod parses to the same secrets, directory,
    /// failover region and rotation.
    #[test]
    fn random_plans_round_trip_through_the_agents_parser(
        case in random_pod::case().prop_filter("a valid set", Case::valid),
        mode in file_mode(),
    ) {
        let plan = plan_of(&case, mode);
        let rendered = plan.env();
        let parsed = agent_reads(rendered.iter().map(|(n, v)| (*n, v.as_str())));
        prop_assert_eq!(&parsed, &Ok(Ok(plan.clone())), "rendered: {:?}", rendered);

        let agent = injected_agent(&case.pod);
        let vars: Vec<(&str, &str)> = agent
            .env
            .iter()
            .flatten()
            .filter(|v| !contract::AWS_IDENTITY_ENV.contains(&v.name.as_str()))
            .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or_default()))
            .collect();
        let injected = agent_reads(vars.iter().copied()).unwrap().unwrap();
        prop_assert_eq!(
            &injected,
            &Plan { file_mode: injected.file_mode, ..plan },
            "injected env: {:?}", vars
        );
    }
}

/// The generator's valid sets reach every field of both carriers: each flat variable is
/// rendered, and each key of a named secret's object is, in some plan. A field added to the
/// contract fails here until the generator (`common::random_pod`) sets it.
#[test]
fn the_round_trip_covers_every_field_of_the_contract() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = random_pod::case();
    let mut variables = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut valid = 0;
    for _ in 0..3000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        if !case.valid() {
            continue;
        }
        valid += 1;
        for (name, value) in plan_of(&case, FileMode::OwnerRead).env() {
            variables.insert(name);
            if name == env::SECRETS {
                let named: Vec<BTreeMap<String, String>> = serde_json::from_str(&value).unwrap();
                keys.extend(named.into_iter().flat_map(BTreeMap::into_keys));
            }
        }
    }
    assert!(valid > 500, "{valid} valid sets");
    let fields = SecretFields::FIELDS.iter().chain(PodFields::FIELDS);
    let missing_flat: Vec<&str> = fields
        .clone()
        .filter_map(|f| f.flat)
        .map(|f| f.env)
        // The other carrier's switch: policy mode's admission policy sets it, the webhook never
        // does (src/mutate/policy.rs checks the policy carries it).
        .filter(|name| *name != env::PLAN_FROM)
        .filter(|name| !variables.contains(name))
        .collect();
    let missing_json: Vec<&str> = fields
        .filter_map(|f| f.json)
        .filter(|key| !keys.contains(*key))
        .collect();
    assert!(
        missing_flat.is_empty() && missing_json.is_empty(),
        "never rendered: variables {missing_flat:?}, keys {missing_json:?}"
    );
}
