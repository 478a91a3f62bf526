//! The least-privilege IAM policy for the secrets and parameters that manifests ask for: one
//! policy document per ServiceAccount (`secret-inject iam-policy -f FILE`).
//!
//! Pure: it reads the pod templates that [`super::pod_templates`] finds (the walker `inject`
//! uses), parses their annotations with the grammar the webhook uses, and allows exactly the
//! calls the agent says it makes for that plan ([`crate::agent::sources::calls`], with the
//! agent's default batch threshold), whatever the occasion (start, batch fallback, failover,
//! rotation):
//!
//! - `secretsmanager:GetSecretValue` on each Secrets Manager secret, and, for a pod with
//!   `secrets.k8s.aws/failover-region`, on its replica in that region (the same ARN with the
//!   region replaced), which the agent reads when the primary region is unavailable.
//! - `secretsmanager:BatchGetSecretValue` on `*`, only for a ServiceAccount with a pod whose
//!   agent makes that call. The action has no resource-level permissions; it grants no secret
//!   by itself, because Secrets Manager also checks `GetSecretValue` on each secret.
//! - `secretsmanager:DescribeSecret` on the secrets (and replicas) a rotating agent watches.
//! - `ssm:GetParameters` on each Parameter Store parameter (the agent always decrypts).
//!
//! IAM matches a policy's resource against a secret's full ARN, which ends in `-` and six
//! random characters. A partial ARN (without them; Secrets Manager accepts those) is widened
//! with `-??????`, which matches every incarnation of that one secret and no other. A name
//! that itself ends in `-` and six letters or digits is taken for a full ARN: Secrets Manager
//! has the same ambiguity and documents it; when those six are a word or a number, a note says
//! so ([`SecretArn::is_partial`], [`SecretArn::is_ambiguous`]).
//!
//! What the manifests cannot say is reported as notes: `kms:Decrypt` on customer-managed KMS
//! keys, whose ARNs are not in any manifest. A policy for a namespace's `default`
//! ServiceAccount is reported as a warning; one larger than IAM accepts for its
//! [`PolicyType`] is an error ([`Policies::check_size`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::{InjectError, PodTemplate, pod_templates};
use crate::agent::sources::{self, AwsCall, Occasion, Operation};
use crate::contract::{Plan, SecretId, defaults};
use crate::mutate::secret::WriterConfig;
use crate::spec::{AnnotationError, InjectionSpec, Request, SecretArn};

/// The IAM policy language version of every document.
pub const POLICY_VERSION: &str = "2012-10-17";

/// Where the printed policy is going to live in IAM, which decides how large it may be. IAM
/// counts characters without whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyType {
    /// A customer managed policy (`aws iam create-policy`, then attached to the role): at most
    /// 6,144 characters. The default: a policy that fits here fits an inline one too.
    Managed,
    /// An inline policy of the role (`aws iam put-role-policy`): at most 10,240 characters, for
    /// all the role's inline policies together.
    Inline,
}

impl PolicyType {
    /// The most characters (whitespace not counted) IAM accepts.
    pub fn max_chars(self) -> usize {
        match self {
            PolicyType::Managed => 6144,
            PolicyType::Inline => 10240,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            PolicyType::Managed => "a customer managed policy (aws iam create-policy)",
            PolicyType::Inline => {
                "the inline policies of one role together (aws iam put-role-policy)"
            }
        }
    }
}

/// What IAM appends to a secret's name in its ARN: `-` and six random characters.
const SUFFIX_WILDCARD: &str = "-??????";

/// Why no policy could be derived. Names the document and the object, like
/// [`InjectError`]; the cause is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The manifests do not parse, or a pod template is not a valid pod.
    #[error(transparent)]
    Manifest(#[from] InjectError),
    /// A pod's annotations are invalid (the webhook would deny the pod).
    #[error("document {document} ({object})")]
    Annotation {
        /// 1-based document number.
        document: usize,
        /// `Kind/name`.
        object: String,
        /// The annotation and what is wrong with it.
        #[source]
        source: AnnotationError,
    },
    /// A policy is larger than IAM accepts.
    #[error(
        "{}; give each ServiceAccount fewer secrets (a ServiceAccount of its own per workload), \
         or allow the secrets by a shared name prefix with a wildcard in a policy you write \
         (arn:aws:secretsmanager:REGION:ACCOUNT:secret:PREFIX/*){}",
        too_large.join("; "),
        if *policy_type == PolicyType::Managed {
            "; --policy-type inline allows 10240 characters (aws iam put-role-policy)"
        } else {
            ""
        }
    )]
    TooLarge {
        /// Where the policies go.
        policy_type: PolicyType,
        /// One sentence per policy over the limit: which, its size, the limit.
        too_large: Vec<String>,
    },
}

/// A ServiceAccount: the identity (IRSA role or EKS Pod Identity association) a policy is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the pods of one ServiceAccount read: the resources of its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Secrets read with GetSecretValue, as IAM resources (partial ARNs widened).
    pub secrets: BTreeSet<String>,
    /// Replicas in failover regions the agent may read instead, as IAM resources; none that is
    /// also in [`Access::secrets`].
    pub replicas: BTreeSet<String>,
    /// Whether the agent calls BatchGetSecretValue for one of its pods.
    pub batch: bool,
    /// Parameters read with GetParameters.
    pub parameters: BTreeSet<String>,
    /// Secrets (and replicas) the rotation sidecar asks about with DescribeSecret: those of
    /// pods with a refresh interval, unless pinned to a version id.
    pub described: BTreeSet<String>,
    /// Regions of its secrets and replicas (for the KMS note).
    secret_regions: BTreeSet<String>,
    /// Regions of its parameters (for the KMS note).
    parameter_regions: BTreeSet<String>,
}

