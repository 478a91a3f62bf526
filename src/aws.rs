//! The one place that builds AWS clients.
//!
//! Credentials come from the SDK's default chain (IRSA web identity, EKS Pod Identity, env,
//! profile, ...); endpoints from the SDK's standard `AWS_ENDPOINT_URL*` variables. The HTTP
//! client is rustls with ring, the TLS stack the webhook uses, so the binary carries one. The
//! SDK's own retries are off: callers retry with their own deadline (see [`crate::agent`]).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// How long one HTTP attempt (connect, send, read the answer) may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// One attempt of one operation.
    pub attempt: Duration,
}

/// Load the shared AWS configuration. `region` overrides the SDK's region chain.
pub async fn sdk_config(region: Option<String>, timeouts: Timeouts) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_attempt_timeout(timeouts.attempt)
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}

/// A Secrets Manager client.
pub fn secrets_manager(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}
