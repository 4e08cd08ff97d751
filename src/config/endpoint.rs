//! Settings of the metrics endpoint, flattened into `Cli` (and so also keys
//! of the TOML file: `metrics_max_unverified = 32`), and their check: an
//! address or an allow-list name that can never work keeps the endpoint
//! closed and is refused by check-config. Kept here, below both the
//! command line and the endpoint, which both use them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

/// Which algorithms the endpoint accepts (the endpoint builds each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsProfile {
    /// CNSA 2.0-style: TLS_AES_256_GCM_SHA384, ML-KEM-1024 (preferred) or
    /// secp384r1, ECDSA P-384 signatures only.
    Cnsa,
    /// Also the other TLS 1.3 suites and X25519MLKEM768 / X25519 / secp256r1.
    Modern,
}

/// The default address: loopback, port 7493 (docs/metrics.md says why that
/// port: it collides with nothing common on a switch or a Prometheus host).
pub const DEFAULT_LISTEN: &str = "[::1]:7493";

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Address of the metrics endpoint. IPv6 only (IPv4 and IPv4-mapped
    /// addresses are refused); `[::]` never accepts IPv4 (IPV6_V6ONLY).
    #[arg(long, value_name = "[ADDR]:PORT", default_value = DEFAULT_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Server certificate (PEM, chain allowed).
    #[arg(
        long,
        value_name = "PATH",
        env = "PORTSYNCD_METRICS_CERT",
        default_value = "/etc/portsyncd/metrics/server.crt"
    )]
    pub metrics_cert: PathBuf,

    /// Server private key (PEM); must not be readable by group or others.
    #[arg(
        long,
        value_name = "PATH",
        env = "PORTSYNCD_METRICS_KEY",
        default_value = "/etc/portsyncd/metrics/server.key"
    )]
    pub metrics_key: PathBuf,

    /// CA certificate(s) (PEM) that client certificates must chain to.
    #[arg(
        long,
        value_name = "PATH",
        env = "PORTSYNCD_METRICS_CA",
        default_value = "/etc/portsyncd/metrics/ca.crt"
    )]
    pub metrics_ca: PathBuf,

    /// Certificate revocation list (PEM) to honour; repeatable.
    #[arg(long = "metrics-crl", value_name = "PATH")]
    pub metrics_crl: Vec<PathBuf>,

    /// Only clients whose certificate carries this exact DNS, URI or IP
    /// subject alternative name may scrape (never matched against the CN);
    /// repeatable. Written as the certificate stores it: a DNS name in
    /// lower case, internationalised names as A-labels (`xn--...`), no
    /// trailing dot. Without it, any certificate from --metrics-ca may scrape.
    #[arg(long = "metrics-allow-client", value_name = "NAME")]
    pub metrics_allow_client: Vec<String>,

    /// TLS algorithm profile.
    #[arg(long, value_enum, default_value_t = TlsProfile::Cnsa)]
    pub tls_profile: TlsProfile,

    /// Most verified (client-certificate) connections open at once; more
    /// are closed after their handshake. Unverified ones never count here.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub metrics_max_connections: u32,

    /// Most connections in their TLS handshake at once (unverified
    /// clients, all addresses together). When full, the oldest connection
    /// that lost its protection (see the next flag) is closed for a newcomer.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub metrics_max_unverified: u32,

    /// Connections in their handshake one source address has protected at
    /// once. A newcomer is always protected; past this, the address's
    /// oldest one loses its protection (it is not closed).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub metrics_max_unverified_per_source: u32,

    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub metrics_handshake_timeout: u64,

    /// Seconds a verified client has to send a complete request head.
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub metrics_header_read_timeout: u64,

    /// Seconds a connection may live, however many requests it carries; it
    /// is then closed gracefully (after the response in progress).
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub metrics_connection_lifetime: u64,

    /// Most `/metrics` renders at once (like node_exporter's
    /// --web.max-requests); more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub metrics_max_parallel_scrapes: u32,

    /// Requests per second over all clients (token bucket rate).
    #[arg(long, value_name = "PER_SECOND", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub metrics_rate_limit: u32,

    /// Requests the global bucket allows in a burst.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub metrics_rate_burst: u32,

    /// Requests per second per client identity (first SAN of its
    /// certificate).
    #[arg(long, value_name = "PER_SECOND", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub metrics_client_rate_limit: u32,

    /// Requests one client identity may make in a burst.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub metrics_client_rate_burst: u32,
}

