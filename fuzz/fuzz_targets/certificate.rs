//! Any bytes as a DER certificate: the facts the metrics endpoint reads
//! from one (SANs, notAfter, the allow-list match) are an answer or
//! nothing, never a panic. Seeded with the client certificate of
//! certs-example/gen-certs.sh (fuzz/seeds/certificate/).
//! The body is fuzz/entries.rs's `certificate`, which tests/fuzz_seeds.rs runs on
//! fuzz/seeds/certificate/ in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

fuzz_target!(|data: &[u8]| {
    entries::certificate(data);
});
