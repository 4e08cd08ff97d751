#!/usr/bin/env bash
# Builds the Debian package (cargo-deb, a release build): first the man page
# and the bash/zsh/fish completions, generated from the daemon's clap
# definition by examples/man_and_completions.rs into target/assets/, then
# `cargo deb`, which packages them with the files [package.metadata.deb] in
# Cargo.toml lists. Prints the .deb's path (last line of stdout).
#
#   bash scripts/package.sh                       # target/debian/portsyncd_<version>-1_<arch>.deb
#   bash scripts/package.sh --output DIR_OR_FILE  # any other cargo-deb option too
#
# Needs cargo-deb (`cargo install --locked cargo-deb`) and dpkg-dev;
# scripts/test.sh installs both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One build at a time: tests/debian_package.rs runs this from parallel test
# processes, and cargo-deb writes fixed paths under target/.
mkdir -p target
exec 9>target/package.lock
flock 9

cargo run --quiet --locked --example man_and_completions -- target/assets
cargo deb --locked "$@"
