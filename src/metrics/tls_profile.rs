//! Every TLS choice of the metrics endpoint, in one place.
//!
//! A [`TlsProfile`] is the only way to obtain a [`ServerConfig`]: the
//! protocol version (1.3 only; TLS 1.2 is not even compiled into rustls),
//! the cipher suites, key-exchange groups and signature algorithms come from
//! the profile, and client authentication, ALPN, 0-RTT and session tickets
//! are fixed here. No flag or caller can build a weaker combination.

use std::sync::{Arc, LazyLock};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use rustls::SignatureScheme;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::alg_id;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::allow_list::AllowListVerifier;
use super::certs::TlsMaterial;

/// Which algorithms the endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsProfile {
    /// CNSA 2.0-style: TLS_AES_256_GCM_SHA384, ML-KEM-1024 (preferred) or
    /// secp384r1, ECDSA P-384 signatures only.
    Cnsa,
    /// Also the other TLS 1.3 suites and X25519MLKEM768 / X25519 / secp256r1.
    Modern,
}

/// The one signature algorithm CNSA allows for certificates and handshake
/// signatures: ECDSA on P-384 with SHA-384. Picked out of the provider's
/// table by algorithm identifier, so no second crypto crate is needed.
static CNSA_VERIFY_ALGS: LazyLock<WebPkiSupportedAlgorithms> = LazyLock::new(|| {
    let all = aws_lc_rs::default_provider().signature_verification_algorithms;
    let is_p384 = |a: &&'static dyn rustls::pki_types::SignatureVerificationAlgorithm| {
        a.public_key_alg_id() == alg_id::ECDSA_P384 && a.signature_alg_id() == alg_id::ECDSA_SHA384
    };
    let chosen: Vec<_> = all.all.iter().copied().filter(is_p384).collect();
    let chosen: &'static [_] = Box::leak(chosen.into_boxed_slice());
    let mapping: &'static [_] =
        Box::leak(Box::new([(SignatureScheme::ECDSA_NISTP384_SHA384, chosen)]));
    WebPkiSupportedAlgorithms {
        all: chosen,
        mapping,
    }
});

/// ALPN: HTTP/1.1 only (the server speaks nothing else).
const ALPN_HTTP11: &[u8] = b"http/1.1";

impl TlsProfile {
    /// The crypto provider: aws-lc-rs reduced to this profile's algorithms.
    pub fn provider(self) -> CryptoProvider {
        let base = aws_lc_rs::default_provider();
        match self {
            TlsProfile::Cnsa => CryptoProvider {
                cipher_suites: vec![cipher_suite::TLS13_AES_256_GCM_SHA384],
                kx_groups: vec![kx_group::MLKEM1024, kx_group::SECP384R1],
                signature_verification_algorithms: *CNSA_VERIFY_ALGS,
                ..base
            },
            TlsProfile::Modern => CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                ],
                kx_groups: vec![
                    kx_group::MLKEM1024,
                    kx_group::X25519MLKEM768,
                    kx_group::SECP384R1,
                    kx_group::X25519,
                    kx_group::SECP256R1,
                ],
                ..base
            },
        }
    }

    /// Builds the server configuration: client certificate required and
    /// verified against the CA (and CRLs), then checked against the
    /// allow-list; TLS 1.3 only; HTTP/1.1; no 0-RTT; no session tickets and
    /// no session cache, so nothing outlives a key rotation.
    pub fn server_config(
        self,
        material: &TlsMaterial,
        allowed_clients: &[String],
    ) -> Result<Arc<ServerConfig>> {
        let provider = Arc::new(self.provider());
        let signing_key = provider
            .key_provider
            .load_private_key(material.key.clone_key())
            .with_context(|| {
                format!(
                    "the metrics key {} is not a usable private key",
                    material.key_path.display()
                )
            })?;
        if self == TlsProfile::Cnsa
            && signing_key
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
                .is_none()
        {
            bail!(
                "the metrics key {} is not an ECDSA P-384 key, which --tls-profile cnsa requires; \
                 generate one with `openssl ecparam -name secp384r1 -genkey` (see certs-example/) \
                 or choose --tls-profile modern",
                material.key_path.display()
            );
        }
        let certified = CertifiedKey::new(material.chain.clone(), signing_key);
        certified.keys_match().map_err(|e| {
            anyhow::anyhow!(
                "the metrics key {} does not belong to the certificate {} ({e}); \
                 install the matching pair",
                material.key_path.display(),
                material.cert_path.display()
            )
        })?;

        let webpki = WebPkiClientVerifier::builder_with_provider(
            Arc::new(material.roots.clone()),
            provider.clone(),
        )
        .with_crls(material.crls.iter().cloned())
        .build()
        .with_context(|| {
            format!(
                "cannot build the client verifier from {} and the CRLs",
                material.ca_path.display()
            )
        })?;
        let verifier: Arc<dyn ClientCertVerifier> =
            Arc::new(AllowListVerifier::new(webpki, allowed_clients.to_vec()));

        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("the TLS profile does not support TLS 1.3")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(material.chain.clone(), material.key.clone_key())
            .with_context(|| {
                format!(
                    "cannot use the metrics certificate {} with its key {}",
                    material.cert_path.display(),
                    material.key_path.display()
                )
            })?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        config.max_early_data_size = 0;
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        // Our order (ML-KEM-1024 and AES-256 first) wins over the client's.
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use rustls::CipherSuite;
    use rustls::NamedGroup;

    use super::*;

    #[test]
    fn cnsa_offers_only_aes256_mlkem1024_secp384r1_and_p384() {
        let p = TlsProfile::Cnsa.provider();
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites, [CipherSuite::TLS13_AES_256_GCM_SHA384]);
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::MLKEM1024, NamedGroup::secp384r1]);
        assert_eq!(
            p.signature_verification_algorithms
                .mapping
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            [SignatureScheme::ECDSA_NISTP384_SHA384]
        );
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
}
