//! ARNs of the sources a pod reads: Secrets Manager secrets and Systems Manager (Parameter
//! Store) parameters, and Secrets Manager names.

use std::fmt;

use super::{AnnotationError, SECRET_ARN, quote};

/// The ARN of a Secrets Manager secret:
/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretArn(RegionalArn);

/// A validated ARN's text and where its region field is in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RegionalArn {
    arn: String,
    region: std::ops::Range<usize>,
}

impl RegionalArn {
    /// `value`, whose `:`-separated `fields` put the region fourth.
    fn new(value: &str, fields: &[&str]) -> Self {
        let start = fields[..3].iter().map(|f| f.len() + 1).sum();
        Self {
            arn: value.to_owned(),
            region: start..start + fields[3].len(),
        }
    }

    fn as_str(&self) -> &str {
        &self.arn
    }

    fn region(&self) -> &str {
        &self.arn[self.region.clone()]
    }

    /// The partition field: between `arn:` and the service.
    fn partition(&self) -> &str {
        self.arn["arn:".len()..].split(':').next().unwrap_or("")
    }

    /// The same ARN with another region.
    fn in_region(&self, region: &str) -> Self {
        let start = self.region.start;
        Self {
            arn: format!(
                "{}{region}{}",
                &self.arn[..start],
                &self.arn[self.region.end..]
            ),
            region: start..start + region.len(),
        }
    }
}

impl SecretArn {
    /// Validate an ARN (any partition: `aws`, `aws-cn`, `aws-us-gov`, ...).
    pub fn parse(value: &str) -> Result<Self, AnnotationError> {
        let bad = |problem: String| {
            AnnotationError::new(
                SECRET_ARN,
                problem,
                "use the secret's full ARN, e.g. \
                 arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF \
                 (`aws secretsmanager describe-secret --secret-id NAME --query ARN`)",
            )
        };
        let shown = quote(value);
        let fields: Vec<&str> = value.splitn(7, ':').collect();
        if fields.len() < 3 || fields[0] != "arn" {
            return Err(bad(format!("{shown} is not an ARN")));
        }
        let service = fields[2];
        if service != "secretsmanager" {
            return Err(bad(format!(
                "{shown} is an ARN of service {}, not of secretsmanager (or ssm, for a parameter)",
                quote(service)
            )));
        }
        if fields.len() != 7 {
            return Err(bad(format!(
                "{shown} is not a Secrets Manager secret ARN \
                 (arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME)"
            )));
        }
        let (region, account, resource, name) = (fields[3], fields[4], fields[5], fields[6]);
        check_common(&shown, fields[1], region, account).map_err(bad)?;
        if resource != "secret" {
            return Err(bad(format!(
                "{shown} has resource type {}, expected \"secret\"",
                quote(resource)
            )));
        }
        if !is_secret_name(name) {
            return Err(bad(format!(
                "{shown} has secret name {}, expected 1-512 characters of letters, digits and /_+=.@-",
                quote(name)
            )));
        }
        Ok(Self(RegionalArn::new(value, &fields)))
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The region the secret lives in.
    pub fn region(&self) -> &str {
        self.0.region()
    }

    /// The partition the secret lives in (`aws`, `aws-cn`, ...).
    pub fn partition(&self) -> &str {
        self.0.partition()
    }

    /// The ARN's last field: the secret's name, with the `-` and six random characters
    /// Secrets Manager appends unless the ARN is partial.
    pub fn resource_name(&self) -> &str {
        // Validated: `arn:partition:secretsmanager:region:account:secret:name`.
        self.as_str().splitn(7, ':').nth(6).unwrap_or("")
    }

    /// Whether this ARN names the secret called `secret_name`: its full ARN (the name, `-` and
    /// six characters) or its partial ARN (the name alone).
    pub fn names(&self, secret_name: &str) -> bool {
        let field = self.resource_name();
        field == secret_name
            || field.strip_prefix(secret_name).is_some_and(|rest| {
                rest.len() == 7
                    && rest.starts_with('-')
                    && rest[1..].bytes().all(|b| b.is_ascii_alphanumeric())
            })
    }
}

impl SecretArn {
    /// Whether this is a partial ARN: its name lacks the `-` and six random characters Secrets
    /// Manager appends (Secrets Manager accepts such ARNs; IAM matches policies against the
    /// full one).
    pub fn is_partial(&self) -> bool {
        let name = self.resource_name().as_bytes();
        let full = name.len() > SUFFIX_LEN
            && name[name.len() - SUFFIX_LEN] == b'-'
            && name[name.len() - SUFFIX_LEN + 1..]
                .iter()
                .all(u8::is_ascii_alphanumeric);
        !full
    }

