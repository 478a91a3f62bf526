//! Prometheus metrics of the webhook, served on the admin port at `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::review::Outcome;

/// Content type of the exposition format [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `secret_inject_secret_writer_versions_total{result}`: what became of the versions the secret
/// writer staged (see [`crate::webhook::promote`]). A handle on the one registered family.
#[derive(Clone, Debug)]
pub struct SecretWriterVersions(Family<ResultLabels, Counter>);

impl SecretWriterVersions {
    /// Count one version's result.
    pub fn observe(&self, result: super::promote::VersionResult) {
        self.0
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why the server closed or refused a connection on the webhook port
/// (`secret_inject_connections_closed_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Accepted and closed at once: `--max-connections` were open.
    MaxConnections,
    /// The TLS handshake did not finish within `--header-read-timeout`.
    HandshakeTimeout,
    /// The TLS handshake failed.
    HandshakeError,
    /// No request (headers complete) within `--header-read-timeout` of the accept.
    FirstRequestTimeout,
    /// No request in progress for `--idle-timeout`.
    IdleTimeout,
}

impl CloseReason {
    /// Every reason.
    pub const ALL: [CloseReason; 5] = [
        CloseReason::MaxConnections,
        CloseReason::HandshakeTimeout,
        CloseReason::HandshakeError,
        CloseReason::FirstRequestTimeout,
        CloseReason::IdleTimeout,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::MaxConnections => "max_connections",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HandshakeError => "handshake_error",
            CloseReason::FirstRequestTimeout => "first_request_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
        }
    }
}

/// Why a request was refused before its review (`secret_inject_requests_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Its body would have taken the request bodies in flight over
    /// `--max-in-flight-body-bytes` (503).
    MaxInFlightBodyBytes,
}

impl RejectReason {
    /// Every reason.
    pub const ALL: [RejectReason; 1] = [RejectReason::MaxInFlightBodyBytes];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MaxInFlightBodyBytes => "max_in_flight_body_bytes",
        }
    }
}

/// The connection and load metrics, shared by the server's tasks (cheap to clone: handles on
/// the registered metrics).
#[derive(Clone, Debug, Default)]
pub struct LoadMetrics {
    /// `secret_inject_connections_open`.
    pub connections_open: Gauge,
    /// `secret_inject_connections_accepted_total`.
    pub connections_accepted: Counter,
    connections_closed: Family<ReasonLabels, Counter>,
    /// `secret_inject_in_flight_request_body_bytes`.
    pub body_bytes_in_flight: Gauge,
    requests_rejected: Family<ReasonLabels, Counter>,
    /// `secret_inject_admission_reviews_in_flight`.
    pub reviews_in_flight: Gauge,
    /// `secret_inject_admission_reviews_queued`.
    pub reviews_queued: Gauge,
}

