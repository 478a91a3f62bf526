//! Policy mode: the injection as a MutatingAdmissionPolicy the API server runs itself (CEL, in
//! process, no webhook to keep alive), with a ValidatingAdmissionPolicy that denies at `kubectl
//! apply` what CEL can check. Kubernetes 1.36 or later (`admissionregistration.k8s.io/v1`).
//!
//! The policy cannot run our parser, so it does not render a plan: it copies the pod's
//! `secrets.k8s.aws/` annotations into the agent's environment (one variable each, named as its
//! key) and the agent parses them with the grammar the webhook uses
//! ([`crate::contract::PlanFields::parse_annotations`]): one parser, two carriers. What the pod
//! spec contributes (the agent's user and group, the files' mode, the containers that get the
//! mount, the volume's size) is computed here in CEL the way [`super::mutate`] computes it, from
//! the same constants; the agent container is built by the mutation's own functions
//! ([`super::agent_container_template`]) and rendered as CEL ([`super::cel`]).
//!
//! The operator's settings (image, pull policy, resources, the agent's environment) are one CEL
//! map, the policy's first variable ([`SETTINGS_VARIABLE`], [`settings`]); the rest of the policy
//! is the same for every install (the chart ships it as generated here, checked current by a
//! test, and sets that variable from its values). Not a parameters ConfigMap (`paramKind`): the
//! API server 1.36.3 stops its shared ConfigMap informer when the last policy using ConfigMap
//! parameters goes away, and every later one then finds no parameters until it restarts, so an
//! uninstall and install would refuse every annotated pod.
//!
//! The supported subset and what is denied instead: [`UNSUPPORTED`], README "Choosing a mode".
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::cel::{self, expr, optional};
use super::{MutationConfig, VolumeSize};
use crate::contract::{self, env};
use crate::spec::{self, size};

/// The API version of the policies and bindings (GA in Kubernetes 1.36).
pub const API_VERSION: &str = "admissionregistration.k8s.io/v1";
/// The oldest Kubernetes minor version (1.x) that runs policy mode.
pub const MIN_KUBERNETES_MINOR: u32 = 36;

/// The name of the policy's variable that holds the operator's settings: a CEL map of strings
/// (a JSON object of strings is one), keyed by [`param`].
pub const SETTINGS_VARIABLE: &str = "settings";

/// Keys of the settings map.
pub mod param {
    /// The agent's image.
    pub const IMAGE: &str = "image";
    /// Its `imagePullPolicy`.
    pub const IMAGE_PULL_POLICY: &str = "imagePullPolicy";
    /// CPU request.
    pub const CPU_REQUEST: &str = "cpuRequest";
    /// CPU limit (absent: none).
    pub const CPU_LIMIT: &str = "cpuLimit";
    /// Memory request.
    pub const MEMORY_REQUEST: &str = "memoryRequest";
    /// Memory limit.
    pub const MEMORY_LIMIT: &str = "memoryLimit";
    /// The agent's environment after its plan: `NAME=VALUE` lines, in order.
    pub const AGENT_ENV: &str = "agentEnv";
}

/// Annotations of features policy mode does not offer, with the feature's name: CEL cannot
/// express them well (env vars bound in every container with collision checks, a chosen set of
/// containers, the metrics port's Service wiring, a stated volume size checked against the
/// plan). The ValidatingAdmissionPolicy denies a pod that uses one, naming the feature and the
/// webhook mode.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    (spec::ENV, "env vars from secrets (fileKeyRef)"),
    (
        spec::CONTAINERS,
        "choosing the containers that get the secrets",
    ),
    (spec::METRICS_PORT, "the rotation sidecar's metrics"),
    (spec::METRICS_ADDRESS, "the rotation sidecar's metrics"),
    (spec::VOLUME_SIZE_LIMIT, "a stated volume size"),
];

/// Longest top-level file or directory name policy mode sizes the volume for (a longer one takes
/// a page of its own for its symlink, which CEL does not count).
pub const MAX_TOP_LEVEL_NAME: usize = 120;

/// Why the operator's settings cannot become policy settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamsError(String);