    /// Whether an ARN taken for a full one may well be a partial ARN whose name ends in `-`
    /// and a six-character word or number (`db-master`, `cert-202401`): its last six
    /// characters are all lowercase letters, all uppercase letters or all digits, which about
    /// one random suffix in a hundred is. Neither IAM nor Secrets Manager can tell the two
    /// apart.
    pub fn is_ambiguous(&self) -> bool {
        if self.is_partial() {
            return false;
        }
        let name = self.resource_name().as_bytes();
        let suffix = &name[name.len() - SUFFIX_LEN + 1..];
        suffix.iter().all(u8::is_ascii_lowercase)
            || suffix.iter().all(u8::is_ascii_uppercase)
            || suffix.iter().all(u8::is_ascii_digit)
    }

    /// Whether `arn`, a full ARN Secrets Manager answered with, is this secret's: this ARN, or
    /// this partial ARN with the `-` and six characters it lacks.
    pub fn is_arn_of(&self, arn: &str) -> bool {
        arn == self.as_str()
            || arn
                .strip_prefix(self.as_str())
                .is_some_and(|rest| rest.len() == SUFFIX_LEN && rest.starts_with('-'))
    }
}

/// The length of what Secrets Manager appends to a secret's name in its ARN: `-` and six
/// random characters.
const SUFFIX_LEN: usize = 7;

impl fmt::Display for SecretArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SecretArn {
    /// The same secret's replica in `region` (Secrets Manager replication keeps the ARN and
    /// changes only its region).
    pub fn in_region(&self, region: &str) -> SecretArn {
        SecretArn(self.0.in_region(region))
    }
}

/// The ARN of a Systems Manager parameter:
/// `arn:<partition>:ssm:<region>:<account>:parameter/<name without its leading slash>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParameterArn(RegionalArn);

impl ParameterArn {
    /// Validate a parameter ARN.
    pub fn parse(value: &str) -> Result<Self, AnnotationError> {
        let bad = |problem: String| {
            AnnotationError::new(
                SECRET_ARN,
                problem,
                "use the parameter's full ARN, e.g. \
                 arn:aws:ssm:us-east-1:123456789012:parameter/app/db-password \
                 (`aws ssm get-parameter --name NAME --query Parameter.ARN`)",
            )
        };
        let shown = quote(value);
        let fields: Vec<&str> = value.splitn(6, ':').collect();
        if fields.len() != 6 || fields[0] != "arn" || fields[2] != "ssm" {
            return Err(bad(format!(
                "{shown} is not a Systems Manager parameter ARN \
                 (arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME)"
            )));
        }
        let (partition, region, account, resource) = (fields[1], fields[3], fields[4], fields[5]);
        check_common(&shown, partition, region, account).map_err(bad)?;
        let Some(name) = resource.strip_prefix("parameter/") else {
            return Err(bad(format!(
                "{shown} has resource {}, expected parameter/NAME",
                quote(resource)
            )));
        };
        // Parameter names: letters, digits and .-_/, at most 15 levels, 1011 characters with
        // the leading slash; the ARN leaves the leading slash out.
        let valid = !name.is_empty()
            && name.len() < 1011
            && !name.starts_with('/')
            && !name.ends_with('/')
            && name.split('/').count() <= 15
            && name.split('/').all(|level| !level.is_empty())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !valid {
            return Err(bad(format!(
                "{shown} has parameter name {}, expected letters, digits and ._-/ \
                 (at most 15 levels, no leading or trailing slash)",
                quote(name)
            )));
        }
        Ok(Self(RegionalArn::new(value, &fields)))
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The region the parameter lives in.
    pub fn region(&self) -> &str {
        self.0.region()
    }

    /// The partition the parameter lives in (`aws`, `aws-cn`, ...).
    pub fn partition(&self) -> &str {
        self.0.partition()
    }
}

impl fmt::Display for ParameterArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a pod's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceArn {
    /// A Secrets Manager secret.
    SecretsManager(SecretArn),
    /// A Systems Manager (Parameter Store) parameter.
    Parameter(ParameterArn),
}

impl SourceArn {
    /// Validate a secret or parameter ARN, chosen by the ARN's service.
    pub fn parse(value: &str) -> Result<Self, AnnotationError> {
        if value.split(':').nth(2) == Some("ssm") {
            ParameterArn::parse(value).map(SourceArn::Parameter)
        } else {
            SecretArn::parse(value).map(SourceArn::SecretsManager)
        }
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        match self {
            SourceArn::SecretsManager(arn) => arn.as_str(),
            SourceArn::Parameter(arn) => arn.as_str(),
        }
    }

    /// The region of the secret or parameter.
    pub fn region(&self) -> &str {
        match self {
            SourceArn::SecretsManager(arn) => arn.region(),
            SourceArn::Parameter(arn) => arn.region(),
        }
    }

