//! The rotation sidecar's Prometheus metrics, served at `/metrics` on the port the plan names
//! (`secrets.k8s.aws/metrics-port`, or the webhook's `--sidecar-metrics-port`), on loopback or
//! on the pod IP. Only the rotation sidecar serves them: an agent that fetches once exits.
//!
//! Labels carry no value and no ARN: a secret is labelled by its name in the pod (the `.<n>` of
//! its annotations; [`UNNAMED`] for the seed's unnamed secret), so neither account ids nor
//! secret names reach the monitoring system, and a pod has as many series as it names secrets.
//!
//! The metrics are process-wide: [`record_call`] counts every AWS call where every call is made
//! ([`super::fetch::retrying`]), so nothing else has to pass a handle around. An agent that
//! does not serve counts for nobody, which costs a few atomic additions.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tracing::info;

use super::failure::{Classified, Failure, FailureKind};
use super::sources::Operation;
use crate::contract::Plan;
use crate::spec::MetricsAddress;

/// Content type of the exposition format served.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `secret` label of the seed's unnamed secret (a name in the pod is a DNS label, so it
/// can never be this).
pub const UNNAMED: &str = "-";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    secret: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    outcome: &'static str,
}

type Timestamp = Gauge<f64, AtomicU64>;

/// The agent's metrics and their registry.
struct Metrics {
    registry: Registry,
    last_check: Family<SecretLabels, Timestamp>,
    last_change: Family<SecretLabels, Timestamp>,
    failures: Family<KindLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    interval: Gauge<f64, AtomicU64>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("secret_inject_agent");
    let last_check = Family::<SecretLabels, Timestamp>::default();
    registry.register_with_unit(
        "last_check_timestamp",
        "When the rotation sidecar last learned a secret's current version (unix time), by the \
         secret's name in the pod (- for the unnamed secret)",
        Unit::Seconds,
        last_check.clone(),
    );
    let last_change = Family::<SecretLabels, Timestamp>::default();
    registry.register_with_unit(
        "last_change_timestamp",
        "When the rotation sidecar last wrote a new version of a secret (unix time; its first \
         write included), by the secret's name in the pod",
        Unit::Seconds,
        last_change.clone(),
    );
    let failures = Family::<KindLabels, Counter>::default();
    registry.register(
        "failures",
        "Failures of the rotation sidecar's checks and writes, by kind (the agent's error \
         classes: access_denied, not_found, unavailable, write, ...)",
        failures.clone(),
    );
    let calls = Family::<CallLabels, Counter>::default();
    registry.register(
        "aws_calls",
        "AWS calls (each attempt), by operation and outcome (success, throttled, denied, \
         not_found, credentials, unavailable, timeout, error)",
        calls.clone(),
    );
    let interval = Gauge::<f64, AtomicU64>::default();
    registry.register_with_unit(
        "refresh_interval",
        "The rotation sidecar's check interval (before jitter)",
        Unit::Seconds,
        interval.clone(),
    );
    // Series an alert compares over time exist from the start, at zero.
    for kind in FailureKind::ALL {
        failures
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc_by(0);
    }
    for operation in Operation::ALL {
        calls
            .get_or_create(&CallLabels {
                operation: operation.name(),
                outcome: THROTTLED,
            })
            .inc_by(0);
    }
    Metrics {
        registry,
        last_check,
        last_change,
        failures,
        calls,
        interval,
    }
});

const THROTTLED: &str = "throttled";

/// The `outcome` label of one attempt of an AWS call.
fn outcome<T>(result: &Result<T, &Classified>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(Classified::Permanent(failure)) => match failure.kind {
            FailureKind::AccessDenied => "denied",
            FailureKind::NotFound => "not_found",
            FailureKind::Credentials | FailureKind::NoIdentity => "credentials",
            _ => "error",
        },
        Err(Classified::Transient { code, .. }) => {
            if is_throttling(code) {
                THROTTLED
            } else if code == "Timeout" {
                "timeout"
            } else {
                "unavailable"
            }
        }
    }
}

/// Whether an error code says the caller went over a quota.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "HTTP429"
    )
}

/// Count one attempt of `operation`: a success, or the classified error.
pub(crate) fn record_call<T>(operation: &'static str, result: Result<T, &Classified>) {
    METRICS
        .calls
        .get_or_create(&CallLabels {
            operation,
            outcome: outcome(&result),
        })
        .inc();
}

/// Count a failure of a check or a write.
pub(crate) fn record_failure(failure: &Failure) {
    METRICS
        .failures
        .get_or_create(&KindLabels {
            kind: failure.kind.label(),
        })
        .inc();
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `secret` labels of the plan's secrets that `matches` selects.
fn labels<'a>(
    plan: &'a Plan,
    matches: impl Fn(&crate::contract::SecretPlan) -> bool + 'a,
) -> impl Iterator<Item = SecretLabels> + 'a {
    plan.secrets
        .iter()
        .filter(move |s| matches(s))
        .map(|s| SecretLabels {
            secret: s
                .name
                .as_ref()
                .map_or(UNNAMED, |name| name.as_str())
                .to_owned(),
        })
}

