//! The endpoint's TLS: its files loaded and checked, the one way to turn
//! them into a [`ServerConfig`], and the configuration in service,
//! replaced on SIGHUP or when a file changes.
//!
//! - Every file is read as a regular file under a size cap
//!   (`crate::bounded_file`) and checked before use; every failure names the
//!   file and the fix (missing, unreadable, unparsable, expired, a key that
//!   group or others may read, a CRL the parser refuses and why).
//! - Every TLS choice is made here, by construction: TLS 1.3 only (1.2 is
//!   not even compiled into rustls), the profile's suites, groups and
//!   signature algorithms, a client certificate always required, ALPN
//!   http/1.1, no 0-RTT, no tickets, no session cache.
//! - A reload builds a new configuration completely before it replaces the
//!   old one; if anything is wrong the old one stays (event
//!   `metrics_tls_reload`, `kept_old`). A burst of SIGHUPs is one reload.
//!   Open connections keep the configuration they started with. A panic
//!   inside a parser is caught and refused like a bad file.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, alg_id};
use rustls::server::{NoServerSessionStorage, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::guard::AllowListVerifier;
use super::registry::EndpointMetrics;
use super::x509::not_after;
use crate::bounded_file;
use crate::config::endpoint::{MetricsArgs, TlsProfile};
use crate::config::key;

/// How often the files' metadata is compared with what is in service (and
/// how often a closed endpoint tries to open).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// SIGHUPs this close together are one burst, and one reload...
const BURST_QUIET: Duration = Duration::from_millis(300);
/// ...unless the burst lasts longer than this.
const BURST_MAX: Duration = Duration::from_secs(2);
pub const TLS_RELOAD: &str = "metrics_tls_reload";
const HINT: &str = "certs-example/gen-certs.sh shows how to make a set";

/// The one signature algorithm CNSA allows for certificates and handshake
/// signatures: ECDSA on P-384 with SHA-384, picked out of the provider's
/// table by algorithm identifier.
static CNSA_VERIFY_ALGS: LazyLock<WebPkiSupportedAlgorithms> = LazyLock::new(|| {
    let all = aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let p384 = |a: &&&dyn rustls::pki_types::SignatureVerificationAlgorithm| {
        (a.public_key_alg_id(), a.signature_alg_id()) == (alg_id::ECDSA_P384, alg_id::ECDSA_SHA384)
    };
    let all: &'static [_] = Box::leak(all.iter().filter(p384).copied().collect());
    let mapping = Box::leak(Box::new([(SignatureScheme::ECDSA_NISTP384_SHA384, all)]));
    WebPkiSupportedAlgorithms { all, mapping }
});

impl TlsProfile {
    /// The crypto provider: aws-lc-rs reduced to this profile's algorithms.
    pub fn provider(self) -> CryptoProvider {
        use cipher_suite::{
            TLS13_AES_128_GCM_SHA256 as AES128, TLS13_AES_256_GCM_SHA384 as AES256,
        };
        use kx_group::{MLKEM1024, SECP256R1, SECP384R1, X25519, X25519MLKEM768};
        let base = aws_lc_rs::default_provider();
        match self {
            TlsProfile::Cnsa => CryptoProvider {
                cipher_suites: vec![AES256],
                kx_groups: vec![MLKEM1024, SECP384R1],
                signature_verification_algorithms: *CNSA_VERIFY_ALGS,
                ..base
            },
            TlsProfile::Modern => CryptoProvider {
                cipher_suites: vec![AES256, AES128, cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
                kx_groups: vec![MLKEM1024, X25519MLKEM768, SECP384R1, X25519, SECP256R1],
                ..base
            },
        }
    }
}

/// Reads a file, turning the usual failures into errors that say what to do.
fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    let p = path.display();
    bounded_file::read(path, what, bounded_file::PEM_CAP).map_err(|e| match e.kind() {
        ErrorKind::NotFound => {
            anyhow!(
                "the {what} {p} is missing: install it there or point the setting at it ({HINT})"
            )
        }
        ErrorKind::PermissionDenied => anyhow!(
            "the {what} {p} is not readable by this process: make it readable by the portsyncd \
             user (owner, mode 0600 for keys)"
        ),
        // bounded_file's own message names the file and the fix.
        _ => anyhow!("{e}"),
    })
}

/// The PEM items of `kind` in a file; at least one.
fn read_pem<T: PemObject>(path: &Path, what: &str, kind: &str) -> Result<Vec<T>> {
    let (pem, p) = (read(path, what)?, path.display());
    let items = T::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    let items = items.map_err(|e| anyhow!("the {what} {p} is not valid PEM: {e:?}"))?;
    if items.is_empty() {
        bail!("the {what} {p} holds no PEM {kind} (-----BEGIN {kind}-----); {HINT}");
    }
    Ok(items)
}

/// Refuses a certificate that has expired or cannot be read; returns its
/// `notAfter`.
fn check_not_expired(der: &[u8], path: &Path, what: &str) -> Result<i64> {
    let p = path.display();
    let end = not_after(der)
        .ok_or_else(|| anyhow!("the {what} {p} is not a readable X.509 certificate"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if end <= now {
        let days = (now - end) / 86_400;
        bail!("the {what} {p} expired {days} day(s) ago: renew it and reload (SIGHUP)");
    }
    Ok(end)
}

/// Refuses a private key that group or others may read.
fn check_key_permissions(path: &Path) -> Result<()> {
    let p = path.display();
    let meta = fs::metadata(path);
    let meta = meta.map_err(|e| {
        anyhow!("the metrics key {p} cannot be examined: {e}; install it with mode 0600")
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the metrics key {p} has mode {mode:04o}, readable by group or others: run `chmod 600 \
             {p}` (and keep it owned by the portsyncd user)"
        );
    }
    Ok(())
}

/// A CRL webpki would refuse, refused here with the file and the reason
/// (rustls alone says only "could not be parsed").
fn check_crl(der: &CertificateRevocationListDer<'_>, path: &Path) -> Result<()> {
    let Err(e) = webpki::OwnedCertRevocationList::from_der(der) else {
        return Ok(());
    };
    let crl = x509_parser::parse_x509_crl(der);
    let hint = match e {
        _ if crl.is_ok_and(|(_, crl)| crl.crl_number().is_none()) => {
            "it has no CRL Number extension, which RFC 5280 requires: make it with `openssl ca \
             -gencrl` and a `crlnumber` file named in the CA's configuration"
        }
        webpki::Error::UnsupportedCrlVersion => "only v2 CRLs are supported",
        webpki::Error::UnsupportedDeltaCrl => "delta CRLs are not supported: give the complete CRL",
        _ => "regenerate it with `openssl ca -gencrl`",
    };
    bail!(
        "the metrics CRL {} could not be parsed: {e:?} ({hint})",
        path.display()
    )
}

/// A server configuration built from the files, and the `notAfter` of the
/// certificate and of the earliest CA.
pub struct Built {
    pub config: Arc<ServerConfig>,
    pub cert_not_after: i64,
    pub ca_not_after: i64,
}

/// Loads every file and builds the configuration exactly as start-up does;
/// a panic anywhere in it is an error like any other.
pub fn build(args: &MetricsArgs) -> Result<Built> {
    catch_unwind(AssertUnwindSafe(|| build_unguarded(args))).unwrap_or_else(|_| {
        Err(anyhow!(
            "reading the metrics TLS files ({}) failed inside a parser (a bug: please report it \
             with the files); replace them with a set from certs-example/gen-certs.sh",
            files(args)
        ))
    })
}

fn build_unguarded(args: &MetricsArgs) -> Result<Built> {
    let (cert_path, key_path, ca_path) = (&args.metrics_cert, &args.metrics_key, &args.metrics_ca);
    let (cert_p, key_p) = (cert_path.display(), key_path.display());
    let (chain, cert_not_after) = (|| {
        let chain: Vec<CertificateDer> = read_pem(cert_path, "metrics certificate", "CERTIFICATE")?;
        let end = check_not_expired(&chain[0], cert_path, "metrics certificate")?;
        anyhow::Ok((chain, end))
    })()
    .with_context(|| key("metrics_cert"))?;
    let private_key = (|| {
        let pem = read(key_path, "metrics key")?;
        check_key_permissions(key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&pem);
        key.map_err(|e| anyhow!("the metrics key {key_p} holds no PEM private key ({e:?}); {HINT}"))
    })()
    .with_context(|| key("metrics_key"))?;
    let (roots, ca_not_after) = (|| {
        let (mut roots, mut end, p) = (RootCertStore::empty(), i64::MAX, ca_path.display());
        for ca in read_pem::<CertificateDer>(ca_path, "metrics CA", "CERTIFICATE")? {
            end = end.min(check_not_expired(&ca, ca_path, "metrics CA")?);
            let added = roots.add(ca);
            added.map_err(|e| {
                anyhow!("the metrics CA {p} holds a certificate that cannot be a trust anchor: {e}")
            })?;
        }
        anyhow::Ok((roots, end))
    })()
    .with_context(|| key("metrics_ca"))?;
    let mut crls = Vec::new();
    for path in &args.metrics_crl {
        let found = read_pem::<CertificateRevocationListDer>(path, "metrics CRL", "X509 CRL");
        for crl in found.with_context(|| key("metrics_crl"))? {
            check_crl(&crl, path).with_context(|| key("metrics_crl"))?;
            crls.push(crl);
        }
    }

    let provider = Arc::new(args.tls_profile.provider());
    let signing_key = provider
        .key_provider
        .load_private_key(private_key.clone_key());
    let signing_key = signing_key
        .with_context(|| format!("the metrics key {key_p} is not a usable private key"))?;
    let p384 = signing_key
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
        .is_some();
    if args.tls_profile == TlsProfile::Cnsa && !p384 {
        bail!(
            "the metrics key {key_p} is not an ECDSA P-384 key, which --tls-profile cnsa requires; \
             generate one with `openssl ecparam -name secp384r1 -genkey` (see certs-example/) or \
             choose --tls-profile modern"
        );
    }
    let matching = CertifiedKey::new(chain.clone(), signing_key).keys_match();
    matching.map_err(|e| {
        anyhow!("the metrics key {key_p} does not belong to the certificate {cert_p} ({e}); install the matching pair")
    })?;
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let webpki = webpki.with_crls(crls).build();
    let webpki = webpki.with_context(|| {
        format!(
            "cannot build the client verifier from {}",
            ca_path.display()
        )
    })?;
    let verifier = Arc::new(AllowListVerifier::new(
        webpki,
        args.metrics_allow_client.clone(),
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("the TLS profile does not support TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .with_context(|| format!("cannot use the metrics certificate {cert_p} with its key"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.max_early_data_size = 0;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    // Our order (ML-KEM-1024 and AES-256 first) wins over the client's.
    config.ignore_client_order = true;
    let config = Arc::new(config);
    Ok(Built {
        config,
        cert_not_after,
        ca_not_after,
    })
}

/// The files behind a configuration.
fn paths(args: &MetricsArgs) -> impl Iterator<Item = &std::path::PathBuf> {
    [&args.metrics_cert, &args.metrics_key, &args.metrics_ca]
        .into_iter()
        .chain(&args.metrics_crl)
}

/// The files behind a configuration, for logs.
pub fn files(args: &MetricsArgs) -> String {
    paths(args)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What identifies the current contents of every file, cheaply: a change of
/// any of these means "reload".
fn files_stamp(args: &MetricsArgs) -> Vec<Option<(u64, i64, i64, u64)>> {
    let stamp = |m: fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec(), m.len());
    paths(args)
        .map(|p| fs::metadata(p).ok().map(stamp))
        .collect()
}

/// Every check start-up makes of the TLS files, without serving (for
/// `portsyncd check-config`). Returns the earliest `notAfter`.
pub fn check_files(args: &MetricsArgs) -> Result<i64> {
    build(args).map(|built| built.cert_not_after.min(built.ca_not_after))
}

/// The configuration in service.
pub struct TlsState {
    args: MetricsArgs,
    endpoint: EndpointMetrics,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    /// The configuration the endpoint opens with.
    pub fn new(args: MetricsArgs, endpoint: EndpointMetrics) -> Result<Self> {
        let current = RwLock::new(Self::build_recorded(&args, &endpoint)?);
        endpoint.tls_last_reload_ok.set(1);
        Ok(Self {
            args,
            endpoint,
            current,
        })
    }

    fn build_recorded(args: &MetricsArgs, endpoint: &EndpointMetrics) -> Result<Arc<ServerConfig>> {
        let built = build(args)?;
        endpoint.set_expiry("server", built.cert_not_after);
        endpoint.set_expiry("ca", built.ca_not_after);
        Ok(built.config)
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds from the files; keeps the old configuration on any error.
    pub fn reload(&self, trigger: &str) {
        let files = files(&self.args);
        match Self::build_recorded(&self.args, &self.endpoint) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                self.endpoint.reloaded("ok");
                info!(
                    event = TLS_RELOAD,
                    result = "ok",
                    trigger,
                    files,
                    "metrics TLS files reloaded"
                );
            }
            Err(e) => {
                self.endpoint.reloaded("failed");
                warn!(event = TLS_RELOAD, result = "kept_old", trigger, files, error = %format!("{e:#}"),
                      "metrics TLS reload refused; the previous certificate, key and CA stay in service");
            }
        }
    }

    /// Reloads once per burst of SIGHUPs (`hup` counts them) and whenever
    /// a file's metadata changes.
    pub async fn watch(self: Arc<Self>, mut hup: watch::Receiver<u64>) {
        let mut stamp = files_stamp(&self.args);
        let mut seen = *hup.borrow_and_update();
        loop {
            tokio::select! {
                changed = hup.changed() => {
                    if changed.is_err() {
                        // The SIGHUP forwarder is gone: poll only.
                        tokio::time::sleep(POLL_INTERVAL).await;
                        continue;
                    }
                    // The burst goes on while SIGHUPs come closer than
                    // BURST_QUIET, for at most BURST_MAX.
                    let end = Instant::now() + BURST_MAX;
                    let quiet = || (Instant::now() + BURST_QUIET).min(end);
                    while let Ok(Ok(())) = tokio::time::timeout_at(quiet(), hup.changed()).await {}
                    let count = *hup.borrow_and_update();
                    let trigger = match count - seen {
                        1 => "SIGHUP".to_string(),
                        n => format!("{n} SIGHUPs"),
                    };
                    seen = count;
                    stamp = files_stamp(&self.args);
                    self.reload(&trigger);
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {
                    let now = files_stamp(&self.args);
                    if now != stamp {
                        stamp = now;
                        self.reload("file change");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use rustls::{CipherSuite, NamedGroup};

    use super::*;

    #[test]
    fn cnsa_offers_only_aes256_mlkem1024_secp384r1_and_p384() {
        let p = TlsProfile::Cnsa.provider();
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites, [CipherSuite::TLS13_AES_256_GCM_SHA384]);
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::MLKEM1024, NamedGroup::secp384r1]);
        let schemes: Vec<_> = p
            .signature_verification_algorithms
            .mapping
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(schemes, [SignatureScheme::ECDSA_NISTP384_SHA384]);
        assert_eq!(p.signature_verification_algorithms.all.len(), 1);
        assert!(
            p.cipher_suites
                .iter()
                .all(|s| s.version() == &rustls::version::TLS13)
        );
    }

    #[test]
    fn modern_adds_the_other_tls13_suites_and_groups() {
        let p = TlsProfile::Modern.provider();
        assert_eq!(p.cipher_suites.len(), 3);
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert!(
            groups.contains(&NamedGroup::X25519MLKEM768) && groups.contains(&NamedGroup::X25519)
        );
    }

    #[test]
    fn a_world_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        fs::write(&key, "x").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_key_permissions(&key).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        check_key_permissions(&key).unwrap();
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_file() {
        let args = crate::config::Cli::try_parse_from([
            "portsyncd",
            "--metrics-ca",
            "/nonexistent/ca.crt",
        ]);
        let args = args.unwrap().metrics;
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/certs-example/gen-certs.sh");
        assert!(
            std::process::Command::new("bash")
                .arg(script)
                .arg(&certs)
                .status()
                .unwrap()
                .success()
        );
        let args = MetricsArgs {
            metrics_cert: certs.join("server.crt"),
            metrics_key: certs.join("server.key"),
            ..args
        };
        let err = format!("{:#}", build(&args).err().unwrap());
        assert!(
            err.starts_with(
                "`metrics_ca` (--metrics-ca): the metrics CA /nonexistent/ca.crt is missing"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_crl_the_parser_refuses_is_named_with_the_reason() {
        let err = check_crl(
            &CertificateRevocationListDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
            Path::new("/x/ca.crl"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/x/ca.crl") && err.contains("could not be parsed: "),
            "{err}"
        );
    }
}