/// The settings map for the operator's validated settings.
pub fn settings(config: &MutationConfig) -> Result<BTreeMap<String, String>, ParamsError> {
    if config.volume_size != VolumeSize::Auto {
        return Err(ParamsError(
            "--volume-size-limit: policy mode sizes each pod's volume from its secrets (auto); \
             a fixed size needs the webhook mode"
                .to_owned(),
        ));
    }
    if config.metrics_port.is_some() {
        return Err(ParamsError(
            "--sidecar-metrics-port: the rotation sidecar's metrics need the webhook mode"
                .to_owned(),
        ));
    }
    if !config.native_sidecars || !config.env_files {
        return Err(ParamsError(
            "policy mode needs Kubernetes 1.36, which has native sidecars and env files: leave \
             --native-sidecars and --env-files on"
                .to_owned(),
        ));
    }
    let mut data = BTreeMap::new();
    data.insert(param::IMAGE.to_owned(), config.image.clone());
    data.insert(
        param::IMAGE_PULL_POLICY.to_owned(),
        config.image_pull_policy.clone(),
    );
    let quantity =
        |map: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
         key: &str| { map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone()) };
    for (name, value) in [
        (
            param::CPU_REQUEST,
            quantity(&config.resources.requests, "cpu"),
        ),
        (
            param::MEMORY_REQUEST,
            quantity(&config.resources.requests, "memory"),
        ),
        (param::CPU_LIMIT, quantity(&config.resources.limits, "cpu")),
        (
            param::MEMORY_LIMIT,
            quantity(&config.resources.limits, "memory"),
        ),
    ] {
        if let Some(value) = value {
            data.insert(name.to_owned(), value);
        }
    }
    let mut lines = Vec::new();
    for var in &config.agent_env {
        let value = var.value.clone().unwrap_or_default();
        if var.value_from.is_some() || value.contains('\n') || var.name.contains('=') {
            return Err(ParamsError(format!(
                "--sidecar-env {}: policy mode carries the agent's environment as NAME=VALUE \
                 lines, so a value may not hold a line break",
                var.name
            )));
        }
        lines.push(format!("{}={value}", var.name));
    }
    if !lines.is_empty() {
        data.insert(param::AGENT_ENV.to_owned(), lines.join("\n"));
    }
    Ok(data)
}

/// A CEL string literal.
fn lit(text: &str) -> String {
    cel::string(text)
}

/// `variables.a[?KEY]`: the annotation, optional.
fn annotation(key: &str) -> String {
    format!("variables.a[?{}]", lit(key))
}

/// The policy's variables, in order (later ones use earlier ones).
fn variables() -> Vec<(&'static str, String)> {
    let first_uid = contract::DEFAULT_UID;
    // The pages a secret's files take at most (super::volume::secret_pages), by store and format.
    let limit_pages = |limit: u64| size::pages(limit);
    let split_pages =
        |limit: u64| limit / size::PAGE_BYTES + size::SPLIT_FILES_ASSUMED.min(limit / 6);
    let (sm, ssm) = (spec::MAX_SECRET_BYTES as u64, size::MAX_PARAMETER_BYTES);
    vec![
        // Replaced by the install's settings ([`settings_expression`]).
        (SETTINGS_VARIABLE, "{}".to_owned()),
        ("a", "object.metadata.?annotations.orValue({})".to_owned()),
        (
            "carried",
            format!(
                "variables.a.filter(k, k.startsWith({}) && k != {})",
                lit(spec::PREFIX),
                lit(spec::STATUS)
            ),
        ),
        (
            "mountPath",
            format!(
                "'/' + {}.orValue({}).split('/').filter(s, s != '').join('/')",
                annotation(spec::MOUNT_PATH),
                lit(spec::DEFAULT_MOUNT_PATH)
            ),
        ),
        (
            "first",
            format!(
                "{}.orValue('first') != 'last'",
                annotation(spec::INIT_CONTAINER_POSITION)
            ),
        ),
        (
            "inits",
            "object.spec.?initContainers.orValue([])".to_owned(),
        ),
        // The containers that get the mount: every app container, and the init containers
        // that run after ours (super::selected_containers).
        (
            "mounted",
            "object.spec.containers + (variables.first ? variables.inits : [])".to_owned(),
        ),
        (
            "uids",
            "variables.mounted.map(c, c.?securityContext.?runAsUser.orValue(\
             object.spec.?securityContext.?runAsUser.orValue(-1)))"
                .to_owned(),
        ),
        // The one non-root uid every mounted container runs as, else -1 (super::security_for).
        (
            "sharedUid",
            "variables.uids[0] > 0 && variables.uids.all(u, u == variables.uids[0]) ? \
             variables.uids[0] : -1"
                .to_owned(),
        ),
        (
            "fsGroup",
            "object.spec.?securityContext.?fsGroup".to_owned(),
        ),
        (
            "runAsUser",
            format!("variables.sharedUid > 0 ? variables.sharedUid : {first_uid}"),
        ),
        (
            "runAsGroup",
            format!(
                "variables.fsGroup.hasValue() ? variables.fsGroup : (variables.sharedUid > 0 ? \
                 object.spec.?securityContext.?runAsGroup : optional.of({first_uid}))"
            ),
        ),
        (
            "fileMode",
            format!(
                "variables.fsGroup.hasValue() ? {} : (variables.sharedUid > 0 ? {} : {})",
                lit(contract::FileMode::GroupRead.as_str()),
                lit(contract::FileMode::OwnerRead.as_str()),
                lit(contract::FileMode::WorldRead.as_str())
            ),
        ),
        // The secrets, as the suffix of their secret-arn key ("" or ".<name>").
        (
            "secrets",
            format!(
                "variables.a.filter(k, k == {arn} || k.startsWith({arn_dot})).map(k, \
                 k.substring({len}))",
                arn = lit(spec::SECRET_ARN),
                arn_dot = lit(&format!("{}.", spec::SECRET_ARN)),
                len = spec::SECRET_ARN.len()
            ),
        ),
        // super::volume::needs for the subset: the secrets' files, the versions file; no env
        // file (env vars are webhook mode's), one link page (long names are denied).
        (
            "setPages",
            format!(
                "variables.secrets.map(s, variables.a[{arn} + s].matches('^arn:[^:]*:ssm:') ? \
                 ({fmt} + s].orValue('raw') == 'split' ? {ssm_split} : {ssm_pages}) : \
                 ({fmt} + s].orValue('raw') == 'split' ? {sm_split} : {sm_pages})).sum() + \
                 (variables.secrets.map(s, 2 * (size(variables.a[{arn} + s]) + 6 + \
                 size(variables.a[?{stage} + s].orValue(variables.a[?{id} + s].orValue('')))) \
                 + {version_bytes}).sum() + 2 + {page} - 1) / {page}",
                arn = lit(spec::SECRET_ARN),
                fmt = format!("variables.a[?{}", lit(spec::SECRET_FORMAT)),
                stage = lit(spec::VERSION_STAGE),
                id = lit(spec::VERSION_ID),
                ssm_split = split_pages(ssm),
                ssm_pages = limit_pages(ssm),
                sm_split = split_pages(sm),
                sm_pages = limit_pages(sm),
                version_bytes = super::volume::VERSION_ID_BYTES + 8,
                page = size::PAGE_BYTES,
            ),
        ),
        (
            "volumeMi",
            format!(
                "((variables.setPages * 2 + 1) * {page} * 5 / 4 + {mi} - 1) / {mi}",
                page = size::PAGE_BYTES,
                mi = size::MI
            ),
        ),
        // At least 1 Mi, in Gi when whole (spec::size::quantity).
        (
            "volumeSize",
            "variables.volumeMi < 1 ? '1Mi' : (variables.volumeMi % 1024 == 0 ? \
             string(variables.volumeMi / 1024) + 'Gi' : string(variables.volumeMi) + 'Mi')"
                .to_owned(),
        ),
        (
            "refresh",
            format!("{}.hasValue()", annotation(spec::REFRESH_INTERVAL)),
        ),
        (
            "restart",
            format!(
                "{}.orValue('false') == 'true'",
                annotation(spec::RESTART_ON_CHANGE)
            ),
        ),
        (
            "signal",
            format!("{}.hasValue()", annotation(spec::RELOAD_PROCESS)),
        ),
    ]
    .into_iter()
    .chain(identity_variables())
    .collect()
}

