//! What the cluster supports, for the switches left on `auto`: the webhook asks the API server's
//! `/version` (readable by every ServiceAccount: `system:public-info-viewer`) once at start, with
//! the pod's ServiceAccount token and CA. Outside a cluster, or when the API server does not
//! answer, `auto` is off and a warning says how to set it.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// Where a pod finds its ServiceAccount's token and the cluster's CA.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`] (a webhook run outside a pod, and the tests).
const SERVICE_ACCOUNT_DIR_ENV: &str = "SECRET_INJECT_SERVICE_ACCOUNT_DIR";

/// A Kubernetes version, major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version (35 for 1.35).
    pub minor: u32,
}

impl KubeVersion {
    /// The first version with fileKeyRef env vars on by default (EnvFiles beta).
    pub const ENV_FILES: KubeVersion = KubeVersion {
        major: 1,
        minor: 35,
    };

    /// The first version with native sidecars on by default (SidecarContainers beta).
    pub const NATIVE_SIDECARS: KubeVersion = KubeVersion {
        major: 1,
        minor: 29,
    };

    /// What `inject` assumes when it is not told the cluster's version: the oldest Kubernetes
    /// the plain manifests in `deploy/` are rendered for (`scripts/render-manifests`), so that
    /// `inject` denies what a webhook installed from them denies.
    pub const INJECT_DEFAULT: KubeVersion = KubeVersion {
        major: 1,
        minor: 30,
    };

    /// Parse the `/version` answer (`{"major":"1","minor":"35+",...}`).
    pub fn from_version_json(body: &[u8]) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let number = |field: &str| -> Option<u32> {
            let text = value.get(field)?.as_str()?;
            let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(Self {
            major: number("major")?,
            minor: number("minor")?,
        })
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = String;

    /// `1.35`, `v1.35` or `1.35.2` (the patch is ignored), as `kubectl version` prints it.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a Kubernetes version such as 1.35");
        let mut parts = text.strip_prefix('v').unwrap_or(text).splitn(3, '.');
        let mut number = || -> Result<u32, String> {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 4 {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let (major, minor) = (number()?, number()?);
        if major == 0 {
            return Err(bad());
        }
        Ok(Self { major, minor })
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The API server's version, from inside the cluster; `None` (logged) when it cannot be known.
pub async fn probe_version() -> Option<KubeVersion> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
    match tokio::time::timeout(Duration::from_secs(5), get_version(&host, &port)).await {
        Ok(Ok(version)) => {
            info!(
                major = version.major,
                minor = version.minor,
                "API server version"
            );
            Some(version)
        }
        Ok(Err(error)) => {
            warn!(%error, "cannot read the API server's /version");
            None
        }
        Err(_) => {
            warn!("the API server's /version did not answer within 5s");
            None
        }
    }
}

async fn get_version(host: &str, port: &str) -> Result<KubeVersion, String> {
    let dir = std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SERVICE_ACCOUNT_DIR.into());
    let token = std::fs::read_to_string(dir.join("token")).map_err(|e| format!("token: {e}"))?;
    let ca = std::fs::read(dir.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(cert.map_err(|e| format!("ca.crt: {e}"))?)
            .map_err(|e| format!("ca.crt: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("server name {host}: {e}"))?;
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {address}: {e}"))?;
    let request = format!(
        "GET /version HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nAccept: \
         application/json\r\nConnection: close\r\n\r\n",
        token.trim()
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.take(64 * 1024)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header in the answer")?;
    let status = String::from_utf8_lossy(&answer[..split.min(32)]).into_owned();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("answer {status:?}"));
    }
    let body = &answer[split + 4..];
    // A chunked body holds the JSON object between its size lines.
    let start = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let end = body
        .iter()
        .rposition(|b| *b == b'}')
        .map_or(body.len(), |e| e + 1);
    KubeVersion::from_version_json(&body[start..end])
        .ok_or_else(|| "no version in the answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_kubectl_prints_them() {
        for (text, minor) in [
            ("1.35", 35),
            ("v1.29", 29),
            ("1.30.4", 30),
            ("v1.36.0-eks", 36),
        ] {
            let version: KubeVersion = text.parse().unwrap();
            assert_eq!(version, KubeVersion { major: 1, minor }, "{text}");
            assert_eq!(version.to_string(), format!("1.{minor}"));
        }
        for bad in [
            "",
            "1",
            "1.",
            "x.35",
            "1.35x",
            "0.35",
            "1.-3",
            "1.123456789",
        ] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_parse_with_provider_suffixes() {
        let v = KubeVersion::from_version_json(
            br#"{"major":"1","minor":"35+","gitVersion":"v1.35.2-eks-1"}"#,
        );
        assert_eq!(
            v,
            Some(KubeVersion {
                major: 1,
                minor: 35
            })
        );
        assert!(v.unwrap() >= KubeVersion::ENV_FILES);
        let old = KubeVersion::from_version_json(br#"{"major":"1","minor":"34"}"#).unwrap();
        assert!(old < KubeVersion::ENV_FILES);
        assert_eq!(KubeVersion::from_version_json(b"{}"), None);
    }
}
