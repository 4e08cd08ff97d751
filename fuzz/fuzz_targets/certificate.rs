//! Any bytes as a DER certificate: the facts the metrics endpoint reads
//! from one (SANs, notAfter, the allow-list match) are an answer or
//! nothing, never a panic. Seeded with the client certificate of
//! certs-example/gen-certs.sh (fuzz/seeds/certificate/).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsyncd::metrics::x509::{names, not_after, subject_alt_names};

fuzz_target!(|data: &[u8]| {
    let _ = not_after(data);
    for san in subject_alt_names(data) {
        let _ = names(data, &san);
    }
    let _ = names(data, "prometheus.example");
    let _ = names(data, "spiffe://example/prometheus");
    let _ = names(data, "::1");
});