/// One IAM policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    /// Always [`POLICY_VERSION`].
    pub version: &'static str,
    /// The statements, in a fixed order.
    pub statement: Vec<Statement>,
}

/// One `Allow` statement of a [`PolicyDocument`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// What the statement is for.
    pub sid: &'static str,
    /// Always `Allow`.
    pub effect: &'static str,
    /// The one action.
    pub action: &'static str,
    /// What it applies to.
    pub resource: Resource,
    /// When it applies (the secret writer's tag conditions); absent for the agent's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

/// The `Resource` of a [`Statement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    /// `"*"`: for an action without resource-level permissions.
    Any(&'static str),
    /// These ARNs (sorted, each once).
    Arns(Vec<String>),
}

/// The policies of a set of manifests, and what to tell the reader about them.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Per ServiceAccount that reads anything, what it reads.
    pub access: BTreeMap<ServiceAccount, Access>,
    /// What the policies cannot say by themselves (KMS keys, widened ARNs, ...), for a person;
    /// never part of a policy.
    pub notes: Vec<String>,
    /// What is probably a mistake, for a person: a policy for a namespace's `default`
    /// ServiceAccount.
    pub warnings: Vec<String>,
}

/// The policies for the manifests in `input` (YAML or JSON, many documents, `List`s).
pub fn from_manifests(input: &str) -> Result<Policies, PolicyError> {
    let found = pod_templates(input)?;
    let mut policies = from_templates(&found.templates)?;
    // What `inject` would pass over, the policies pass over too: say so first.
    policies.warnings.splice(0..0, found.skipped);
    Ok(policies)
}

/// The policies for these pod templates. A template whose annotations are invalid fails the
/// whole call, naming its document and object.
pub fn from_templates(templates: &[PodTemplate]) -> Result<Policies, PolicyError> {
    let mut access: BTreeMap<ServiceAccount, Access> = BTreeMap::new();
    // Partial ARN -> where it was first seen; the same for ARNs taken for full ones that may
    // be partial.
    let mut partial: BTreeMap<String, String> = BTreeMap::new();
    let mut ambiguous: BTreeMap<String, String> = BTreeMap::new();
    // A namespace's default ServiceAccount -> the objects whose pods run as it.
    let mut defaults: BTreeMap<ServiceAccount, Vec<String>> = BTreeMap::new();
    for template in templates {
        let request = InjectionSpec::from_annotations(template.metadata.annotations.as_ref())
            .map_err(|source| PolicyError::Annotation {
                document: template.document,
                object: template.object.clone(),
                source,
            })?;
        // An injected pod still runs the agent with the same plan.
        let (Request::Inject(spec) | Request::AlreadyInjected(spec)) = request else {
            continue;
        };
        let account = ServiceAccount {
            namespace: template.namespace.clone(),
            name: template.service_account().to_owned(),
        };
        let place = || format!("document {} ({})", template.document, template.object);
        if account.name == DEFAULT_SERVICE_ACCOUNT {
            defaults.entry(account.clone()).or_default().push(place());
        }
        let entry = access.entry(account).or_default();
        let plan = plan_of(&spec);
        for secret in &plan.secrets {
            if let SecretId::Arn(arn) = &secret.secret {
                if arn.is_partial() {
                    partial.entry(arn.as_str().to_owned()).or_insert_with(place);
                } else if arn.is_ambiguous() {
                    ambiguous
                        .entry(arn.as_str().to_owned())
                        .or_insert_with(place);
                }
            }
        }
        // The webhook never sets a region for a name: the default region is never asked.
        for call in sources::calls(&plan, "", sources::BATCH_THRESHOLD) {
            entry.allow(&call);
        }
    }
    for entry in access.values_mut() {
        let Access {
            secrets, replicas, ..
        } = entry;
        replicas.retain(|replica| !secrets.contains(replica));
    }
    let notes = notes(&access, &partial, &ambiguous);
    let warnings = defaults
        .iter()
        .map(|(account, places)| {
            format!(
                "the policy of {account} is for the default ServiceAccount of namespace {}, \
                 which every pod there that names no serviceAccountName runs as: all of them \
                 could read these secrets (asked for by {}); give {} a ServiceAccount of its own \
                 (kubectl -n {} create serviceaccount NAME, serviceAccountName: NAME in the pod \
                 spec) and bind the role to that one",
                account.namespace,
                places.join(", "),
                if places.len() == 1 {
                    "it"
                } else {
                    "each workload"
                },
                account.namespace,
            )
        })
        .collect();
    Ok(Policies {
        access,
        notes,
        warnings,
    })
}

/// The ServiceAccount a pod runs as when it names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The plan the webhook renders for a pod with this spec, as far as the agent's calls go.
fn plan_of(spec: &InjectionSpec) -> Plan {
    Plan::for_injection(spec, defaults::FILE_MODE)
}

