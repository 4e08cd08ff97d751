//! The `portsyncd` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use portsyncd::config::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = portsyncd::logging::init(&cli) {
        eprintln!("portsyncd: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
