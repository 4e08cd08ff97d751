//! Command-line settings of the metrics endpoint, flattened into `Cli`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::tls_profile::TlsProfile;

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Address of the metrics endpoint. IPv6 only (IPv4 and IPv4-mapped
    /// addresses are refused); `[::]` never accepts IPv4 (IPV6_V6ONLY).
    #[arg(long, value_name = "[ADDR]:PORT", default_value = "[::1]:9090")]
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

    /// Only clients whose certificate carries this exact DNS or URI subject
    /// alternative name may scrape (never matched against the CN);
    /// repeatable. Without it, any certificate from --metrics-ca may scrape.
    #[arg(long = "metrics-allow-client", value_name = "NAME")]
    pub metrics_allow_client: Vec<String>,

    /// TLS algorithm profile.
    #[arg(long, value_enum, default_value_t = TlsProfile::Cnsa)]
    pub tls_profile: TlsProfile,

    /// Most TLS connections open at once; more are closed on accept.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub metrics_max_connections: u32,
}

impl MetricsArgs {
    /// Refuses an address that is not plain IPv6.
    pub fn validate(&self) -> Result<()> {
        match self.metrics_listen {
            SocketAddr::V4(a) => bail!(
                "--metrics-listen {a} is an IPv4 address; the metrics endpoint listens on IPv6 \
                 only: use e.g. [::1]:{} (loopback) or [::]:{} (every IPv6 address)",
                a.port(),
                a.port()
            ),
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => bail!(
                "--metrics-listen {a} is an IPv4-mapped address; the metrics endpoint listens \
                 on IPv6 only: use e.g. [::1]:{}",
                a.port()
            ),
            SocketAddr::V6(_) => Ok(()),
        }
    }
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
    fn defaults_are_loopback_cnsa() {
        let a = parse(&[]);
        assert_eq!(a.metrics_listen.to_string(), "[::1]:9090");
        assert_eq!(a.tls_profile, TlsProfile::Cnsa);
    }
}