/// The IAM resource that matches a secret's ARN: the ARN itself, or a partial ARN with
/// `-??????` for the random suffix it lacks.
pub fn resource_of(arn: &SecretArn) -> String {
    if arn.is_partial() {
        format!("{}{SUFFIX_WILDCARD}", arn.as_str())
    } else {
        arn.as_str().to_owned()
    }
}

impl Access {
    /// Allow one call of the agent: its action on what it names.
    fn allow(&mut self, call: &AwsCall) {
        for (id, _) in &call.keys {
            let resource = match id {
                SecretId::Arn(arn) => resource_of(arn),
                SecretId::Parameter(arn) => arn.as_str().to_owned(),
                // Never from annotations: the webhook renders ARNs.
                SecretId::Name(_) => continue,
            };
            match (call.operation, call.occasion) {
                (Operation::GetSecretValue, Occasion::Failover) => {
                    self.replicas.insert(resource);
                }
                // Secrets Manager also checks GetSecretValue on each secret of a batch.
                (Operation::GetSecretValue | Operation::BatchGetSecretValue, _) => {
                    self.secrets.insert(resource);
                }
                (Operation::DescribeSecret, _) => {
                    self.described.insert(resource);
                }
                (Operation::GetParameters, _) => {
                    self.parameters.insert(resource);
                }
            }
        }
        let regions = match call.operation {
            Operation::GetParameters => &mut self.parameter_regions,
            Operation::BatchGetSecretValue => {
                self.batch = true;
                &mut self.secret_regions
            }
            Operation::GetSecretValue | Operation::DescribeSecret => &mut self.secret_regions,
        };
        regions.insert(call.region.clone());
    }
}

impl Access {
    /// The policy document: only the statements it needs, in a fixed order.
    pub fn document(&self) -> PolicyDocument {
        let arns = |set: &BTreeSet<String>| Resource::Arns(set.iter().cloned().collect());
        let mut statement = Vec::new();
        let mut allow = |sid, action, resource| {
            statement.push(Statement {
                sid,
                effect: "Allow",
                action,
                resource,
                condition: None,
            });
        };
        if !self.secrets.is_empty() {
            allow(
                "ReadSecrets",
                "secretsmanager:GetSecretValue",
                arns(&self.secrets),
            );
        }
        if !self.replicas.is_empty() {
            allow(
                "ReadSecretReplicasInFailoverRegions",
                "secretsmanager:GetSecretValue",
                arns(&self.replicas),
            );
        }
        if self.batch {
            allow(
                "BatchReadSecretsEachAlsoNeedsGetSecretValue",
                "secretsmanager:BatchGetSecretValue",
                Resource::Any("*"),
            );
        }
        if !self.described.is_empty() {
            allow(
                "WatchSecretsForRotation",
                "secretsmanager:DescribeSecret",
                arns(&self.described),
            );
        }
        if !self.parameters.is_empty() {
            allow(
                "ReadParameters",
                "ssm:GetParameters",
                arns(&self.parameters),
            );
        }
        PolicyDocument {
            version: POLICY_VERSION,
            statement,
        }
    }
}

/// Where the secret writer's secrets live, for its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterScope {
    /// The writer's config (`--secret-writer-prefix`, `--cluster-name`).
    pub writer: WriterConfig,
    /// ARN partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// Region of the secrets, or `*`.
    pub region: String,
    /// Account of the secrets, or `*`.
    pub account: String,
}

/// The secret writer's least-privilege policy: every action on `<prefix>/*` only, creation
/// only with the four owner tags (this cluster's, and `managed-by: secret-inject`) and no
/// other tag keys, and every write only to a secret that already carries this cluster's owner
/// tags. `DescribeSecret` carries no tag condition: for a secret that does not exist yet a
/// tag-conditioned read is an access denial rather than the "not found" the writer needs, and
/// the writer checks all four tags (namespace and name included, which no policy can tie to the
/// request) before any write.
pub fn secret_writer(scope: &WriterScope) -> PolicyDocument {
    use crate::mutate::secret::{MANAGED_BY, TAG_CLUSTER, TAG_MANAGED_BY, TAG_NAME, TAG_NAMESPACE};
    let resource = Resource::Arns(vec![format!(
        "arn:{}:secretsmanager:{}:{}:secret:{}/*",
        scope.partition,
        scope.region,
        scope.account,
        scope.writer.prefix.trim_matches('/')
    )]);
    let cluster = scope.writer.cluster.as_str();
    let on_create = serde_json::json!({
        "StringEquals": {
            format!("aws:RequestTag/{TAG_MANAGED_BY}"): MANAGED_BY,
            format!("aws:RequestTag/{TAG_CLUSTER}"): cluster,
        },
        "ForAllValues:StringEquals": {
            "aws:TagKeys": [TAG_CLUSTER, TAG_NAMESPACE, TAG_NAME, TAG_MANAGED_BY],
        },
    });
    let owned = serde_json::json!({
        "StringEquals": {
            format!("aws:ResourceTag/{TAG_MANAGED_BY}"): MANAGED_BY,
            format!("aws:ResourceTag/{TAG_CLUSTER}"): cluster,
        },
    });
    let statement = |sid, action, condition: Option<&serde_json::Value>| Statement {
        sid,
        effect: "Allow",
        action,
        resource: resource.clone(),
        condition: condition.cloned(),
    };
    PolicyDocument {
        version: POLICY_VERSION,
        statement: vec![
            statement(
                "CreateSecretsTaggedForThisCluster",
                "secretsmanager:CreateSecret",
                Some(&on_create),
            ),
            statement(
                "TagSecretsAtCreation",
                "secretsmanager:TagResource",
                Some(&on_create),
            ),
            statement(
                "ReadMetadataToCheckOwnerTags",
                "secretsmanager:DescribeSecret",
                None,
            ),
            statement(
                "StageValuesOfOwnSecrets",
                "secretsmanager:PutSecretValue",
                Some(&owned),
            ),
            statement(
                "PromotePersistedVersions",
                "secretsmanager:UpdateSecretVersionStage",
                Some(&owned),
            ),
            statement(
                "DeleteSecretsOnlyUnpersistedReviewsCreated",
                "secretsmanager:DeleteSecret",
                Some(&owned),
            ),
        ],
    }
}

