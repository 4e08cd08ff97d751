#!/usr/bin/env bash
# The project's one test command: installs what is missing on a fresh Debian
# machine (as root), then runs formatting, lints, the dependency policy and
# every test. `.ci/run` calls exactly this.
#
# Environment:
#   TEST_RUNNER=cargo|nextest   the runner (default: nextest, installed when missing;
#                               only nextest cuts a hung test, .config/nextest.toml)
#   SKIP_DENY=1                 skip `cargo deny` (e.g. offline development)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------
# command -> Debian package that provides it
declare -A provides=(
    [redis-server]=redis-server
    [redis-cli]=redis-tools
    [ip]=iproute2
    [openssl]=openssl
    [curl]=curl
    [supervisord]=supervisor
    [prometheus]=prometheus
    [promtool]=prometheus
    [nginx]=nginx
    [systemd-analyze]=systemd
    # Delays the daemon's netlink reads (tests/hostile_data.rs).
    [strace]=strace
    # The Debian package (scripts/package.sh, tests/debian_package.rs).
    [dpkg-shlibdeps]=dpkg-dev
    [strip]=binutils
    [flock]=util-linux
    [lintian]=lintian
    [man]=man-db
)
missing=()
for cmd in "${!provides[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${provides[$cmd]}")
done
if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing packages: ${missing[*]}; run as root so they can be installed" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    # Installed without starting or enabling their services (nginx,
    # prometheus, redis-server, supervisor): the tests run their own.
    bash scripts/install-packages.sh "${missing[@]}"
fi

# --- Rust toolchain components ---------------------------------------------
if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup component list --installed 2>/dev/null || true)
    for c in rustfmt clippy; do
        grep -q "^$c" <<<"$installed" || rustup component add "$c"
    done
fi

# The integration tests create network namespaces and veth links.
if [[ $(id -u) -ne 0 ]]; then
    echo "the integration tests need root (network namespaces, veth links)" >&2
    exit 1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# `--all-targets` skips benches marked `bench = false` (root-only, minutes
# long); lint them too so they keep compiling against the daemon.
cargo clippy --locked --bench e2e --bench warm_restart -- -D warnings

if [[ ${SKIP_DENY:-0} != 1 ]]; then
    if ! command -v cargo-deny >/dev/null 2>&1; then
        log "installing cargo-deny"
        cargo install --locked cargo-deny
    fi
    log "cargo deny"
    cargo deny check bans licenses sources
fi

if ! command -v cargo-deb >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install --locked cargo-deb
fi
# The one release build: the package's. tests/debian_package.rs repacks it
# (a few seconds each) rather than building in parallel with other tests.
log "Debian package (scripts/package.sh)"
bash scripts/package.sh

runner=${TEST_RUNNER:-nextest}
# nextest, so that .config/nextest.toml's slow-timeout ends a hung test in
# minutes (`cargo test` has no timeout).
if [[ $runner == nextest ]] && ! command -v cargo-nextest >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
log "tests ($runner)"
case $runner in
    nextest) cargo nextest run --all-targets --locked --no-fail-fast ;;
    cargo) cargo test --all-targets --locked --no-fail-fast ;;
    *) echo "TEST_RUNNER must be cargo or nextest, not $runner" >&2; exit 2 ;;
esac