/// The AWS identity an identity webhook that ran before us (or the pod's author) gave the pod,
/// copied as [`super::copy_aws_identity`] copies it: each variable of the first container that
/// carries it (`identityEnv`), and the mount of each token file's volume, the longest mount
/// path that holds it, unless the agent has a mount of that name or path (`identityMount<i>`).
fn identity_variables() -> Vec<(&'static str, String)> {
    const MOUNT_VARS: [&str; 2] = ["identityMount0", "identityMount1"];
    const HOLDING_VARS: [&str; 2] = ["identityHolding0", "identityHolding1"];
    let carries = |name: &str| format!("c.?env.orValue([]).exists(e, e.name == {})", lit(name));
    let holder = |name: &str| format!("variables.allContainers.filter(c, {})[0]", carries(name));
    let var = |name: &str| format!("{}.env.filter(e, e.name == {})[0]", holder(name), lit(name));
    let has = |name: &str| format!("variables.allContainers.exists(c, {})", carries(name));
    let identity_env = contract::AWS_IDENTITY_ENV
        .iter()
        .map(|name| format!("({} ? [{}] : [])", has(name), var(name)))
        .collect::<Vec<_>>()
        .join(" + ");
    let mut out = vec![
        (
            "allContainers",
            "object.spec.containers + object.spec.?initContainers.orValue([])".to_owned(),
        ),
        ("identityEnv", identity_env),
    ];
    let tokens: Vec<&str> = contract::AWS_IDENTITY_ENV
        .iter()
        .copied()
        .filter(|n| contract::AWS_TOKEN_FILE_ENV.contains(n))
        .collect();
    debug_assert_eq!(tokens.len(), MOUNT_VARS.len());
    let mut names = format!(
        "[{}, {}]",
        lit(contract::VOLUME_NAME),
        lit(contract::NO_TOKEN_VOLUME_NAME)
    );
    let mut paths = format!("[variables.mountPath, {}]", lit(contract::API_TOKEN_DIR));
    for ((name, variable), holding_var) in tokens.into_iter().zip(MOUNT_VARS).zip(HOLDING_VARS) {
        let holding = format!(
            "({has} ? {holder}.?volumeMounts.orValue([]).filter(m, {var}.?value.orValue('')\
             .startsWith((m.mountPath.endsWith('/') ? m.mountPath.substring(0, size(m.mountPath) \
             - 1) : m.mountPath) + '/')) : [])",
            has = has(name),
            holder = holder(name),
            var = var(name)
        );
        out.push((holding_var, holding));
        // The longest (the last of the longest, as max_by_key), if the agent lacks it.
        let longest = format!(
            "variables.{holding_var}.filter(m, variables.{holding_var}.all(o, size(o.mountPath) \
             <= size(m.mountPath)))"
        );
        out.push((
            variable,
            format!(
                "(size({longest}) == 0 ? [] : [{longest}[size({longest}) - 1]]).filter(m, \
                 !(m.name in {names}) && !(m.mountPath in {paths}))"
            ),
        ));
        names = format!("{names} + variables.{variable}.map(m, m.name)");
        paths = format!("{paths} + variables.{variable}.map(m, m.mountPath)");
    }
    out
}

