//! The `portsyncd` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use portsyncd::check_config;
use portsyncd::config_file::{LoadError, load};

/// glibc gives each thread that allocates its own malloc arena; with the
/// data-path thread, the LOGGER follower and the metrics thread that is
/// about a megabyte of resident memory held in arenas that are mostly
/// empty. Two arenas are plenty for this daemon's allocation rate.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called before
    // any other thread exists, and a refusal (return 0) is harmless.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    // A panic in any thread (the netlink reader, a runtime worker) ends the
    // process with 101 instead of leaving it running with nothing syncing.
    portsyncd::logging::panic_exit::install();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == check_config::SUBCOMMAND) {
        return check_config::main(args);
    }
    let cli = match load(args) {
        Ok(cli) => cli,
        Err(LoadError::Cli(e)) => e.exit(),
        Err(LoadError::Config(e)) => {
            eprintln!("portsyncd: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The one validation check-config runs too: a setting the daemon
    // cannot use stops it here, with the words check-config would say.
    if let Err(e) = portsyncd::config::validate(&cli) {
        eprintln!("portsyncd: {e:#}");
        return ExitCode::from(2);
    }
    if let Err(e) = portsyncd::logging::init(&cli.log_settings()) {
        eprintln!("portsyncd: {e:#}");
        return ExitCode::from(2);
    }
    // The data path is this one thread (see portsyncd::data_path); the
    // metrics endpoint and the LOGGER follower have threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portsyncd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(portsyncd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("portsyncd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