impl Policies {
    /// `{"<namespace>/<serviceAccount>": <policy document>, ...}`, keys sorted.
    pub fn documents(&self) -> BTreeMap<String, PolicyDocument> {
        self.access
            .iter()
            .map(|(account, access)| (account.to_string(), access.document()))
            .collect()
    }

    /// Every policy fits where it is going (`policy_type`), or an error that says which do
    /// not, their sizes, the limit and what to do.
    pub fn check_size(&self, policy_type: PolicyType) -> Result<(), PolicyError> {
        let limit = policy_type.max_chars();
        let too_large: Vec<String> = self
            .access
            .iter()
            .filter_map(|(account, access)| {
                let size = policy_chars(&access.document());
                (size > limit).then(|| {
                    format!(
                        "the policy of {account} has {size} characters (whitespace not \
                         counted; {} secrets and {} parameters), more than the {limit} IAM \
                         accepts for {}",
                        access.secrets.len() + access.replicas.len(),
                        access.parameters.len(),
                        policy_type.describe()
                    )
                })
            })
            .collect();
        if too_large.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::TooLarge {
                policy_type,
                too_large,
            })
        }
    }

    /// [`Policies::documents`] as pretty JSON, ending in a newline.
    pub fn to_json_pretty(&self) -> String {
        let mut json = serde_json::to_string_pretty(&self.documents())
            .unwrap_or_else(|_| unreachable!("plain strings and maps always serialize"));
        json.push('\n');
        json
    }
}

/// The notes, in a fixed order.
fn notes(
    access: &BTreeMap<ServiceAccount, Access>,
    partial: &BTreeMap<String, String>,
    ambiguous: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut notes = Vec::new();
    if access.is_empty() {
        notes.push(
            "no Pod or pod template asks for a secret (secrets.k8s.aws/secret-arn): there is \
             nothing to allow"
                .to_owned(),
        );
        return notes;
    }
    for (arn, place) in partial {
        notes.push(format!(
            "{arn}, in {place}, is a partial ARN: it lacks the 6-character random suffix \
             that Secrets Manager appends to the name; IAM matches policies against the full ARN, so the \
             policy allows {arn}{SUFFIX_WILDCARD}, which matches that secret (also when it is \
             created again) and no other; use the full ARN to allow only this incarnation"
        ));
    }
    for (arn, place) in ambiguous {
        notes.push(format!(
            "{arn}, in {place}, is taken for a full ARN, as its name ends in - and six \
             characters like the random suffix; if it is a partial ARN instead, give the \
             secret's full ARN (`aws secretsmanager describe-secret --secret-id {arn} --query \
             ARN`): neither IAM nor Secrets Manager can tell the two apart"
        ));
    }
    let list = |filter: &dyn Fn(&Access) -> bool| {
        let names: Vec<String> = access
            .iter()
            .filter(|(_, a)| filter(a))
            .map(|(account, _)| account.to_string())
            .collect();
        names.join(", ")
    };
    let batch = list(&|a| a.batch);
    if !batch.is_empty() {
        notes.push(format!(
            "secretsmanager:BatchGetSecretValue has no resource-level permissions, hence \
             Resource \"*\" ({batch}); it reads no secret by itself: Secrets Manager also \
             checks secretsmanager:GetSecretValue on each secret of the batch"
        ));
    }
    let replicas = list(&|a| !a.replicas.is_empty());
    if !replicas.is_empty() {
        notes.push(format!(
            "secrets.k8s.aws/failover-region: the agent reads a secret's replica in that region \
             (the same ARN, with the region replaced) when the primary region is unavailable; \
             the replicas are allowed too ({replicas})"
        ));
    }
    let mut services = BTreeSet::new();
    for a in access.values() {
        services.extend(
            a.secret_regions
                .iter()
                .map(|r| format!("secretsmanager.{r}.amazonaws.com")),
        );
        services.extend(
            a.parameter_regions
                .iter()
                .map(|r| format!("ssm.{r}.amazonaws.com")),
        );
    }
    let services: Vec<String> = services.into_iter().map(|s| format!("\"{s}\"")).collect();
    notes.push(format!(
        "kms:Decrypt: a secret or SecureString parameter encrypted with a customer-managed KMS \
         key also needs kms:Decrypt on that key (the AWS managed keys aws/secretsmanager and \
         aws/ssm need nothing); the key ARNs are not in the manifests \
         (`aws secretsmanager describe-secret --secret-id ARN --query KmsKeyId`, \
         `aws ssm describe-parameters`), so add to each policy that reads such a secret: \
         {{\"Sid\": \"DecryptThroughSecretsManagerAndSsmOnly\", \"Effect\": \"Allow\", \
         \"Action\": \"kms:Decrypt\", \"Resource\": [\"arn:aws:kms:REGION:ACCOUNT:key/KEY-ID\"], \
         \"Condition\": {{\"StringEquals\": {{\"kms:ViaService\": [{}]}}}}}}, and make sure the \
         key policy lets IAM policies of the account grant access",
        services.join(", ")
    ));
    notes
}