impl MetricsArgs {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.metrics_handshake_timeout)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.metrics_header_read_timeout)
    }

    pub fn connection_lifetime(&self) -> Duration {
        Duration::from_secs(self.metrics_connection_lifetime)
    }

    /// Refuses an address that is not plain IPv6, and allow-list names
    /// that no certificate can ever match.
    pub fn validate(&self) -> Result<()> {
        for name in &self.metrics_allow_client {
            check_allowed_name(name)?;
        }
        match self.metrics_listen {
            SocketAddr::V4(a) => bail!(
                "`metrics_listen` (--metrics-listen) {a} is an IPv4 address; the metrics endpoint \
                 listens on IPv6 only: use e.g. [::1]:{} (loopback) or [::]:{} (every IPv6 address)",
                a.port(),
                a.port()
            ),
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => bail!(
                "`metrics_listen` (--metrics-listen) {a} is an IPv4-mapped address; the metrics \
                 endpoint listens on IPv6 only: use e.g. [::1]:{}",
                a.port()
            ),
            SocketAddr::V6(_) => Ok(()),
        }
    }
}

/// Refuses an allow-list entry that can never equal a SAN as certificates
/// store them (DNS names: ASCII A-labels, lower case, no trailing dot).
fn check_allowed_name(name: &str) -> Result<()> {
    let key = "`metrics_allow_client` (--metrics-allow-client)";
    let why = if name.is_empty() {
        "is empty".to_string()
    } else if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    } else if !name.is_ascii() {
        match idna::domain_to_ascii(name) {
            Ok(a_label) if !name.contains(':') => format!(
                "is not ASCII; certificates store internationalised names as A-labels: write {a_label:?}"
            ),
            _ => "is not ASCII; certificates store names in ASCII".to_string(),
        }
    } else if name.contains(':') {
        return Ok(()); // a URI SAN, compared byte for byte
    } else if name.ends_with('.') {
        format!(
            "ends with a dot; certificates store names without it: write {:?}",
            name.trim_end_matches('.')
        )
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        format!(
            "has upper case; certificates store DNS names in lower case: write {:?}",
            name.to_ascii_lowercase()
        )
    } else if name.split('.').any(|l| {
        l.is_empty()
            || !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
    }) {
        "is not a DNS name (letters, digits, '-' and dots), an IP address or a URI".to_string()
    } else {
        return Ok(());
    };
    bail!(
        "{key} {name:?} {why}; such an entry matches no certificate, so every scrape would be refused"
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MetricsArgs,
    }

    fn parse(argv: &[&str]) -> MetricsArgs {
        Wrapper::try_parse_from(std::iter::once("x").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn ipv4_and_mapped_addresses_are_refused() {
        let err = parse(&["--metrics-listen", "127.0.0.1:9090"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("IPv4 address"), "{err}");
        let err = parse(&["--metrics-listen", "[::ffff:127.0.0.1]:9090"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("IPv4-mapped"), "{err}");
        parse(&["--metrics-listen", "[::]:9090"])
            .validate()
            .unwrap();
    }

    #[test]
    fn allow_list_names_that_can_never_match_are_refused() {
        for (name, says) in [
            ("", "is empty"),
            ("prométheus.example", "\"xn--promtheus-e4a.example\""),
            ("Prometheus.example", "\"prometheus.example\""),
            ("prometheus.example.", "without it"),
            ("prometheus..example", "not a DNS name"),
        ] {
            let err = check_allowed_name(name).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("metrics_allow_client"),
                "{name}: {err}"
            );
        }
        for ok in [
            "prometheus.example",
            "*.example",
            "::1",
            "192.0.2.1",
            "spiffe://example/Prometheus",
        ] {
            check_allowed_name(ok).unwrap();
        }
    }

    #[test]
    fn defaults_are_loopback_cnsa() {
        let a = parse(&[]);
        assert_eq!(a.metrics_listen.to_string(), "[::1]:7493");
        assert_eq!(a.tls_profile, TlsProfile::Cnsa);
    }
}
