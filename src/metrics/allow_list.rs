//! Which verified client certificates may scrape: `--metrics-allow-client`
//! names, matched exactly against a DNS, URI or IP subject alternative name
//! and never against the subject CN (the rule the Prometheus exporter
//! toolkit settled on: a CN is free text, SANs are typed identities).
//!
//! The verifier also notes the names a client presented, for the audit
//! event of a refused client ([`PRESENTED`]).

use std::cell::RefCell;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::x509::{names, subject_alt_names};

tokio::task_local! {
    /// The SANs of the certificate the client of this connection's task
    /// presented, set by the verifier during the handshake.
    pub static PRESENTED: RefCell<Vec<String>>;
}

/// The CA/CRL verifier from webpki, then the allow-list.
#[derive(Debug)]
pub struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Empty: every certificate the CA vouches for may scrape.
    allowed: Vec<String>,
}

/// The error a certificate outside the allow-list gets; the handshake
/// failure counter maps it to `reason="client_not_allowed"`.
pub const NOT_ALLOWED: &str = "client certificate names no allowed DNS, URI or IP SAN";

impl AllowListVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> Self {
        Self { inner, allowed }
    }
}

/// True when one of the allowed names is a SAN of the certificate (see
/// [`names`] for how each kind matches), or when the list is empty.
pub fn is_allowed(cert_der: &[u8], allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| names(cert_der, a))
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Outside a connection's task (unit tests) there is nothing to note.
        let _ = PRESENTED.try_with(|p| *p.borrow_mut() = subject_alt_names(end_entity));
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if is_allowed(end_entity, &self.allowed) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotAllowed)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Marker error for a certificate outside the allow-list.
#[derive(Debug)]
pub struct NotAllowed;

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NOT_ALLOWED)
    }
}

impl std::error::Error for NotAllowed {}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::super::x509::CLIENT_PEM;
    use super::*;

    fn allowed(names: &[&str]) -> bool {
        let der = CertificateDer::from_pem_slice(CLIENT_PEM.as_bytes()).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        is_allowed(&der, &names)
    }

    #[test]
    fn dns_and_uri_sans_match_exactly() {
        assert!(allowed(&[]));
        assert!(allowed(&["prometheus.example"]));
        assert!(allowed(&["PROMETHEUS.example"]));
        assert!(allowed(&["other", "spiffe://example/prometheus"]));
        assert!(!allowed(&["spiffe://example/Prometheus"]));
        assert!(!allowed(&["example", "prometheus", "*.example", "::1"]));
    }

    #[test]
    fn garbage_is_never_allowed_by_a_list() {
        assert!(!is_allowed(b"junk", &["prometheus.example".to_string()]));
    }
}
