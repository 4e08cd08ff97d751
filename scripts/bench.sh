#!/usr/bin/env bash
# The end-to-end benchmark (benches/e2e): real veth links in a private
# network namespace, a private redis-server, the daemon built in release
# mode. Prints one Markdown table; see docs/performance.md for the method.
#
#   scripts/bench.sh                                # 64, 512, 1024 ports
#   scripts/bench.sh --ports 512 --rounds 10 --samples 300
#   scripts/bench.sh --daemon-arg=--metrics-... # extra daemon arguments
#   scripts/bench.sh --cmd '/opt/other/portsyncd' --label upstream
#   scripts/bench.sh --plot docs/img            # also the SVG pictures of docs/performance.md
#   scripts/bench.sh --help
#
# Needs root (namespaces, veth), iproute2, redis-server and redis-tools
# (redis-cli, redis-benchmark); installs the missing ones on Debian.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $(id -u) -eq 0 ]] || { echo "bench: run as root (network namespaces, veth links)" >&2; exit 1; }

declare -A provides=([redis-server]=redis-server [redis-benchmark]=redis-tools [ip]=iproute2)
missing=()
for cmd in "${!provides[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${provides[$cmd]}")
done
if ((${#missing[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# The bench profile is the release profile; cargo builds the daemon too.
exec cargo bench --locked --bench e2e -- "$@"