/// The agent container as CEL: [`super::agent_container_template`] with the parts admission
/// computes as expressions.
fn agent_container() -> String {
    let container = super::agent_container_template(
        expr(&format!("variables.settings[{}]", lit(param::IMAGE))),
        expr(&format!(
            "variables.settings[{}]",
            lit(param::IMAGE_PULL_POLICY)
        )),
        "",
    );
    let mut value = serde_json::to_value(&container).unwrap_or_default();
    let env_type = "Object.spec.initContainers.env";
    value["env"] = json!(expr(&format!(
        "variables.carried.map(k, {env_type}{{name: k, value: variables.a[k]}}) + \
         [{env_type}{{name: {file_mode}, value: variables.fileMode}}, \
         {env_type}{{name: {plan_from}, value: {annotations}}}] + \
         (variables.settings.?{agent_env}.orValue('') == '' ? [] : \
         variables.settings[{agent_env_lit}].split('\\n').map(l, {env_type}{{\
         name: l.substring(0, l.indexOf('=')), value: l.substring(l.indexOf('=') + 1)}})) + \
         variables.identityEnv.map(e, {env_type}{{name: e.name, ?value: e.?value, \
         ?valueFrom: e.?valueFrom}})",
        agent_env = param::AGENT_ENV,
        agent_env_lit = lit(param::AGENT_ENV),
        file_mode = lit(env::FILE_MODE),
        plan_from = lit(env::PLAN_FROM),
        annotations = lit(contract::PLAN_FROM_ANNOTATIONS)
    )));
    value["resources"] = json!(optional(&format!(
        "has(object.spec.resources) ? optional.none() : \
         optional.of(Object.spec.initContainers.resources{{\
         requests: {{\"cpu\": variables.settings[{cpu}], \"memory\": variables.settings[{memory}]}}, \
         limits: variables.settings[?{cpu_limit}].orValue('') == '' ? \
         {{\"memory\": variables.settings[{memory_limit}]}} : \
         {{\"cpu\": variables.settings[{cpu_limit}], \"memory\": variables.settings[{memory_limit}]}}}})",
        cpu = lit(param::CPU_REQUEST),
        memory = lit(param::MEMORY_REQUEST),
        cpu_limit = lit(param::CPU_LIMIT),
        memory_limit = lit(param::MEMORY_LIMIT),
    )));
    value["securityContext"]["runAsUser"] = json!(expr("variables.runAsUser"));
    value["securityContext"]["runAsGroup"] = json!(optional("variables.runAsGroup"));
    // The agent's mount of the volume at the pod's mount path (the template's first mount).
    value["volumeMounts"][0]["mountPath"] = json!(expr("variables.mountPath"));
    // And the AWS identity's token mounts (super::copy_aws_identity).
    let mounts_type = "Object.spec.initContainers.volumeMounts";
    value["volumeMounts"] = json!(expr(&format!(
        "{} + (variables.identityMount0 + variables.identityMount1).map(m, \
         {mounts_type}{{name: m.name, mountPath: m.mountPath, readOnly: true}})",
        cel::construct(&value["volumeMounts"], mounts_type)
    )));
    // Rotation: the native sidecar (super::inject).
    let sidecar = super::native_sidecar_fields(true);
    let restarting = sidecar
        .restart_policy_rules
        .as_ref()
        .map(|rules| serde_json::to_value(rules).unwrap_or_default());
    value["restartPolicy"] = json!(optional(&format!(
        "variables.refresh ? optional.of({}) : optional.none()",
        lit(sidecar.restart_policy.as_deref().unwrap_or_default())
    )));
    let probe = serde_json::to_value(&sidecar.startup_probe).unwrap_or_default();
    value["startupProbe"] = json!(optional(&format!(
        "variables.refresh ? optional.of({}) : optional.none()",
        cel::construct(&probe, "Object.spec.initContainers.startupProbe")
    )));
    if let Some(rules) = restarting {
        value["restartPolicyRules"] = json!(optional(&format!(
            "variables.refresh && variables.restart ? optional.of({}) : optional.none()",
            cel::construct(&rules, "Object.spec.initContainers.restartPolicyRules")
        )));
    }
    cel::construct(&value, "Object.spec.initContainers")
}

/// A JSON Patch `add` in CEL.
fn add(path: &str, value: &str) -> String {
    format!("JSONPatch{{op: \"add\", path: {path}, value: {value}}}")
}

