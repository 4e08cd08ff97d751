#!/usr/bin/env bash
# install-packages.sh PACKAGE...: installs Debian packages (as root) for the
# tests and the demo without changing which services the host runs. The
# packages they need ship services (nginx on port 80, prometheus on 9090,
# redis-server, supervisor) that Debian starts and enables on install; the
# tests and the demo start their own instances in temporary directories
# instead. So: a policy-rc.d forbids starting anything while apt runs, and
# afterwards every service unit of the packages installed here that is now
# enabled is disabled again. Packages already installed are not touched.
set -euo pipefail

(($# > 0)) || { echo "usage: install-packages.sh PACKAGE..." >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
ours=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# install-packages.sh: start no service while it installs\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    ours=1
    trap 'rm -f "$policy"' EXIT
fi
# apt-get update only when there is no package list, or when the list we
# have does not know a package.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null \
    || ! apt-get install -y --no-install-recommends "$@"; then
    apt-get update
    apt-get install -y --no-install-recommends "$@"
fi
((ours == 0)) || rm -f "$policy"
# The service units the installed packages (and what they pulled in) ship.
units=$(dpkg -L "$@" 2>/dev/null | grep -E '^(/usr)?/lib/systemd/system/[^/]+\.(service|socket|timer)$' |
    xargs -r -n1 basename | sort -u || true)
for unit in $units; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
        echo "install-packages.sh: disabling $unit (the tests run their own)"
        systemctl disable --quiet "$unit" 2>/dev/null || true
        systemctl stop "$unit" 2>/dev/null || true
    fi
done
