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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    reloads: Family<ResultLabels, Counter>,
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
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        Self {
            registry,
            reviews,
            duration,
            reloads,
        }
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

    /// Count one certificate reload.
    pub fn observe_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
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
        let text = metrics.encode();
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
