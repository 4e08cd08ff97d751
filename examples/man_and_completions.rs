//! Writes portsyncd's man page and shell completions into a directory,
//! generated from the daemon's own command-line definition
//! (`portsyncd::config::Cli`, through clap's `CommandFactory`):
//!
//! ```text
//! cargo run --locked --example man_and_completions -- OUTDIR
//! ```
//!
//! `scripts/package.sh` runs it before `cargo deb`, which packages what it
//! writes. It is an example rather than a build script because the
//! definition lives in the library (it names types from `metrics` and
//! `logging`), and an example is built by every `--all-targets` clippy and
//! test run: a flag added to `Cli` reaches the man page and the completions
//! on the next package build, with nothing to keep in step by hand.
//!
//! Written: `portsyncd.8` (section 8: a daemon), `portsyncd.bash`,
//! `_portsyncd` (zsh), `portsyncd.fish`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: man_and_completions OUTDIR");
        return ExitCode::from(2);
    };
    match write_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man_and_completions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = portsyncd::config::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("portsyncd {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page)
        .context("cannot render the man page")?;
    let path = dir.join("portsyncd.8");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "portsyncd", dir).with_context(|| {
            format!("cannot write the {shell} completion into {}", dir.display())
        })?;
    }
    Ok(())
}