/// The mutation: the same operations as [`super::inject`], in the same order, so the stored pod
/// is the webhook's but for the plan's carrier.
fn patch_expression() -> String {
    let volume = |name: &str, size: &str| {
        format!(
            "Object.spec.volumes{{name: {}, emptyDir: Object.spec.volumes.emptyDir{{medium: \
             \"Memory\", sizeLimit: {size}}}}}",
            lit(name)
        )
    };
    let no_token = serde_json::to_value(super::no_token_volume()).unwrap_or_default();
    let mount = "Object.spec.containers.volumeMounts{name: \"%VOL%\", mountPath: \
                 variables.mountPath, readOnly: true}"
        .replace("%VOL%", contract::VOLUME_NAME);
    let init_mount = mount.replace("Object.spec.containers", "Object.spec.initContainers");
    let status = format!(
        "/metadata/annotations/{}",
        spec::STATUS.replace('~', "~0").replace('/', "~1")
    );
    [
        format!("[{}]", add(&lit(&status), &lit(spec::STATUS_INJECTED))),
        format!(
            "(has(object.spec.volumes) ? [] : [{}])",
            add("\"/spec/volumes\"", "[]")
        ),
        format!(
            "[{}, {}]",
            add(
                "\"/spec/volumes/-\"",
                &volume(contract::VOLUME_NAME, "variables.volumeSize")
            ),
            add(
                "\"/spec/volumes/-\"",
                &cel::construct(&no_token, "Object.spec.volumes")
            )
        ),
        format!(
            "object.spec.containers.transformList(i, c, has(c.volumeMounts) ? [] : [{}]).flatten()",
            add("'/spec/containers/' + string(i) + '/volumeMounts'", "[]")
        ),
        format!(
            "object.spec.containers.transformList(i, c, {})",
            add(
                "'/spec/containers/' + string(i) + '/volumeMounts/-'",
                &mount
            )
        ),
        format!(
            "(variables.first ? variables.inits : []).transformList(i, c, has(c.volumeMounts) ? \
             [] : [{}]).flatten()",
            add(
                "'/spec/initContainers/' + string(i) + '/volumeMounts'",
                "[]"
            )
        ),
        format!(
            "(variables.first ? variables.inits : []).transformList(i, c, {})",
            add(
                "'/spec/initContainers/' + string(i) + '/volumeMounts/-'",
                &init_mount
            )
        ),
        format!(
            "(variables.refresh && variables.signal && !has(object.spec.shareProcessNamespace) ? \
             [{}] : [])",
            add("\"/spec/shareProcessNamespace\"", "true")
        ),
        format!(
            "(has(object.spec.initContainers) ? [] : [{}])",
            add("\"/spec/initContainers\"", "[]")
        ),
        format!(
            "[{}]",
            add(
                "variables.first ? '/spec/initContainers/0' : '/spec/initContainers/-'",
                &agent_container()
            )
        ),
    ]
    .join(" +\n")
}

/// Whether the pod asks for injection, as the grammar decides
/// ([`spec::InjectionSpec::from_annotations_within`]): not switched off, and switched on or
/// naming a secret (the seed's manifests work with or without the switch). A switch of another
/// value matches too: the ValidatingAdmissionPolicy denies it.
fn opted_in() -> String {
    format!(
        "object.metadata.?annotations[?{switch}].orValue('') != 'disabled' && \
         (object.metadata.?annotations[?{switch}].hasValue() || \
         object.metadata.?annotations.orValue({{}}).exists(k, k == {arn} || k.startsWith({arn_dot})))",
        switch = lit(spec::INJECTOR_WEBHOOK),
        arn = lit(spec::SECRET_ARN),
        arn_dot = lit(&format!("{}.", spec::SECRET_ARN))
    )
}

/// Only pods that opt in and are not injected yet (the API server re-invokes the policy after
/// later webhooks: the second pass must change nothing).
fn opted_in_conditions() -> Value {
    json!([
        {
            "name": "opted-in",
            "expression": opted_in(),
        },
        {
            // A Windows pod is the VAP's to deny with its message: injected, the agent's Linux
            // security context would fail the pod's validation first.
            "name": "linux",
            "expression": "object.spec.?os.?name.orValue('linux') == 'linux'",
        },
        {
            "name": "not-injected",
            "expression": format!(
                "object.metadata.?annotations[?{}].orValue('') != {}",
                lit(spec::STATUS),
                lit(spec::STATUS_INJECTED)
            ),
        },
    ])
}

fn pod_rules() -> Value {
    json!({
        "resourceRules": [{
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
        }],
    })
}

/// The MutatingAdmissionPolicy's `spec`: the same for every install.
pub fn mutating_policy_spec() -> Value {
    json!({
        "matchConstraints": pod_rules(),
        "matchConditions": opted_in_conditions(),
        "failurePolicy": "Fail",
        "reinvocationPolicy": "IfNeeded",
        "variables": variables()
            .into_iter()
            .map(|(name, expression)| json!({"name": name, "expression": expression}))
            .collect::<Vec<_>>(),
        "mutations": [{
            "patchType": "JSONPatch",
            "jsonPatch": {"expression": patch_expression()},
        }],
    })
}

/// The message of an annotation error in CEL, as [`spec::AnnotationError`] displays it.
fn annotation_message(key: &str, problem: &str, fix: &str) -> String {
    format!("'annotation ' + {key} + ': ' + {problem} + '; ' + {fix}")
}

