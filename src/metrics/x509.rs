//! The two facts the endpoint needs from an X.509 certificate that rustls
//! does not expose: its subject alternative names (DNS and URI, for the
//! client allow-list) and its `notAfter` (for expiry checks and metrics).
//!
//! A deliberately small DER walker: it reads only the fields it needs and
//! answers `None` on anything it does not understand, which callers treat as
//! "not allowed" / "invalid", so a malformed certificate fails closed. The
//! certificate's signature and chain are verified by rustls/webpki, never
//! here.

/// Subject alternative names of the kinds an allow-list may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Uri(String),
}

impl SubjectAltName {
    pub fn value(&self) -> &str {
        match self {
            SubjectAltName::Dns(s) | SubjectAltName::Uri(s) => s,
        }
    }
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` in TBSCertificate.
const VERSION_TAG: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` in TBSCertificate.
const EXTENSIONS_TAG: u8 = 0xa3;
/// GeneralName `[2] dNSName` and `[6] uniformResourceIdentifier` (implicit).
const DNS_NAME_TAG: u8 = 0x82;
const URI_TAG: u8 = 0x86;
/// id-ce-subjectAltName, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads one tag-length-value from the front of `input`.
fn next_tlv<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (body, after) = rest.split_at(len);
    *input = after;
    Some((tag, body))
}

/// Reads a TLV that must carry `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    match next_tlv(input)? {
        (t, body) if t == tag => Some(body),
        _ => None,
    }
}

/// The TBSCertificate fields after the optional version: serial, signature
/// algorithm, issuer, validity, subject, public key, then optional parts.
fn tbs_fields(cert_der: &[u8]) -> Option<&[u8]> {
    let mut input = cert_der;
    let mut cert = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut cert, SEQUENCE)?;
    if tbs.first() == Some(&VERSION_TAG) {
        next_tlv(&mut tbs)?;
    }
    Some(tbs)
}

/// `notAfter` as seconds since the Unix epoch.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let mut tbs = tbs_fields(cert_der)?;
    for _ in 0..3 {
        next_tlv(&mut tbs)?; // serial, signature algorithm, issuer
    }
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    next_tlv(&mut validity)?; // notBefore
    let (tag, time) = next_tlv(&mut validity)?;
    parse_time(tag, time)
}

/// DNS and URI subject alternative names; empty when there is no SAN
/// extension, `None` when the certificate cannot be read.
pub fn subject_alt_names(cert_der: &[u8]) -> Option<Vec<SubjectAltName>> {
    let mut tbs = tbs_fields(cert_der)?;
    for _ in 0..6 {
        next_tlv(&mut tbs)?; // serial .. subjectPublicKeyInfo
    }
    while !tbs.is_empty() {
        let (tag, body) = next_tlv(&mut tbs)?;
        if tag != EXTENSIONS_TAG {
            continue;
        }
        let mut wrapper = body;
        let mut extensions = expect(&mut wrapper, SEQUENCE)?;
        while !extensions.is_empty() {
            let mut ext = expect(&mut extensions, SEQUENCE)?;
            let oid = expect(&mut ext, OID)?;
            if oid != SAN_OID {
                continue;
            }
            if ext.first() == Some(&BOOLEAN) {
                next_tlv(&mut ext)?;
            }
            let mut value = expect(&mut ext, OCTET_STRING)?;
            let mut names = expect(&mut value, SEQUENCE)?;
            let mut out = Vec::new();
            while !names.is_empty() {
                let (tag, body) = next_tlv(&mut names)?;
                let text = || std::str::from_utf8(body).ok().map(str::to_string);
                match tag {
                    DNS_NAME_TAG => out.push(SubjectAltName::Dns(text()?)),
                    URI_TAG => out.push(SubjectAltName::Uri(text()?)),
                    _ => {}
                }
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn a_real_certificate_yields_its_sans_and_not_after() {
        let der = CertificateDer::from_pem_slice(CLIENT_PEM.as_bytes()).unwrap();
        assert_eq!(
            subject_alt_names(&der),
            Some(vec![
                SubjectAltName::Dns("prometheus.example".into()),
                SubjectAltName::Uri("spiffe://example/prometheus".into()),
            ])
        );
        assert_eq!(not_after(&der), Some(1_829_751_476));
    }

    #[test]
    fn a_truncated_certificate_yields_nothing() {
        let der = CertificateDer::from_pem_slice(CLIENT_PEM.as_bytes()).unwrap();
        for cut in [10, 100, 300] {
            assert_eq!(subject_alt_names(&der[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn times_convert_to_unix_seconds() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(UTC_TIME, b"000301000000Z"), Some(951_868_800));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"7001010000Z"), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(not_after(b""), None);
        assert_eq!(subject_alt_names(&[0x30, 0x84, 0xff, 0xff]), None);
        assert_eq!(subject_alt_names(&[0x30, 0x05, 0x30]), None);
    }

    #[test]
    fn lengths_beyond_the_input_are_refused() {
        let mut input: &[u8] = &[0x04, 0x81, 0x05, 1, 2];
        assert_eq!(next_tlv(&mut input), None);
        let mut input: &[u8] = &[0x04, 0x02, 1, 2, 3];
        assert_eq!(next_tlv(&mut input), Some((0x04, &[1u8, 2][..])));
        assert_eq!(input, &[3]);
    }
}