/// The current versions of the secrets `matches` selects were learned now.
pub(crate) fn checked(plan: &Plan, matches: impl Fn(&crate::contract::SecretPlan) -> bool) {
    let now = now();
    for labels in labels(plan, matches) {
        METRICS.last_check.get_or_create(&labels).set(now);
    }
}

/// New versions of the secrets `matches` selects were written now.
pub(crate) fn changed(plan: &Plan, matches: impl Fn(&crate::contract::SecretPlan) -> bool) {
    let now = now();
    for labels in labels(plan, matches) {
        METRICS.last_change.get_or_create(&labels).set(now);
    }
}

/// The metrics in the OpenMetrics text format.
pub fn encode_text() -> String {
    let mut out = String::with_capacity(2048);
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &METRICS.registry);
    out
}

/// Listen on the plan's metrics port, if it names one, and serve `/metrics` on the current
/// runtime until the process ends. A port that cannot be bound fails the sidecar at start,
/// naming the port: a sidecar that cannot be watched should say so.
pub(crate) fn serve(plan: &Plan) -> Result<(), Failure> {
    let Some(refresh) = &plan.refresh else {
        return Ok(());
    };
    let Some(port) = refresh.metrics_port else {
        return Ok(());
    };
    METRICS.interval.set(refresh.interval.as_secs_f64());
    let host = match refresh.metrics_address.unwrap_or(MetricsAddress::Loopback) {
        MetricsAddress::Loopback => Ipv4Addr::LOCALHOST,
        MetricsAddress::Pod => Ipv4Addr::UNSPECIFIED,
    };
    let address = SocketAddr::from((host, port));
    let listener = std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        })
        .map_err(|e| {
            Failure::new(
                FailureKind::Config,
                "MetricsPortUnavailable",
                format!(
                    "cannot serve metrics on {address}: {e}; choose another \
                     secrets.k8s.aws/metrics-port (no container of the pod may listen on it)"
                ),
            )
        })?;
    info!(%address, "serving metrics at /metrics");
    tokio::spawn(accept(listener));
    Ok(())
}

/// Connections open at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;

async fn accept(listener: tokio::net::TcpListener) {
    crate::plain_http::serve(listener, MAX_CONNECTIONS, answer).await;
}

fn answer<B>(request: &Request<B>) -> Response<http_body_util::Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, CONTENT_TYPE, encode_text()),
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n".to_owned(),
        ),
    };
    let mut response = Response::new(http_body_util::Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_sort_throttling_denials_and_timeouts() {
        let transient = |code: &str| Classified::Transient {
            code: code.to_owned(),
            detail: String::new(),
        };
        let permanent = |kind| Classified::Permanent(Failure::new(kind, "X", "x"));
        assert_eq!(outcome(&Ok::<(), _>(())), "success");
        for (classified, expected) in [
            (transient("ThrottlingException"), "throttled"),
            (transient("TooManyRequestsException"), "throttled"),
            (transient("Timeout"), "timeout"),
            (transient("InternalServiceError"), "unavailable"),
            (permanent(FailureKind::AccessDenied), "denied"),
            (permanent(FailureKind::NotFound), "not_found"),
            (permanent(FailureKind::Credentials), "credentials"),
            (permanent(FailureKind::Unusable), "error"),
        ] {
            assert_eq!(outcome(&Err::<(), _>(&classified)), expected);
        }
    }

    #[test]
    fn the_text_names_every_metric_and_pre_creates_the_series_alerts_compare() {
        record_call::<()>("GetSecretValue", Ok(()));
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let plan = Plan::for_arn(crate::spec::SecretArn::parse(arn).unwrap());
        checked(&plan, |_| true);
        changed(&plan, |_| true);
        let text = encode_text();
        assert!(
            !text.contains("123456789012"),
            "no ARN in the metrics:\n{text}"
        );
        assert!(
            text.contains("secret_inject_agent_last_check_timestamp_seconds{secret=\"-\"}"),
            "{text}"
        );
        for name in [
            "secret_inject_agent_failures_total{kind=\"access_denied\"} 0",
            "secret_inject_agent_aws_calls_total{operation=\"DescribeSecret\",outcome=\"throttled\"} 0",
            "secret_inject_agent_aws_calls_total{operation=\"GetSecretValue\",outcome=\"success\"}",
            "# TYPE secret_inject_agent_last_check_timestamp_seconds gauge",
            "# TYPE secret_inject_agent_last_change_timestamp_seconds gauge",
            "# TYPE secret_inject_agent_refresh_interval_seconds gauge",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
