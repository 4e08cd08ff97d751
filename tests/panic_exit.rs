//! The panic hook the binary installs (`portsyncd::logging::panic_exit`):
//! a panic in a thread other than main ends the whole process with 101,
//! with the panic on stderr and in the log.
//!
//! The process under test is this test binary itself, re-run with
//! `PANIC_CHILD` set: it installs the real hook and the real logger, then
//! panics a thread. Without the hook the panicking thread would end alone,
//! the child would go on and exit 0.

use std::process::Command;

const CHILD: &str = "PORTSYNCD_PANIC_EXIT_CHILD";
const TEST: &str = "a_panic_in_another_thread_ends_the_process_with_101";
const MESSAGE: &str = "netlink side failed for the test";

#[test]
fn a_panic_in_another_thread_ends_the_process_with_101() {
    if std::env::var_os(CHILD).is_some() {
        child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(portsyncd::logging::panic_exit::PANIC_EXIT_CODE),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // The default hook's report, then the log line, then nothing: the
    // process ended inside the hook (the harness never got to say "ok").
    assert!(
        stderr.contains("thread 'netlink'") && stderr.contains(MESSAGE),
        "{stderr}"
    );
    assert!(
        stderr.contains("a thread panicked; exiting with 101") && stderr.contains("netlink"),
        "no log line: {stderr}"
    );
    assert!(!stdout.contains("test result"), "{stdout}");
    assert!(!stderr.contains("child went on"), "{stderr}");
}

fn child() -> ! {
    use clap::Parser;
    let cli =
        portsyncd::config::Cli::try_parse_from(["portsyncd", "--log-output", "stderr"]).unwrap();
    portsyncd::logging::init(&cli.log_settings()).unwrap();
    portsyncd::logging::panic_exit::install();
    let thread = std::thread::Builder::new()
        .name("netlink".into())
        .spawn(|| panic!("{MESSAGE}"))
        .unwrap();
    let _ = thread.join();
    eprintln!("child went on");
    std::process::exit(0);
}