    /// The partition of the secret or parameter.
    pub fn partition(&self) -> &str {
        match self {
            SourceArn::SecretsManager(arn) => arn.partition(),
            SourceArn::Parameter(arn) => arn.partition(),
        }
    }
}

impl fmt::Display for SourceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The partition, region and account of an ARN; the problem if one is wrong.
fn check_common(shown: &str, partition: &str, region: &str, account: &str) -> Result<(), String> {
    if !is_partition(partition) {
        return Err(format!(
            "{shown} has partition {}, expected aws, aws-cn, aws-us-gov or another AWS partition",
            quote(partition)
        ));
    }
    if !is_region(region) {
        return Err(format!(
            "{shown} has region {}, expected a region such as us-east-1",
            quote(region)
        ));
    }
    if let Some(problem) = partition_problem(region, partition) {
        return Err(format!("{shown} has region {problem}"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{shown} has account {}, expected 12 digits",
            quote(account)
        ));
    }
    Ok(())
}

/// A Secrets Manager secret name: 1-512 ASCII letters, digits and `/_+=.@-`.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
}

fn is_partition(value: &str) -> bool {
    // aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-eusc, ...
    let mut segments = value.split('-');
    segments.next() == Some("aws")
        && segments.all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
}

/// An AWS partition: its name, the segments its region names start with, and a region of it.
struct Partition {
    name: &'static str,
    /// `us-gov` of `us-gov-west-1`: the region's segments before its name and number.
    prefixes: &'static [&'static str],
    example: &'static str,
}

/// Every AWS partition and the shape of its region names, as the AWS SDKs' partition table
/// (`partitions.json`, `regionRegex`) says: `aws` is `^(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+$`,
/// `aws-cn` `^cn-\w+-\d+$`, `aws-us-gov` `^us-gov-\w+-\d+$`, ...
const PARTITIONS: &[Partition] = &[
    Partition {
        name: "aws",
        prefixes: &["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"],
        example: "us-west-2",
    },
    Partition {
        name: "aws-cn",
        prefixes: &["cn"],
        example: "cn-northwest-1",
    },
    Partition {
        name: "aws-us-gov",
        prefixes: &["us-gov"],
        example: "us-gov-east-1",
    },
    Partition {
        name: "aws-iso",
        prefixes: &["us-iso"],
        example: "us-iso-west-1",
    },
    Partition {
        name: "aws-iso-b",
        prefixes: &["us-isob"],
        example: "us-isob-east-1",
    },
    Partition {
        name: "aws-iso-e",
        prefixes: &["eu-isoe"],
        example: "eu-isoe-west-1",
    },
    Partition {
        name: "aws-iso-f",
        prefixes: &["us-isof"],
        example: "us-isof-south-1",
    },
    Partition {
        name: "aws-eusc",
        prefixes: &["eusc-de"],
        example: "eusc-de-east-1",
    },
];

/// The partition a region (already [`is_region`]) belongs to; `None` for a region of a shape
/// no partition has yet (a region AWS adds later is not refused for it).
pub fn partition_of_region(region: &str) -> Option<&'static str> {
    // The prefix: everything before the region's last two segments (name and number).
    let mut ends = region.rmatch_indices('-').map(|(i, _)| i);
    let prefix = &region[..ends.nth(1)?];
    PARTITIONS
        .iter()
        .find(|p| p.prefixes.contains(&prefix))
        .map(|p| p.name)
}

/// A region of `partition`, for messages.
pub fn example_region(partition: &str) -> Option<&'static str> {
    PARTITIONS
        .iter()
        .find(|p| p.name == partition)
        .map(|p| p.example)
}