/// How IAM counts a policy's size: its characters, whitespace not counted.
pub fn policy_chars(document: &PolicyDocument) -> usize {
    serde_json::to_string(document)
        .unwrap_or_else(|_| unreachable!("plain strings and maps always serialize"))
        .chars()
        .filter(|c| !c.is_whitespace())
        .count()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const DB: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCd12";
    const API: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:api-key-Zz9Yy8";
    const WEST: &str = "arn:aws:secretsmanager:us-west-2:123456789012:secret:west-Qw3Er4";
    const URL: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/app/url";

    /// A Deployment in `namespace` running as `account` (none: the default) with these
    /// pod-template annotations.
    fn deployment(
        name: &str,
        namespace: &str,
        account: Option<&str>,
        annotations: &[(&str, &str)],
    ) -> String {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
        if let Some(account) = account {
            spec["serviceAccountName"] = json!(account);
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {"metadata": {"annotations": annotations}, "spec": spec}}
        })
        .to_string()
    }

    fn policies(documents: &[String]) -> Policies {
        from_manifests(&documents.join("\n---\n")).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    fn json_of(policies: &Policies) -> Value {
        serde_json::from_str(&policies.to_json_pretty()).unwrap()
    }

    fn account(namespace: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn one_policy_per_namespace_and_service_account() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "team-b",
                         "annotations": {"secrets.k8s.aws/secret-arn": WEST,
                                         "secrets.k8s.aws/status": "injected"}},
            // The deprecated field still names the account.
            "spec": {"serviceAccount": "app", "containers": [{"name": "c", "image": "i"}]}
        });
        let list = json!({
            "apiVersion": "v1", "kind": "List",
            "items": [serde_json::from_str::<Value>(&deployment(
                "in-list", "team-a", Some("app"), &[("secrets.k8s.aws/secret-arn.url", URL)]
            )).unwrap()]
        });
        let p = policies(&[
            deployment(
                "a",
                "team-a",
                Some("app"),
                &[("secrets.k8s.aws/secret-arn", DB)],
            ),
            deployment("b", "team-a", None, &[("secrets.k8s.aws/secret-arn", API)]),
            pod.to_string(),
            list.to_string(),
            // Opted out, and not annotated: nothing to allow.
            deployment(
                "off",
                "team-a",
                Some("app"),
                &[
                    ("secrets.k8s.aws/sidecarInjectorWebhook", "disabled"),
                    ("secrets.k8s.aws/secret-arn", WEST),
                ],
            ),
            deployment("plain", "team-c", Some("app"), &[]),
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}"#.to_owned(),
        ]);
        let accounts: Vec<String> = p.access.keys().map(ToString::to_string).collect();
        assert_eq!(accounts, ["team-a/app", "team-a/default", "team-b/app"]);
        let app = &p.access[&account("team-a", "app")];
        assert_eq!(app.secrets, BTreeSet::from([DB.to_owned()]));
        assert_eq!(app.parameters, BTreeSet::from([URL.to_owned()]));
        assert_eq!(
            p.access[&account("team-a", "default")].secrets,
            BTreeSet::from([API.to_owned()])
        );
        // An injected pod still runs the agent.
        assert_eq!(
            p.access[&account("team-b", "app")].secrets,
            BTreeSet::from([WEST.to_owned()])
        );
        // An object without a namespace is in `default`.
        let p = policies(&[r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
            "annotations": {"secrets.k8s.aws/secret-arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCd12"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}"#
            .to_owned()]);
        assert_eq!(
            p.access.keys().collect::<Vec<_>>(),
            [&account("default", "default")]
        );
    }

    #[test]
    fn batch_only_where_a_pod_reads_two_current_secrets_in_one_region() {
        let batch = |annotations: &[(&str, &str)]| {
            policies(&[deployment("d", "ns", Some("sa"), annotations)]).access[&account("ns", "sa")]
                .batch
        };
        let east2 = "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-Rt5Yu8";
        assert!(batch(&[
            ("secrets.k8s.aws/secret-arn.a", DB),
            ("secrets.k8s.aws/secret-arn.b", east2)
        ]));
        // AWSCURRENT given explicitly is the same version as none.
        assert!(batch(&[
            ("secrets.k8s.aws/secret-arn.a", DB),
            ("secrets.k8s.aws/secret-arn.b", east2),
            ("secrets.k8s.aws/version-stage.b", "AWSCURRENT"),
        ]));
        for (case, annotations) in [
            ("one secret", vec![("secrets.k8s.aws/secret-arn", DB)]),
            (
                "the same secret twice",
                vec![
                    ("secrets.k8s.aws/secret-arn.a", DB),
                    ("secrets.k8s.aws/secret-arn.b", DB),
                ],
            ),
            (
                "two regions",
                vec![
                    ("secrets.k8s.aws/secret-arn.a", DB),
                    ("secrets.k8s.aws/secret-arn.b", WEST),
                ],
            ),
            (
                "another stage",
                vec![
                    ("secrets.k8s.aws/secret-arn.a", DB),
                    ("secrets.k8s.aws/secret-arn.b", east2),
                    ("secrets.k8s.aws/version-stage.b", "AWSPREVIOUS"),
                ],
            ),
            (
                "a version id",
                vec![
                    ("secrets.k8s.aws/secret-arn.a", DB),
                    ("secrets.k8s.aws/secret-arn.b", east2),
                    ("secrets.k8s.aws/version-id.b", "01234567-89ab-cdef"),
                ],
            ),
            (
                "a parameter",
                vec![
                    ("secrets.k8s.aws/secret-arn.a", DB),
                    ("secrets.k8s.aws/secret-arn.b", URL),
                ],
            ),
        ] {
            assert!(!batch(&annotations), "{case}: no BatchGetSecretValue");
        }
        // Per pod: two pods of one account with one secret each never batch; one pod that
        // does makes the account's policy allow it.
        let p = policies(&[
            deployment("a", "ns", Some("sa"), &[("secrets.k8s.aws/secret-arn", DB)]),
            deployment(
                "b",
                "ns",
                Some("sa"),
                &[("secrets.k8s.aws/secret-arn", east2)],
            ),
        ]);
        assert!(!p.access[&account("ns", "sa")].batch);
        let sids = |p: &Policies| -> Vec<&'static str> {
            p.access[&account("ns", "sa")]
                .document()
                .statement
                .iter()
                .map(|s| s.sid)
                .collect()
        };
        assert_eq!(sids(&p), ["ReadSecrets"]);
        let p = policies(&[
            deployment("a", "ns", Some("sa"), &[("secrets.k8s.aws/secret-arn", DB)]),
            deployment(
                "b",
                "ns",
                Some("sa"),
                &[
                    ("secrets.k8s.aws/secret-arn.a", API),
                    ("secrets.k8s.aws/secret-arn.b", east2),
                ],
            ),
        ]);
        assert_eq!(
            sids(&p),
            ["ReadSecrets", "BatchReadSecretsEachAlsoNeedsGetSecretValue"]
        );
        let batch = &p.access[&account("ns", "sa")].document().statement[1];
        assert_eq!(batch.action, "secretsmanager:BatchGetSecretValue");
        assert_eq!(batch.resource, Resource::Any("*"));
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("no resource-level permissions"))
        );
    }

    #[test]
    fn failover_region_allows_the_replicas_but_not_for_parameters() {
        let p = policies(&[
            deployment(
                "a",
                "ns",
                Some("sa"),
                &[
                    ("secrets.k8s.aws/secret-arn.db", DB),
                    ("secrets.k8s.aws/secret-arn.url", URL),
                    ("secrets.k8s.aws/failover-region", "us-west-2"),
                ],
            ),
            // Another pod reads the replica's ARN directly: it is a secret, not twice.
            deployment(
                "b",
                "ns",
                Some("sa"),
                &[(
                    "secrets.k8s.aws/secret-arn",
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-key-Zz9Yy8",
                )],
            ),
            deployment(
                "c",
                "ns",
                Some("sa"),
                &[
                    ("secrets.k8s.aws/secret-arn", API),
                    ("secrets.k8s.aws/failover-region", "eu-west-1"),
                ],
            ),
        ]);
        let access = &p.access[&account("ns", "sa")];
        assert_eq!(
            access.replicas,
            BTreeSet::from([
                "arn:aws:secretsmanager:us-west-2:123456789012:secret:db-AbCd12".to_owned()
            ])
        );
        assert!(
            access
                .secrets
                .contains("arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-key-Zz9Yy8")
        );
        assert_eq!(access.parameters, BTreeSet::from([URL.to_owned()]));
        let document = access.document();
        let replicas = &document.statement[1];
        assert_eq!(replicas.sid, "ReadSecretReplicasInFailoverRegions");
        assert_eq!(replicas.action, "secretsmanager:GetSecretValue");
        assert!(p.notes.iter().any(|n| n.contains("failover-region")));
        let kms = p
            .notes
            .iter()
            .find(|n| n.starts_with("kms:Decrypt"))
            .unwrap();
        for service in [
            "secretsmanager.us-east-1.amazonaws.com",
            "secretsmanager.us-west-2.amazonaws.com",
            "secretsmanager.eu-west-1.amazonaws.com",
            "ssm.us-east-1.amazonaws.com",
        ] {
            assert!(kms.contains(service), "{service}: {kms}");
        }
        assert!(!kms.contains("ssm.us-west-2"), "{kms}");
    }

    #[test]
    fn partial_arns_are_widened_with_the_random_suffix_and_noted() {
        let arn = |name: &str| {
            SecretArn::parse(&format!(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}"
            ))
            .unwrap()
        };
        // Which names are partial is spec::arn's table test; here, what the policy makes of them.
        for (name, partial) in [
            ("team/db-password-hlRvvF", false),
            ("db-master", false),
            ("db-password", true),
            ("db-AbCd1+", true),
        ] {
            assert_eq!(arn(name).is_partial(), partial, "{name}");
            let expected = if partial {
                format!("{}-??????", arn(name).as_str())
            } else {
                arn(name).as_str().to_owned()
            };
            assert_eq!(resource_of(&arn(name)), expected, "{name}");
        }
        let partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team/db-password";
        let p = policies(&[deployment(
            "a",
            "ns",
            Some("sa"),
            &[
                ("secrets.k8s.aws/secret-arn", partial),
                ("secrets.k8s.aws/failover-region", "us-west-2"),
            ],
        )]);
        let access = &p.access[&account("ns", "sa")];
        assert_eq!(
            access.secrets,
            BTreeSet::from([format!("{partial}-??????")])
        );
        assert_eq!(
            access.replicas,
            BTreeSet::from([
                "arn:aws:secretsmanager:us-west-2:123456789012:secret:team/db-password-??????"
                    .to_owned()
            ])
        );
        let note = p.notes.iter().find(|n| n.starts_with(partial)).unwrap();
        assert!(note.contains("document 1 (Deployment/a)"), "{note}");
        assert!(note.contains("partial ARN"), "{note}");
        assert!(note.contains(&format!("{partial}-??????")), "{note}");
        // A name that ends like a suffix is taken for a full ARN, and said so.
        let word = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-master";
        let p = policies(&[deployment(
            "a",
            "ns",
            Some("sa"),
            &[
                ("secrets.k8s.aws/secret-arn", word),
                ("secrets.k8s.aws/secret-arn.db", DB),
            ],
        )]);
        assert_eq!(
            p.access[&account("ns", "sa")].secrets,
            BTreeSet::from([DB.to_owned(), word.to_owned()])
        );
        let notes: Vec<&String> = p
            .notes
            .iter()
            .filter(|n| n.contains("taken for a full ARN"))
            .collect();
        assert_eq!(notes.len(), 1, "{:?}", p.notes);
        assert!(
            notes[0].starts_with(&format!("{word}, in document 1 (Deployment/a)")),
            "{}",
            notes[0]
        );
    }

    #[test]
    fn output_is_sorted_deduplicated_and_independent_of_the_manifest_order() {
        let b = "arn:aws:secretsmanager:us-east-1:123456789012:secret:b-Rt5Yu8";
        let z = "arn:aws:ssm:us-east-1:123456789012:parameter/z";
        let documents = [
            deployment(
                "one",
                "ns",
                Some("sa"),
                &[
                    ("secrets.k8s.aws/secret-arn.z", z),
                    ("secrets.k8s.aws/secret-arn.b", b),
                    ("secrets.k8s.aws/secret-arn.db", DB),
                ],
            ),
            deployment(
                "two",
                "ns",
                Some("sa"),
                &[
                    ("secrets.k8s.aws/secret-arn.db", DB),
                    ("secrets.k8s.aws/secret-arn.url", URL),
                ],
            ),
            deployment(
                "three",
                "another",
                Some("sa"),
                &[("secrets.k8s.aws/secret-arn", DB)],
            ),
        ];
        let forward = policies(&documents);
        let mut reversed = documents.to_vec();
        reversed.reverse();
        let backward = policies(&reversed);
        assert_eq!(forward.to_json_pretty(), backward.to_json_pretty());
        assert_eq!(
            json_of(&forward),
            json!({
                "another/sa": {"Version": "2012-10-17", "Statement": [
                    {"Sid": "ReadSecrets", "Effect": "Allow",
                     "Action": "secretsmanager:GetSecretValue", "Resource": [DB]}
                ]},
                "ns/sa": {"Version": "2012-10-17", "Statement": [
                    {"Sid": "ReadSecrets", "Effect": "Allow",
                     "Action": "secretsmanager:GetSecretValue", "Resource": [b, DB]},
                    {"Sid": "BatchReadSecretsEachAlsoNeedsGetSecretValue", "Effect": "Allow",
                     "Action": "secretsmanager:BatchGetSecretValue", "Resource": "*"},
                    {"Sid": "ReadParameters", "Effect": "Allow",
                     "Action": "ssm:GetParameters", "Resource": [URL, z]}
                ]}
            })
        );
        // The statement's keys in the order IAM documents write them, the accounts sorted.
        let text = forward.to_json_pretty();
        let at = |needle: &str| text.find(needle).unwrap();
        assert!(at("\"Sid\"") < at("\"Effect\"") && at("\"Effect\"") < at("\"Action\""));
        assert!(at("\"Action\"") < at("\"Resource\""));
        assert!(at("\"another/sa\"") < at("\"ns/sa\""));
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn invalid_annotations_name_the_document_and_the_object() {
        let input = [
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}"#.to_owned(),
            deployment(
                "api",
                "ns",
                Some("sa"),
                &[("secrets.k8s.aws/secret-arn.db", "nope")],
            ),
        ]
        .join("\n---\n");
        let error = from_manifests(&input).unwrap_err();
        assert_eq!(error.to_string(), "document 2 (Deployment/api)");
        let PolicyError::Annotation { source, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(source.key, "secrets.k8s.aws/secret-arn.db");
        assert!(source.problem.contains("not an ARN"), "{source}");
        // A manifest that does not parse is the walker's error, as `inject` reports it.
        let error = from_manifests("a: [").unwrap_err();
        assert!(matches!(
            error,
            PolicyError::Manifest(InjectError::Parse { document: 1, .. })
        ));
        assert_eq!(error.to_string(), "document 1: not valid YAML or JSON");
        let error = from_manifests(
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": 3}}"#,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "document 1 (Pod/p): /spec is not a valid PodSpec"
        );
    }

    #[test]
    fn rotating_pods_may_describe_their_secrets_except_pinned_versions() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let pinned = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tls-AbCdEf";
        let p = policies(&[deployment(
            "web",
            "ns",
            Some("sa"),
            &[
                ("secrets.k8s.aws/secret-arn.db", arn),
                ("secrets.k8s.aws/secret-arn.tls", pinned),
                (
                    "secrets.k8s.aws/version-id.tls",
                    "01234567-89ab-cdef-0123-456789abcdef",
                ),
                ("secrets.k8s.aws/refresh-interval", "5m"),
            ],
        )]);
        let access = &p.access[&account("ns", "sa")];
        assert_eq!(access.described.iter().collect::<Vec<_>>(), [arn]);
        let document = access.document();
        let watch = document
            .statement
            .iter()
            .find(|s| s.action == "secretsmanager:DescribeSecret")
            .unwrap();
        assert_eq!(watch.sid, "WatchSecretsForRotation");
        // Without an interval: no DescribeSecret.
        let p = policies(&[deployment(
            "web",
            "ns",
            Some("sa"),
            &[("secrets.k8s.aws/secret-arn.db", arn)],
        )]);
        assert!(p.access[&account("ns", "sa")].described.is_empty());
    }

    #[test]
    fn nothing_to_allow_is_an_empty_object_and_a_note() {
        let p = policies(&[deployment("plain", "ns", Some("sa"), &[])]);
        assert_eq!(p.to_json_pretty(), "{}\n");
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("nothing to allow"), "{:?}", p.notes);
        assert!(from_manifests("").unwrap().access.is_empty());
    }

    #[test]
    fn a_policy_larger_than_iam_accepts_fails_with_its_size_the_limit_and_a_fix() {
        let many = |n: usize, name: &str| -> String {
            let annotations: Vec<(String, String)> = (0..n)
                .map(|i| {
                    (
                        format!("secrets.k8s.aws/secret-arn.s{i}"),
                        format!(
                            "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}{i}-AbCd12"
                        ),
                    )
                })
                .collect();
            let annotations: Vec<(&str, &str)> = annotations
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            deployment("big", "ns", Some("sa"), &annotations)
        };
        // 100 short names: over a managed policy's 6144, within an inline one's 10240.
        let p = policies(&[many(crate::spec::MAX_SECRETS, "app/s")]);
        let size = policy_chars(&p.access[&account("ns", "sa")].document());
        assert!((6145..=10240).contains(&size), "{size}");
        let error = p.check_size(PolicyType::Managed).unwrap_err().to_string();
        for expected in [
            format!("the policy of ns/sa has {size} characters"),
            "whitespace not counted; 100 secrets".to_owned(),
            "more than the 6144 IAM accepts for a customer managed policy".to_owned(),
            "fewer secrets".to_owned(),
            "secret:PREFIX/*".to_owned(),
            "--policy-type inline allows 10240".to_owned(),
        ] {
            assert!(error.contains(&expected), "{expected:?}: {error}");
        }
        assert!(p.check_size(PolicyType::Inline).is_ok());
        // Long names: over both.
        let long = policies(&[many(crate::spec::MAX_SECRETS, &"n".repeat(100))]);
        let error = long.check_size(PolicyType::Inline).unwrap_err().to_string();
        assert!(error.contains("more than the 10240"), "{error}");
        assert!(!error.contains("--policy-type inline"), "{error}");
        // Whitespace is not counted, as IAM counts.
        let one = policies(&[deployment(
            "a",
            "ns",
            Some("sa"),
            &[("secrets.k8s.aws/secret-arn", DB)],
        )]);
        let document = &one.access[&account("ns", "sa")].document();
        assert_eq!(
            policy_chars(document),
            serde_json::to_string_pretty(document)
                .unwrap()
                .chars()
                .filter(|c| !c.is_whitespace())
                .count()
        );
        assert!(one.check_size(PolicyType::Managed).is_ok());
    }

    #[test]
    fn a_policy_for_a_default_service_account_is_warned_about_naming_the_pods() {
        let secret = [("secrets.k8s.aws/secret-arn", DB)];
        let p = policies(&[
            deployment("a", "team", None, &secret),
            deployment("b", "team", Some("default"), &secret),
            deployment("c", "team", Some("c"), &secret),
        ]);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        let warning = &p.warnings[0];
        for expected in [
            "the policy of team/default is for the default ServiceAccount of namespace team",
            "document 1 (Deployment/a), document 2 (Deployment/b)",
            "kubectl -n team create serviceaccount",
            "serviceAccountName",
        ] {
            assert!(warning.contains(expected), "{expected:?}: {warning}");
        }
        assert!(!warning.contains("Deployment/c"), "{warning}");
        let dedicated = policies(&[deployment("c", "team", Some("c"), &secret)]);
        assert!(dedicated.warnings.is_empty(), "{:?}", dedicated.warnings);
    }
}
