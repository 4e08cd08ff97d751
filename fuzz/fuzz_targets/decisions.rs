//! The daemon's decisions under arbitrary sequences of link events, dumps,
//! configuration and Redis outcomes (cold, warm, DPU; refusals, returns,
//! rounds in flight while events fold in), checked against the invariants
//! of tests/support/decisions_model.rs: nothing lost, one slot per key,
//! PortInitDone only after every row, PortConfigDone only after every port.
#![no_main]

use libfuzzer_sys::fuzz_target;

// What a run exercised is for tests/decisions.rs; the fuzzer needs only
// the invariants' panics.
#[allow(dead_code)]
#[path = "../../tests/support/decisions_model.rs"]
mod decisions_model;

fuzz_target!(|data: &[u8]| {
    decisions_model::run(data);
});