/// Why `region` cannot be in `partition` (`us-west-2, which is in partition aws, not aws-cn
/// (a region of aws-cn: cn-northwest-1)`), or `None` when it can or the region's partition is
/// unknown. Every region-against-partition check says it this way.
pub fn partition_problem(region: &str, partition: &str) -> Option<String> {
    let actual = partition_of_region(region)?;
    if actual == partition {
        return None;
    }
    let example = example_region(partition)
        .map(|example| format!(" (a region of {partition}: {example})"))
        .unwrap_or_default();
    Some(format!(
        "{region}, which is in partition {actual}, not {partition}{example}"
    ))
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
pub fn is_region(value: &str) -> bool {
    // us-east-1, cn-north-1, us-gov-west-1, us-isob-east-1, eu-central-2 ...
    let segments: Vec<&str> = value.split('-').collect();
    segments.len() >= 3
        && segments[..segments.len() - 1]
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
        && segments[segments.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_digit())
        && !segments[segments.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

    #[test]
    fn arns_of_every_partition_are_accepted() {
        for arn in [
            ARN,
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a/b_c+d=e.f@g-h",
            "arn:aws-iso-b:secretsmanager:us-isob-east-1:123456789012:secret:x",
        ] {
            let parsed = SecretArn::parse(arn).unwrap_or_else(|e| panic!("{arn}: {e}"));
            assert_eq!(parsed.as_str(), arn);
        }
        assert_eq!(
            SecretArn::parse("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x")
                .unwrap()
                .region(),
            "us-gov-west-1"
        );
    }

    #[test]
    fn regions_belong_to_the_partition_the_sdks_table_says() {
        for (region, partition) in [
            ("us-east-1", Some("aws")),
            ("eu-central-2", Some("aws")),
            ("ap-southeast-5", Some("aws")),
            ("il-central-1", Some("aws")),
            ("mx-central-1", Some("aws")),
            ("cn-north-1", Some("aws-cn")),
            ("cn-northwest-1", Some("aws-cn")),
            ("us-gov-west-1", Some("aws-us-gov")),
            ("us-iso-east-1", Some("aws-iso")),
            ("us-isob-east-1", Some("aws-iso-b")),
            ("eu-isoe-west-1", Some("aws-iso-e")),
            ("us-isof-south-1", Some("aws-iso-f")),
            ("eusc-de-east-1", Some("aws-eusc")),
            // Shapes no partition has (yet): not refused.
            ("xx-east-1", None),
            ("eu-gov-west-1", None),
        ] {
            assert!(is_region(region), "{region}");
            assert_eq!(partition_of_region(region), partition, "{region}");
        }
        for p in PARTITIONS {
            assert_eq!(
                partition_of_region(p.example),
                Some(p.name),
                "{}",
                p.example
            );
        }
        assert_eq!(partition_problem("cn-north-1", "aws-cn"), None);
        assert_eq!(partition_problem("xx-east-1", "aws-cn"), None);
        assert_eq!(
            partition_problem("us-west-2", "aws-cn").as_deref(),
            Some(
                "us-west-2, which is in partition aws, not aws-cn (a region of aws-cn: cn-northwest-1)"
            )
        );
        // An ARN whose own region is of another partition cannot exist.
        for arn in [
            "arn:aws-cn:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
            "arn:aws:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf",
            "arn:aws:secretsmanager:us-gov-west-1:123456789012:secret:db-AbCdEf",
        ] {
            let err = SecretArn::parse(arn).unwrap_err();
            assert!(
                err.problem.contains("which is in partition"),
                "{arn}: {err}"
            );
        }
        let err = ParameterArn::parse("arn:aws-us-gov:ssm:us-east-1:123456789012:parameter/x")
            .unwrap_err();
        assert!(
            err.problem
                .contains("us-east-1, which is in partition aws, not aws-us-gov"),
            "{err}"
        );
        let parsed =
            SecretArn::parse("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf")
                .unwrap();
        assert_eq!(parsed.partition(), "aws-cn");
    }

    #[test]
    fn partial_and_ambiguous_arns_by_the_shape_of_the_name() {
        let arn = |name: &str| {
            SecretArn::parse(&format!(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}"
            ))
            .unwrap()
        };
        for (name, partial, ambiguous) in [
            ("db-AbCd12", false, false),
            ("team/db-password-hlRvvF", false, false),
            ("db-abcdeF", false, false),
            ("db-master", false, true),
            ("db-BACKUP", false, true),
            ("cert-202401", false, true),
            ("db", true, false),
            ("db-password", true, false),
            ("db-AbCd1", true, false),
            ("db_AbCd12", true, false),
            ("-abcdef", true, false),
            ("db-AbCd1+", true, false),
        ] {
            assert_eq!(arn(name).is_partial(), partial, "{name}");
            assert_eq!(arn(name).is_ambiguous(), ambiguous, "{name}");
        }
        let full = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert!(arn("db-AbCdEf").is_arn_of(full));
        assert!(arn("db").is_arn_of(full));
        assert!(!arn("d").is_arn_of(full));
        assert!(!arn("db").is_arn_of(&full.replace("123456789012", "210987654321")));
        assert!(!arn("db").is_arn_of(&format!("{full}x")));
    }

    #[test]
    fn bad_arns_are_denied_with_the_reason() {
        for (arn, expect) in [
            ("database-password", "not an ARN"),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012",
                "not a Secrets Manager secret ARN",
            ),
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/x",
                "not of secretsmanager",
            ),
            (
                "arn:gcp:secretsmanager:us-east-1:123456789012:secret:x",
                "partition",
            ),
            (
                "arn:aws:secretsmanager:useast1:123456789012:secret:x",
                "region",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:1234:secret:x",
                "12 digits",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:key:x",
                "resource type",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
                "secret name",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:a\"b",
                "secret name",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:a/../../b\n",
                "secret name",
            ),
        ] {
            let err = SecretArn::parse(arn).unwrap_err();
            assert_eq!(err.key, SECRET_ARN);
            assert!(err.problem.contains(expect), "{arn}: {err}");
            assert!(err.fix.contains("full ARN"));
        }
    }
}