impl LoadMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Open connections on the webhook port (TLS handshakes included)",
            self.connections_open.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted on the webhook port, including those closed at once over \
             --max-connections",
            self.connections_accepted.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections on the webhook port the server refused or closed, by reason \
             (max_connections, handshake_timeout, handshake_error, first_request_timeout, \
             idle_timeout); connections the client closed are not counted",
            self.connections_closed.clone(),
        );
        registry.register_with_unit(
            "in_flight_request_body",
            "Request body bytes read or reserved and not yet released, across all connections \
             (at most --max-in-flight-body-bytes)",
            prometheus_client::registry::Unit::Bytes,
            self.body_bytes_in_flight.clone(),
        );
        registry.register(
            "requests_rejected",
            "Requests answered with an error before their review because of a server-wide \
             limit, by reason (max_in_flight_body_bytes)",
            self.requests_rejected.clone(),
        );
        registry.register(
            "admission_reviews_in_flight",
            "Reviews being computed",
            self.reviews_in_flight.clone(),
        );
        registry.register(
            "admission_reviews_queued",
            "Large reviews waiting for one of the --max-concurrent-reviews slots",
            self.reviews_queued.clone(),
        );
        for reason in CloseReason::ALL {
            let _ = self.connections_closed.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for reason in RejectReason::ALL {
            let _ = self.requests_rejected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
    }

    /// Count a connection the server refused or closed.
    pub fn observe_close(&self, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Count a request refused before its review.
    pub fn observe_reject(&self, reason: RejectReason) {
        self.requests_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    load: LoadMetrics,
    reviews: Family<ReviewLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    writer_versions: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secret_inject");
        let load = LoadMetrics::default();
        load.register(&mut registry);
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "AdmissionReviews answered, by endpoint (pods) and outcome (mutated, skipped, \
             denied, invalid)",
            reviews.clone(),
        );
        // 25 µs .. ~0.4 s
        let duration = Family::<EndpointLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_025, 2.0, 15))) as fn() -> Histogram,
        );
        registry.register(
            "admission_review_duration_seconds",
            "Time from a request's headers to its response, by endpoint",
            duration.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Certificate reloads after the files changed on disk, by result (success, failure)",
            reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (its notAfter, Unix seconds), updated on \
             every reload; 0 until a certificate is loaded",
            certificate_expiry.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::VERSION,
                revision: crate::REVISION,
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        let writer_versions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "secret_writer_versions",
            "Versions the secret writer staged, and what became of them (staged, promoted, \
             unpersisted: never persisted by the API server, refused, failed)",
            writer_versions.clone(),
        );
        Self {
            registry,
            load,
            reviews,
            duration,
            reloads,
            certificate_expiry,
            writer_versions,
        }
    }

    /// The connection and load metrics.
    pub fn load(&self) -> &LoadMetrics {
        &self.load
    }

    /// Pre-create an endpoint's label sets, so dashboards see zeros before the first review.
    pub fn register_endpoint(&self, endpoint: &'static str) {
        for outcome in Outcome::ALL {
            let _ = self.reviews.get_or_create(&ReviewLabels {
                endpoint,
                outcome: outcome.as_str(),
            });
        }
        let _ = self.duration.get_or_create(&EndpointLabels { endpoint });
    }

    /// Count one review.
    pub fn observe_review(&self, endpoint: &'static str, outcome: Outcome, seconds: f64) {
        self.reviews
            .get_or_create(&ReviewLabels {
                endpoint,
                outcome: outcome.as_str(),
            })
            .inc();
        self.duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
    }

    /// The secret writer's version counter, with every result at zero.
    pub fn secret_writer_versions(&self) -> SecretWriterVersions {
        for result in super::promote::VersionResult::ALL {
            let _ = self.writer_versions.get_or_create(&ResultLabels {
                result: result.as_str(),
            });
        }
        SecretWriterVersions(self.writer_versions.clone())
    }

    /// Count one certificate reload.
    pub fn observe_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// The served certificate's expiry (`notAfter`, Unix seconds), or 0 when it is unknown.
    pub fn set_certificate_expiry(&self, not_after: Option<i64>) {
        self.certificate_expiry.set(not_after.unwrap_or(0));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.register_endpoint("pods");
        metrics.observe_review("pods", Outcome::Mutated, 0.0001);
        metrics.observe_review("pods", Outcome::Mutated, 0.0001);
        metrics.observe_review("pods", Outcome::Denied, 0.0001);
        metrics.observe_reload(true);
        metrics.set_certificate_expiry(Some(1_900_000_000));
        let text = metrics.encode();
        assert!(
            text.contains("secret_inject_tls_certificate_expiry_timestamp_seconds 1900000000\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"mutated\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"denied\"} 1"
        ));
        assert!(text.contains(
            "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"invalid\"} 0"
        ));
        assert!(text.contains(
            "secret_inject_admission_review_duration_seconds_count{endpoint=\"pods\"} 3"
        ));
        assert!(text.contains("secret_inject_tls_certificate_reloads_total{result=\"success\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
