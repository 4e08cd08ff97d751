//! The facts the endpoint reads from a certificate beyond what rustls
//! checks: its subject alternative names (for the client allow-list, the
//! rate-limit identity and the audit trail) and its `notAfter` (for expiry
//! checks and metrics).
//!
//! Maintained parsers only: rustls-webpki (which verifies the chain) for the
//! DNS, URI and IP SANs, x509-parser for the validity. Anything they cannot
//! read is "no name" / "not a certificate", which callers treat as "not
//! allowed" / "invalid": a malformed certificate fails closed, and no byte
//! of it can panic the daemon (fuzzed: fuzz/fuzz_targets/certificate.rs).

use std::net::IpAddr;

use rustls::pki_types::{CertificateDer, ServerName};
use webpki::EndEntityCert;
use x509_parser::extensions::GeneralName;

/// `notAfter` as seconds since the Unix epoch, or `None` when `der` is not
/// a readable X.509 certificate.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The certificate's DNS, URI and IP subject alternative names, in that
/// order, as text; empty when it has none or cannot be read.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    let cert_der = CertificateDer::from(der);
    let Ok(cert) = EndEntityCert::try_from(&cert_der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert.valid_dns_names().map(str::to_string).collect();
    names.extend(cert.valid_uri_names().map(str::to_string));
    names.extend(ip_sans(der).iter().map(IpAddr::to_string));
    names
}

/// IP SANs (webpki matches them but does not list them).
fn ip_sans(der: &[u8]) -> Vec<IpAddr> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// True when the certificate names `allowed` exactly: an IP address
/// against its IP SANs, a URI (anything with `:`) against its URI SANs
/// (case-sensitive), else a DNS name against its DNS SANs (ASCII
/// case-insensitive, as DNS is; a wildcard SAN matches only itself). Never
/// the subject CN.
pub fn names(der: &[u8], allowed: &str) -> bool {
    let cert_der = CertificateDer::from(der);
    let Ok(cert) = EndEntityCert::try_from(&cert_der) else {
        return false;
    };
    if let Ok(ip) = allowed.parse::<IpAddr>() {
        return cert
            .verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
            .is_ok();
    }
    if allowed.contains(':') {
        return cert.valid_uri_names().any(|u| u == allowed);
    }
    cert.valid_dns_names()
        .any(|d| d.eq_ignore_ascii_case(allowed))
}

#[cfg(test)]
/// A client certificate from certs-example/gen-certs.sh (public data
/// only): SAN DNS:prometheus.example, URI:spiffe://example/prometheus,
/// notAfter 2027-12-25 16:17:56 UTC.
pub(crate) const CLIENT_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIICLTCCAbSgAwIBAgIUZhjsGnZfjiJmT4KJIC4GTtWGUrIwCgYIKoZIzj0EAwMw
HzEdMBsGA1UEAwwUcG9ydHN5bmNkIG1ldHJpY3MgQ0EwHhcNMjYxMTIzMTYxNzU2
WhcNMjcxMjI1MTYxNzU2WjAdMRswGQYDVQQDDBJwcm9tZXRoZXVzLmV4YW1wbGUw
djAQBgcqhkjOPQIBBgUrgQQAIgNiAARKxejQXG6CI/Ga1JubfhuYfLqB7Xh8MRjB
rwMz0O0+4Bd9By9dpeAKs9XCGRyZ4E8yQKJVlBwczcBGLcArEIFag1ooBjmHQWRv
mvj52ZboujA8yh9z86tc71/IHJW4RP+jgbIwga8wDAYDVR0TAQH/BAIwADAOBgNV
HQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwIwOgYDVR0RBDMwMYIScHJv
bWV0aGV1cy5leGFtcGxlhhtzcGlmZmU6Ly9leGFtcGxlL3Byb21ldGhldXMwHQYD
VR0OBBYEFJWetnpgKqxrXE0W/MGu4weI6NcQMB8GA1UdIwQYMBaAFPcXL6umEvvh
eDuS1YByEogM9iGrMAoGCCqGSM49BAMDA2cAMGQCMEXQXKGUiYf5zGHOlq9kUI+J
jghPBGdBQrgds24mT6VpgRniqE+gRD+HrRZWWKhdfAIwfBQ/Jc2U+JFFNcf/iJ/M
iwfMRq1KSSr2ogvSN1n7NsuweSXCc4Y7LGdfYM8gvQAy
-----END CERTIFICATE-----\n";

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    fn client_der() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(CLIENT_PEM.as_bytes()).unwrap()
    }

    #[test]
    fn a_real_certificate_yields_its_sans_and_not_after() {
        let der = client_der();
        assert_eq!(
            subject_alt_names(&der),
            ["prometheus.example", "spiffe://example/prometheus"]
        );
        assert_eq!(not_after(&der), Some(1_829_751_476));
    }

    #[test]
    fn truncated_or_garbage_input_yields_nothing() {
        let der = client_der();
        for cut in [0, 10, 100, 300] {
            assert!(subject_alt_names(&der[..cut]).is_empty(), "cut at {cut}");
            assert_eq!(not_after(&der[..cut]), None, "cut at {cut}");
            assert!(!names(&der[..cut], "prometheus.example"));
        }
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff]), None);
    }

    /// The byte that panicked the hand-written reader this module replaced:
    /// a non-ASCII character inside `notAfter` (`1é000000000Z`).
    #[test]
    fn a_non_ascii_byte_in_not_after_is_not_a_certificate() {
        let mut der = client_der().to_vec();
        let at = der
            .windows(15)
            .filter(|w| w[0] == 0x17 && w[1] == 0x0d)
            .count();
        assert_eq!(at, 2, "notBefore and notAfter are UTCTime");
        let pos = der
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == &[0x17, 0x0d])
            .nth(1)
            .unwrap()
            .0;
        der[pos + 2..pos + 15].copy_from_slice("1é000000000Z".as_bytes());
        assert_eq!(not_after(&der), None);
    }
}
