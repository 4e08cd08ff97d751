//! The daemon's decisions (rules, port records, start-up progress)
//! under many arbitrary sequences of link events, dumps, configuration and
//! Redis outcomes, against the invariants in tests/support/decisions_model.rs.
//! The same driver is the `decisions` fuzz target; this runs a fixed set of
//! pseudo-random sequences so every test run covers them.

#[path = "support/decisions_model.rs"]
mod decisions_model;

/// xorshift64*: a fixed, dependency-free sequence of inputs.
fn inputs(seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed;
    (0..count).map(move |i| {
        let len = 8 + i % 120;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    })
}

#[test]
fn arbitrary_sequences_keep_the_invariants() {
    let (mut rows, mut init_done) = (0, 0);
    for data in inputs(0x5eed_1234_abcd_0001, 4000) {
        let exercised = decisions_model::run(&data);
        rows += exercised.rows_compared;
        init_done += usize::from(exercised.port_init_done);
    }
    // The invariants were checked on real work, not on empty sequences.
    assert!(rows > 4000, "only {rows} final rows compared");
    assert!(
        init_done > 1000,
        "PortInitDone in only {init_done} sequences"
    );
}

#[test]
fn a_cold_start_with_ports_arriving_after_configuration_reaches_port_init_done() {
    // Cold, 3 ports: old ifindex 1 ignored; new netdevs 5, 6, 7 for the
    // three ports; orchagent configures them; Redis takes everything.
    let mut data = vec![0b0000_0110];
    for port in 0..3u8 {
        data.extend([0x00, port | (4 + port) << 2, 0x08, port]);
    }
    // EOIU, the configuration asked, then four rounds each answered.
    data.extend([0x07, 0x0a]);
    for _ in 0..4 {
        data.extend([0x0b, 0x0d, 0x00]);
    }
    let exercised = decisions_model::run(&data);
    assert_eq!(exercised.rows_compared, 3);
    assert!(exercised.port_init_done);
}