/// The ValidatingAdmissionPolicy's validations: what CEL can check of the annotations, with the
/// webhook's messages; the agent checks everything again at pod start.
fn validations() -> Vec<Value> {
    let known: Vec<&str> = spec::KNOWN_KEYS.to_vec();
    let known_list = format!(
        "[{}]",
        known.iter().map(|k| lit(k)).collect::<Vec<_>>().join(", ")
    );
    let secret_bases = format!(
        "[{}]",
        spec::SECRET_KEYS
            .iter()
            .map(|k| lit(&format!("{k}.")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let unknown = format!(
        "variables.a.filter(k, k.startsWith({prefix}) && !(k in {known_list}) && \
         !{secret_bases}.exists(b, k.startsWith(b)))",
        prefix = lit(spec::PREFIX)
    );
    let switch = annotation(spec::INJECTOR_WEBHOOK);
    let mut out = vec![
        json!({
            "expression": format!("{switch}.orValue('enabled') in ['enabled', 'disabled']"),
            "messageExpression": annotation_message(
                &lit(spec::INJECTOR_WEBHOOK),
                &format!("'value ' + strings.quote({switch}.orValue('')) + ' is not recognised'"),
                &lit("use \"enabled\" or \"disabled\""),
            ),
            "reason": "Invalid",
        }),
        json!({
            "expression": format!("size({unknown}) == 0"),
            "messageExpression": format!(
                "{unknown}.map(k, 'annotation ' + k + ': is not a secret-inject annotation; ' + \
                 ({known_list}.exists(n, n.lowerAscii() == k.lowerAscii()) ? 'did you mean ' + \
                 {known_list}.filter(n, n.lowerAscii() == k.lowerAscii())[0] + '?' : \
                 'see the annotations in the README'))[0]"
            ),
            "reason": "Invalid",
        }),
    ];
    for (key, feature) in UNSUPPORTED {
        let keys = format!(
            "variables.a.filter(k, k == {key} || k.startsWith({key_dot}))",
            key = lit(key),
            key_dot = lit(&format!("{key}."))
        );
        out.push(json!({
            "expression": format!("size({keys}) == 0"),
            "messageExpression": annotation_message(
                &format!("{keys}[0]"),
                &lit(&format!("{feature} is not offered in policy mode (the MutatingAdmissionPolicy)")),
                &lit("install secret-inject in webhook mode (chart value mode: webhook) for this feature, or remove the annotation"),
            ),
            "reason": "Invalid",
        }));
    }
    let secrets = format!(
        "variables.a.filter(k, k == {arn} || k.startsWith({arn_dot}))",
        arn = lit(spec::SECRET_ARN),
        arn_dot = lit(&format!("{}.", spec::SECRET_ARN))
    );
    out.push(json!({
        "expression": format!("size({secrets}) > 0"),
        "messageExpression": annotation_message(
            &lit(spec::SECRET_ARN),
            &lit(&format!("is missing, but {} is \"enabled\"", spec::INJECTOR_WEBHOOK)),
            &lit("add the ARN of the Secrets Manager secret to fetch (secret-arn, or secret-arn.<name> for each of several), or remove the opt-in annotation"),
        ),
        "reason": "Invalid",
    }));
    let arn_pattern = "^arn:aws(-[a-z]+)*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+|ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+)$";
    out.push(json!({
        "expression": format!("{secrets}.all(k, variables.a[k].matches({}))", lit(arn_pattern)),
        "messageExpression": annotation_message(
            &format!("{secrets}.filter(k, !variables.a[k].matches({}))[0]", lit(arn_pattern)),
            &lit("is not the ARN of a Secrets Manager secret or a Parameter Store parameter"),
            &lit("give arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME or arn:aws:ssm:REGION:ACCOUNT:parameter/NAME"),
        ),
        "reason": "Invalid",
    }));
    let formats = format!(
        "[{}]",
        spec::OutputFormat::ALL
            .iter()
            .map(|f| lit(f.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let format_keys = format!(
        "variables.a.filter(k, (k == {f} || k.startsWith({f_dot})) && !(variables.a[k] in {formats}))",
        f = lit(spec::SECRET_FORMAT),
        f_dot = lit(&format!("{}.", spec::SECRET_FORMAT))
    );
    out.push(json!({
        "expression": format!("size({format_keys}) == 0"),
        "messageExpression": annotation_message(
            &format!("{format_keys}[0]"),
            &format!("'value ' + strings.quote(variables.a[{format_keys}[0]]) + ' is not recognised'"),
            &lit("use raw (default), json, env or split"),
        ),
        "reason": "Invalid",
    }));
    let interval = annotation(spec::REFRESH_INTERVAL);
    out.push(json!({
        "expression": format!(
            "!{interval}.hasValue() || ({interval}.value().matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$') && \
             duration(string({interval}.value())) >= duration('{min}s') && duration(string({interval}.value())) <= duration('{max}s'))",
            min = spec::MIN_REFRESH.as_secs(),
            max = spec::MAX_REFRESH.as_secs()
        ),
        "messageExpression": annotation_message(
            &lit(spec::REFRESH_INTERVAL),
            &lit("is not a duration from 30s to 24h"),
            &lit("give an interval such as 5m or 1h"),
        ),
        "reason": "Invalid",
    }));
    let signals = format!(
        "[{}]",
        spec::RELOAD_SIGNALS
            .iter()
            .map(|s| lit(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push(json!({
        "expression": format!(
            "!{0}.hasValue() || {0}.value() in {signals}",
            annotation(spec::RELOAD_SIGNAL)
        ),
        "messageExpression": annotation_message(
            &lit(spec::RELOAD_SIGNAL),
            &lit("is not a signal secret-inject sends"),
            &lit(&format!("use one of {}", spec::RELOAD_SIGNALS.join(", "))),
        ),
        "reason": "Invalid",
    }));
    // The fixes as the webhook words them (spec).
    for (key, values, fix) in [
        (
            spec::RESTART_ON_CHANGE,
            &["true", "false"][..],
            "use \"true\" or \"false\"",
        ),
        (
            spec::INIT_CONTAINER_POSITION,
            &["first", "last"][..],
            "use \"first\" (default) or \"last\"",
        ),
    ] {
        let list = format!(
            "[{}]",
            values.iter().map(|v| lit(v)).collect::<Vec<_>>().join(", ")
        );
        out.push(json!({
            "expression": format!("!{0}.hasValue() || {0}.value() in {list}", annotation(key)),
            "messageExpression": annotation_message(
                &lit(key),
                &format!("'value ' + strings.quote({}.value()) + ' is not recognised'", annotation(key)),
                &lit(fix),
            ),
            "reason": "Invalid",
        }));
    }
    let mount = annotation(spec::MOUNT_PATH);
    out.push(json!({
        "expression": format!(
            "!{mount}.hasValue() || ({mount}.value().startsWith('/') && variables.mountPath != '/' \
             && !{mount}.value().split('/').exists(s, s == '..' || s == '.'))"
        ),
        "messageExpression": annotation_message(
            &lit(spec::MOUNT_PATH),
            &lit("is not an absolute path of a directory below / without . or .. segments"),
            &lit("give a directory of its own, such as /var/run/secrets/app"),
        ),
        "reason": "Invalid",
    }));
    let names = format!(
        "variables.a.filter(k, (k == {f} || k.startsWith({f_dot})) && \
         size(variables.a[k].split('/')[0]) > {max})",
        f = lit(spec::SECRET_FILENAME),
        f_dot = lit(&format!("{}.", spec::SECRET_FILENAME)),
        max = MAX_TOP_LEVEL_NAME
    );
    out.push(json!({
        "expression": format!("size({names}) == 0"),
        "messageExpression": annotation_message(
            &format!("{names}[0]"),
            &lit(&format!("a top-level file or directory name longer than {MAX_TOP_LEVEL_NAME} characters is not offered in policy mode")),
            &lit("shorten it, or install secret-inject in webhook mode (chart value mode: webhook)"),
        ),
        "reason": "Invalid",
    }));
    out.push(json!({
        "expression": format!(
            "!{}.hasValue() || object.spec.?shareProcessNamespace.orValue(true)",
            annotation(spec::RELOAD_PROCESS)
        ),
        "messageExpression": annotation_message(
            &lit(spec::RELOAD_PROCESS),
            &lit("signalling a process of another container needs a shared process namespace, and the pod sets spec.shareProcessNamespace: false"),
            &lit("remove shareProcessNamespace: false, or use secrets.k8s.aws/reload-url instead"),
        ),
        "reason": "Invalid",
    }));
    out.push(json!({
        "expression": "object.spec.?os.?name.orValue('linux') == 'linux'",
        "messageExpression": lit(&format!(
            "spec.os.name: secret-inject's agent is a Linux-only container; do not annotate \
             Windows pods with secrets.k8s.aws/ annotations (or set {}: disabled), and read the \
             secret in the app instead",
            spec::INJECTOR_WEBHOOK
        )),
        "reason": "Invalid",
    }));
    out
}

/// The ValidatingAdmissionPolicy's `spec`: the same for every install.
pub fn validating_policy_spec() -> Value {
    json!({
        "matchConstraints": pod_rules(),
        "matchConditions": [opted_in_conditions()[0].clone()],
        "failurePolicy": "Fail",
        "variables": [{"name": "a", "expression": "object.metadata.?annotations.orValue({})"},
                      {"name": "mountPath", "expression": variables().into_iter().find(|(n, _)| *n == "mountPath").map(|(_, e)| e).unwrap_or_default()}],
        "validations": validations(),
    })
}

/// What `secret-inject admission-policy` prints.
#[derive(Debug, Clone)]
pub struct Install<'a> {
    /// Name of the policies and their bindings.
    pub name: &'a str,
    /// The bindings' namespace selector (the chart's, or every namespace but kube-system).
    pub namespace_selector: Value,
}

/// The settings variable's expression: the map as a JSON object of strings, which is a CEL map
/// literal.
pub fn settings_expression(settings: &BTreeMap<String, String>) -> String {
    serde_json::to_string(settings).unwrap_or_default()
}

/// [`mutating_policy_spec`] with the install's settings.
pub fn mutating_policy_spec_with(settings: &BTreeMap<String, String>) -> Value {
    let mut spec = mutating_policy_spec();
    if let Some(variables) = spec["variables"].as_array_mut() {
        for variable in variables {
            if variable["name"] == SETTINGS_VARIABLE {
                variable["expression"] = json!(settings_expression(settings));
            }
        }
    }
    spec
}

/// The objects of a policy-mode install: the two policies and their bindings.
pub fn objects(install: &Install<'_>, config: &MutationConfig) -> Result<Vec<Value>, ParamsError> {
    let labels = json!({"app.kubernetes.io/name": "secret-inject", "app.kubernetes.io/component": "admission-policy"});
    let meta = json!({"name": install.name, "labels": labels});
    let matched = json!({"namespaceSelector": install.namespace_selector});
    Ok(vec![
        json!({"apiVersion": API_VERSION, "kind": "MutatingAdmissionPolicy", "metadata": meta,
               "spec": mutating_policy_spec_with(&settings(config)?)}),
        json!({"apiVersion": API_VERSION, "kind": "MutatingAdmissionPolicyBinding", "metadata": meta, "spec": {
            "policyName": install.name,
            "matchResources": matched,
        }}),
        json!({"apiVersion": API_VERSION, "kind": "ValidatingAdmissionPolicy", "metadata": meta, "spec": validating_policy_spec()}),
        json!({"apiVersion": API_VERSION, "kind": "ValidatingAdmissionPolicyBinding", "metadata": meta, "spec": {
            "policyName": install.name,
            "validationActions": ["Deny"],
            "matchResources": matched,
        }}),
    ])
}

/// The binding's default namespace selector: every namespace but kube-system.
pub fn default_namespace_selector() -> Value {
    json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::Settings;

    fn config(settings: Settings<'_>) -> MutationConfig {
        MutationConfig::new(&settings).unwrap()
    }

    #[test]
    fn params_carry_the_operator_settings_and_refuse_what_policy_mode_cannot_honour() {
        let env = ["HTTPS_PROXY=http://proxy:3128".to_owned()];
        let data = settings(&config(Settings {
            image: "registry.example/secret-inject:1",
            cpu_limit: Some("100m"),
            agent_env: &env,
            agent_log_level: Some("debug"),
            ..Settings::default()
        }))
        .unwrap();
        assert_eq!(data[param::IMAGE], "registry.example/secret-inject:1");
        assert_eq!(data[param::IMAGE_PULL_POLICY], "IfNotPresent");
        assert_eq!(data[param::CPU_REQUEST], "10m");
        assert_eq!(data[param::CPU_LIMIT], "100m");
        assert_eq!(data[param::MEMORY_LIMIT], "32Mi");
        assert_eq!(
            data[param::AGENT_ENV],
            "SECRET_INJECT_LOG_LEVEL=debug\nHTTPS_PROXY=http://proxy:3128"
        );
        for (settings, flag) in [
            (
                Settings {
                    metrics_port: Some("9102"),
                    ..Settings::default()
                },
                "--sidecar-metrics-port",
            ),
            (
                Settings {
                    volume_size_limit: "8Mi",
                    ..Settings::default()
                },
                "--volume-size-limit",
            ),
            (
                Settings {
                    native_sidecars: false,
                    ..Settings::default()
                },
                "--native-sidecars",
            ),
        ] {
            let err = super::settings(&config(settings)).unwrap_err();
            assert!(err.to_string().contains(flag), "{err}");
        }
    }

    #[test]
    fn the_policies_name_the_contract_once() {
        let mutating = mutating_policy_spec().to_string();
        for name in [
            contract::CONTAINER_NAME,
            contract::VOLUME_NAME,
            contract::NO_TOKEN_VOLUME_NAME,
            contract::BINARY_PATH,
            contract::AGENT_SUBCOMMAND,
            contract::PROBE_SUBCOMMAND,
            env::FILE_MODE,
            env::PLAN_FROM,
            spec::STATUS,
        ] {
            assert!(mutating.contains(name), "the policy lacks {name}");
        }
        let validating = validating_policy_spec().to_string();
        for (key, _) in UNSUPPORTED {
            assert!(validating.contains(key), "no denial for {key}");
        }
        // Every object carries the names given; the settings are the first variable.
        let objects = objects(
            &Install {
                name: "si",
                namespace_selector: default_namespace_selector(),
            },
            &MutationConfig::default(),
        )
        .unwrap();
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "MutatingAdmissionPolicy",
                "MutatingAdmissionPolicyBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
        let first = &objects[0]["spec"]["variables"][0];
        assert_eq!(first["name"], SETTINGS_VARIABLE);
        let map: BTreeMap<String, String> =
            serde_json::from_str(first["expression"].as_str().unwrap()).unwrap();
        assert_eq!(map, super::settings(&MutationConfig::default()).unwrap());
        assert!(objects[1]["spec"].get("paramRef").is_none());
        assert!(objects.iter().all(|o| o["metadata"]["name"] == "si"));
    }
}
