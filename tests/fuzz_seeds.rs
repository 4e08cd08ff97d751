//! The fuzz targets' seeds, replayed in every test run without libFuzzer:
//! every file of fuzz/seeds/<target>/ (and of fuzz/corpus/<target>/, the
//! working corpus a developer may have locally; git does not keep it) goes
//! through the function the target itself calls (fuzz/entries.rs, or
//! tests/support/decisions_model.rs for `decisions`). An input that once
//! crashed a target, added to its seeds, fails this test if the crash
//! comes back.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../fuzz/entries.rs"]
mod entries;

#[allow(dead_code)]
#[path = "support/decisions_model.rs"]
mod decisions_model;

/// What a `fuzz_target!` calls with its input.
type Entry = fn(&[u8]);

/// Every fuzz target, with the function its `fuzz_target!` calls.
const TARGETS: &[(&str, Entry)] = &[
    ("certificate", entries::certificate),
    ("config_file", entries::config_file),
    ("db_config", entries::db_config),
    ("decisions", |data| {
        decisions_model::run(data);
    }),
    ("netlink_datagram", entries::netlink_datagram),
    ("redis_values", entries::redis_values),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_is_replayed() {
    let mut on_disk: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let replayed: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(
        on_disk, replayed,
        "fuzz/fuzz_targets/ and this test's TARGETS must name the same targets"
    );
}

#[test]
fn every_seed_goes_through_its_target_without_a_crash() {
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        let seeds = files_in(&fuzz_dir().join("seeds").join(target));
        assert!(
            !seeds.is_empty(),
            "fuzz/seeds/{target}/ has no seed: give the target at least one input"
        );
        let corpus = files_in(&fuzz_dir().join("corpus").join(target));
        for file in seeds.iter().chain(&corpus) {
            let data = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{target}: {}: {why}", file.display()));
            }
        }
        eprintln!(
            "{target}: {} seeds, {} corpus files replayed",
            seeds.len(),
            corpus.len()
        );
    }
    assert!(failures.is_empty(), "crashes:\n{}", failures.join("\n"));
}
