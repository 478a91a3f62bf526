//! TLS for the webhook: certificates from PEM files, re-read when they change on disk, or a
//! generated development certificate authority and serving certificate.
//!
//! Kubernetes updates a Secret volume by swapping a `..data` symlink, so watching the files
//! themselves (inotify) misses updates. [`ReloadingResolver`] instead re-reads both files on an
//! interval and swaps the served certificate when their bytes change and parse; handshakes in
//! flight keep the certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate could not be loaded. The cause is the error's `source()`, never repeated in
/// its own message (`{:#}` and [`crate::errors::error_chain`] print it after).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM.
    #[error("{path}: {problem}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The key does not belong to the certificate, or is of an unsupported type.
    #[error("certificate {cert} and key {key}: {problem}")]
    Mismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Generating the development certificate failed.
    #[error("cannot generate the development certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration")]
    Config(#[from] rustls::Error),
}

/// Certificate and key files in PEM.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertFiles {
    /// Read both files.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

/// Parse a PEM certificate chain and key into a [`CertifiedKey`], checking they belong together.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &CertFiles,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            problem: format!("not a PEM certificate chain: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert.clone(),
            problem: "holds no CERTIFICATE block".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        problem: format!("holds no usable PRIVATE KEY block: {e}"),
    })?;
    let mismatch = |problem: String| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        problem,
    };
    let signing_key =
        provider::sign::any_supported_type(&key).map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| mismatch(format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// Read the certificate and key and parse them as a pair; `None` when `unchanged` says they are
/// what is served already. The two files are read one after the other, so a Secret volume's
/// `..data` symlink swap between the reads gives a new certificate with the old key: a pair that
/// disagrees is read once more before it counts as an error.
fn read_pair(
    files: &CertFiles,
    mut read: impl FnMut(&CertFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError>,
    unchanged: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<Option<Loaded>, TlsError> {
    let mut retried = false;
    loop {
        let (cert_pem, key_pem) = read(files)?;
        if unchanged(&cert_pem, &key_pem) {
            return Ok(None);
        }
        match certified_key(&cert_pem, &key_pem, files) {
            Ok(key) => {
                return Ok(Some(Loaded::new(key, cert_pem, key_pem)));
            }
            Err(TlsError::Mismatch { .. }) if !retried => retried = true,
            Err(error) => return Err(error),
        }
    }
}

/// Serves the current certificate; [`ReloadingResolver::reload`] swaps it.
#[derive(Debug)]
pub struct ReloadingResolver {
    files: Option<CertFiles>,
    current: RwLock<Loaded>,
    client_roots: Option<Arc<rustls::RootCertStore>>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// The leaf certificate's notAfter (Unix seconds), when its DER could be read.
    not_after: Option<i64>,
}

impl Loaded {
    fn new(key: CertifiedKey, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        let not_after = key.end_entity_cert().ok().and_then(|der| not_after(der));
        Self {
            key: Arc::new(key),
            cert_pem,
            key_pem,
            not_after,
        }
    }
}

/// The `notAfter` of a DER X.509 certificate, in Unix seconds; `None` when the bytes are not a
/// certificate of that shape. Reads only the few fields before `validity`; every length is
/// checked, so no input panics.
pub fn not_after(der: &[u8]) -> Option<i64> {
    /// One DER tag-length-value: (tag, contents, what follows).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let (tag, _, mut rest) = tlv(tbs)?;
    // [0] EXPLICIT version, then serialNumber; without a version the first field was it.
    if tag == 0xa0 {
        rest = tlv(rest)?.2;
    }
    // signature AlgorithmIdentifier, issuer Name.
    rest = tlv(rest)?.2;
    rest = tlv(rest)?.2;
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    // notBefore, then notAfter.
    let (_, _, after) = tlv(validity)?;
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    // UTCTime YYMMDDHHMMSSZ (1950-2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
    let (year, at) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if !text.ends_with('Z') {
        return None;
    }
    let (month, day) = (digits(at..at + 2)?, digits(at + 2..at + 4)?);
    let (hour, minute, second) = (
        digits(at + 4..at + 6)?,
        digits(at + 6..at + 8)?,
        digits(at + 8..at + 10)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// A new certificate is being served.
    Reloaded,
}

impl ReloadingResolver {
    /// Load the certificate from files.
    pub fn from_files(files: CertFiles) -> Result<Self, TlsError> {
        // Nothing is served yet, so nothing is "unchanged": the pair is always returned.
        let loaded =
            read_pair(&files, CertFiles::read, |_, _| false)?.ok_or_else(|| TlsError::Pem {
                path: files.cert.clone(),
                problem: "could not be read".to_owned(),
            })?;
        Ok(Self {
            files: Some(files),
            current: RwLock::new(loaded),
            client_roots: None,
        })
    }

    /// Serve a fixed certificate (the generated development certificate).
    pub fn fixed(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let files = CertFiles {
            cert: "<generated>".into(),
            key: "<generated>".into(),
        };
        let key = certified_key(cert_pem, key_pem, &files)?;
        Ok(Self {
            files: None,
            current: RwLock::new(Loaded::new(key, cert_pem.to_vec(), key_pem.to_vec())),
            client_roots: None,
        })
    }

    /// Require every client to present a certificate signed by a CA in `ca_file` (PEM): the
    /// API server's client certificate from its AdmissionConfiguration, on clusters where it
    /// can be configured. Without it, anyone who reaches the port may send a review.
    pub fn require_client_certificates(mut self, ca_file: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
            path: ca_file.to_owned(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| TlsError::Pem {
                path: ca_file.to_owned(),
                problem: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| TlsError::Pem {
                path: ca_file.to_owned(),
                problem: format!("not a usable CA certificate: {e}"),
            })?;
        }
        if roots.is_empty() {
            return Err(TlsError::Pem {
                path: ca_file.to_owned(),
                problem: "holds no CERTIFICATE block; give the CA that signed the API \
                          server's webhook client certificate"
                    .to_owned(),
            });
        }
        self.client_roots = Some(Arc::new(roots));
        Ok(self)
    }

    /// When the served certificate expires (its `notAfter`, Unix seconds); `None` when its DER
    /// could not be read.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    /// The files, when the certificate comes from files.
    pub fn files(&self) -> Option<&CertFiles> {
        self.files.as_ref()
    }

    /// Re-read the files; swap the certificate when they changed and are valid. On error the
    /// previous certificate stays in service.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        self.reload_with(CertFiles::read)
    }

    fn reload_with(
        &self,
        read: impl FnMut(&CertFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError>,
    ) -> Result<Reload, TlsError> {
        let Some(files) = &self.files else {
            return Ok(Reload::Unchanged);
        };
        let unchanged = |cert: &[u8], key: &[u8]| {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            current.cert_pem == cert && current.key_pem == key
        };
        let Some(loaded) = read_pair(files, read, unchanged)? else {
            return Ok(Reload::Unchanged);
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(Reload::Reloaded)
    }

    /// Build a rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1) that serves
    /// this resolver's certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(provider::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_roots {
            Some(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    provider,
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

/// A generated development CA and a serving certificate it signed.
pub struct DevCertificate {
    /// The CA certificate (PEM): what clients trust, the webhook's `caBundle`.
    pub ca_pem: String,
    /// The serving certificate (PEM).
    pub cert_pem: String,
    /// The serving certificate's key (PEM).
    pub key_pem: String,
    /// The names it is valid for.
    pub names: Vec<String>,
}

/// Generate a development CA and a serving certificate for `localhost`, `127.0.0.1`, `::1` and
/// the Service's DNS names.
pub fn generate_dev_certificate(
    service: &str,
    namespace: &str,
) -> Result<DevCertificate, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "secret-inject development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let mut params = CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(DevCertificate {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names,
    })
}

/// Re-read the certificate files every `interval` until `stop` resolves; `on_result` sees each
/// attempt that changed something or failed.
pub async fn watch(
    resolver: Arc<ReloadingResolver>,
    interval: Duration,
    mut on_result: impl FnMut(Result<Reload, TlsError>),
) {
    if resolver.files().is_none() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let result = resolver.reload();
        if !matches!(result, Ok(Reload::Unchanged)) {
            on_result(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn generated_certificate_loads_and_reload_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate_dev_certificate("svc", "ns").unwrap();
        assert!(first.names.contains(&"svc.ns.svc".to_owned()));
        let files = CertFiles {
            cert: write(dir.path(), "tls.crt", &first.cert_pem),
            key: write(dir.path(), "tls.key", &first.key_pem),
        };
        let resolver = ReloadingResolver::from_files(files.clone()).unwrap();
        assert_eq!(resolver.reload().unwrap(), Reload::Unchanged);

        let second = generate_dev_certificate("svc", "ns").unwrap();
        // A new certificate with the old key is refused, and the old one stays.
        write(dir.path(), "tls.crt", &second.cert_pem);
        let err = resolver.reload().unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        write(dir.path(), "tls.key", &second.key_pem);
        assert_eq!(resolver.reload().unwrap(), Reload::Reloaded);
        assert_eq!(resolver.reload().unwrap(), Reload::Unchanged);
    }

    #[test]
    fn a_swap_between_the_two_reads_is_read_again_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate_dev_certificate("svc", "ns").unwrap();
        let new = generate_dev_certificate("svc", "ns").unwrap();
        let files = CertFiles {
            cert: write(dir.path(), "tls.crt", &old.cert_pem),
            key: write(dir.path(), "tls.key", &old.key_pem),
        };
        let resolver = ReloadingResolver::from_files(files).unwrap();
        // First read: the new certificate, then the old key (the swap came in between).
        let mut reads = vec![
            (new.cert_pem.clone(), new.key_pem.clone()),
            (new.cert_pem.clone(), old.key_pem.clone()),
        ];
        let result = resolver.reload_with(|_| {
            let (cert, key) = reads.pop().expect("read at most twice");
            Ok((cert.into_bytes(), key.into_bytes()))
        });
        assert_eq!(result.unwrap(), Reload::Reloaded);
        assert!(reads.is_empty());
        // A pair that disagrees twice is an error, and the served certificate stays.
        let result = resolver.reload_with(|_| {
            Ok((
                old.cert_pem.clone().into_bytes(),
                new.key_pem.clone().into_bytes(),
            ))
        });
        assert!(
            matches!(result, Err(TlsError::Mismatch { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn the_expiry_is_read_from_the_certificate_in_both_time_encodings() {
        use rcgen::{CertificateParams, KeyPair, date_time_ymd};
        let der = |year: i32, month: u8, day: u8| {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.not_after = date_time_ymd(year, month, day);
            let key = KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        // UTCTime (years before 2050) and GeneralizedTime (from 2050), as rcgen encodes them;
        // the values are `date -u -d ... +%s`.
        assert_eq!(not_after(&der(2030, 1, 2)), Some(1_893_542_400));
        assert_eq!(not_after(&der(2049, 12, 31)), Some(2_524_521_600));
        assert_eq!(not_after(&der(2051, 3, 1)), Some(2_561_241_600));
        // Hostile bytes: every truncation and a flipped byte at each place read nothing or a
        // value, never a panic.
        let whole = der(2030, 1, 2);
        for end in 0..whole.len() {
            let _ = not_after(&whole[..end]);
        }
        for at in 0..whole.len().min(300) {
            let mut bent = whole.clone();
            bent[at] ^= 0xff;
            let _ = not_after(&bent);
        }
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        // The resolver serves it: the development certificate expires after now.
        let dev = generate_dev_certificate("svc", "ns").unwrap();
        let resolver =
            ReloadingResolver::fixed(dev.cert_pem.as_bytes(), dev.key_pem.as_bytes()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(resolver.not_after().unwrap() > now);
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: write(dir.path(), "tls.crt", "not pem"),
            key: write(dir.path(), "tls.key", "not pem"),
        };
        let err = ReloadingResolver::from_files(files).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        let missing = CertFiles {
            cert: dir.path().join("nope.crt"),
            key: dir.path().join("nope.key"),
        };
        let err = ReloadingResolver::from_files(missing).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }
}
