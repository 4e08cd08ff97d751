#!/usr/bin/env bash
# A live demo of portsyncd against real parts, on a fresh Debian machine as
# root: a private redis-server, a private network namespace with 8 veth
# ports, an orchagent stand-in that pops APPL_DB PORT_TABLE, and the daemon.
#
# It prints the time from the daemon's start to PortInitDone, the STATE_DB
# row of Ethernet0 after each change of a flap, how many Redis commands the
# daemon sent per link message (from `redis-cli MONITOR`), /healthz and
# /metrics over TLS 1.3 with a client certificate, and a warm restart that
# writes nothing because nothing changed.
# Everything it starts is stopped, and everything it creates removed, on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, veth links)"

# --- what the demo needs -----------------------------------------------------
declare -A provides=([redis-server]=redis-server [redis-cli]=redis-tools [ip]=iproute2 [openssl]=openssl [curl]=curl)
missing=()
for cmd in "${!provides[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${provides[$cmd]}")
done
if ((${#missing[@]} > 0)); then
    say "installing ${missing[*]}"
    # Without starting or enabling redis-server's service: the demo runs its own.
    bash scripts/install-packages.sh "${missing[@]}"
fi
command -v cargo >/dev/null 2>&1 || die "cargo is needed (a Rust toolchain, see Cargo.toml's rust-version)"

say "building portsyncd (release)"
cargo build --release --locked --bin portsyncd
BIN=$REPO/target/release/portsyncd

# --- cleanup -----------------------------------------------------------------
TMP=$(mktemp -d /tmp/portsyncd-demo.XXXXXX)
NS=psd-demo-$$
REDIS_PID= CONSUMER_PID= DAEMON_PID= MONITOR_PID= LINKMON_PID=
cleanup() {
    local rc=$?
    set +e
    for pid in $MONITOR_PID $LINKMON_PID $CONSUMER_PID $DAEMON_PID; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null
    if [[ -n $REDIS_PID ]]; then
        kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    fi
    if ((rc != 0)) && [[ -f $TMP/portsyncd.log ]]; then
        echo "--- last lines of the daemon's log ---" >&2
        tail -n 30 "$TMP/portsyncd.log" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# poll SECONDS COMMAND...: runs COMMAND every 10 ms until it succeeds;
# fails after SECONDS.
poll() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@" >/dev/null 2>&1; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.01
    done
}
# wait_for SECONDS DESCRIPTION COMMAND...: poll, or give up with a message.
wait_for() {
    local secs=$1 what=$2
    shift 2
    poll "$secs" "$@" || die "timed out waiting for $what"
}

# --- Redis -------------------------------------------------------------------
# The daemon reaches Redis over the unix socket (as on a switch); the demo's
# own clients (consumer, probes) use loopback TCP, so that MONITOR can tell
# the daemon's commands apart: theirs come from "unix:".
SOCK=$TMP/redis.sock
for _ in 1 2 3 4 5; do
    PORT=$((20000 + RANDOM % 20000))
    redis-server --port "$PORT" --bind 127.0.0.1 --unixsocket "$SOCK" --unixsocketperm 777 \
        --save "" --appendonly no --notify-keyspace-events AKE --dir "$TMP" \
        --dbfilename dump.rdb --daemonize no >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    if poll 5 redis-cli -s "$SOCK" PING; then break; fi
    kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
done
[[ -n $REDIS_PID ]] || die "redis-server did not start: $(cat "$TMP/redis.log")"
rcli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
appl() { rcli -n 0 "$@"; }
config() { rcli -n 4 "$@"; }
state() { rcli -n 6 "$@"; }

CFG=$TMP/database_config.json
cat >"$CFG" <<JSON
{
  "INSTANCES": {
    "redis": {"hostname": "127.0.0.1", "port": $PORT, "unix_socket_path": "$SOCK"}
  },
  "DATABASES": {
    "APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
    "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"},
    "STATE_DB": {"id": 6, "separator": "|", "instance": "redis"}
  },
  "VERSION": "1.0"
}
JSON

say "CONFIG_DB: 8 ports"
PORTS=()
for i in 0 1 2 3 4 5 6 7; do
    name=Ethernet$((i * 4))
    PORTS+=("$name")
    l=$((i * 4))
    config HSET "PORT|$name" lanes "$l,$((l + 1)),$((l + 2)),$((l + 3))" alias "etp$((i + 1))" \
        speed 100000 mtu 9100 admin_status up index "$i" >/dev/null
done
echo "${PORTS[*]}"

# --- namespace, consumer, daemon ---------------------------------------------
ip netns add "$NS"
ip -n "$NS" link set lo up

CONSUMER=$(cat "$REPO/scripts/consumer.lua")
consumer_loop() {
    while :; do
        appl EVAL "$CONSUMER" 0 PORT_TABLE >/dev/null 2>&1 || true
        sleep 0.05
    done
}
consumer_loop &
CONSUMER_PID=$!

say "certificates for the metrics endpoint (certs-example/gen-certs.sh)"
bash "$REPO/certs-example/gen-certs.sh" "$TMP/certs" >/dev/null
ls "$TMP/certs" | paste -sd' '

# The default port (7493), given explicitly; the namespace has its own
# loopback, so it never clashes with the host.
start_daemon() {
    ip netns exec "$NS" "$BIN" --db-config "$CFG" --log-level info --log-output stderr \
        --metrics-listen '[::1]:7493' --metrics-cert "$TMP/certs/server.crt" \
        --metrics-key "$TMP/certs/server.key" --metrics-ca "$TMP/certs/ca.crt" \
        --metrics-allow-client prometheus.example \
        2>>"$TMP/portsyncd.log" &
    DAEMON_PID=$!
}
scrape() {
    ip netns exec "$NS" curl -sS --tlsv1.3 --cacert "$TMP/certs/ca.crt" \
        --cert "$TMP/certs/client.crt" --key "$TMP/certs/client.key" "https://[::1]:7493$1"
}

say "starting portsyncd in netns $NS (metrics on https://[::1]:7493, mTLS)"
T0=$(now_ms)
start_daemon

configured() {
    local p
    for p in "${PORTS[@]}"; do
        [[ $(appl EXISTS "PORT_TABLE:$p") == 1 ]] || return 1
    done
}
wait_for 20 "APPL_DB PORT_TABLE to be configured" configured
echo "PortConfigDone: $(appl HGETALL PORT_TABLE:PortConfigDone | paste -sd' ')"

# Like syncd, create the host interfaces once the ports are configured.
{
    for i in "${!PORTS[@]}"; do
        echo "link add ${PORTS[$i]} type veth peer name p$((i * 4))"
    done
} >"$TMP/create.batch"
ip -n "$NS" -batch "$TMP/create.batch"

init_done() { [[ $(appl EXISTS PORT_TABLE:PortInitDone) == 1 ]]; }
wait_for 20 "PortInitDone" init_done
T1=$(now_ms)
say "PortInitDone $((T1 - T0)) ms after the daemon started"

# All ports up, carrier up, before the flap.
{
    for i in "${!PORTS[@]}"; do
        echo "link set p$((i * 4)) up"
        echo "link set ${PORTS[$i]} up"
    done
} >"$TMP/up.batch"
ip -n "$NS" -batch "$TMP/up.batch"
oper_up() { [[ $(state HGET "PORT_TABLE|$1" netdev_oper_status) == up ]]; }
for p in "${PORTS[@]}"; do wait_for 10 "$p oper up" oper_up "$p"; done

# --- the flap, measured ------------------------------------------------------
# Stop the consumer (nothing is left to pop) so that every Lua command in the
# MONITOR output is the daemon's.
kill "$CONSUMER_PID" && wait "$CONSUMER_PID" 2>/dev/null || true
CONSUMER_PID=

redis-cli -s "$SOCK" MONITOR >"$TMP/monitor.log" 2>&1 &
MONITOR_PID=$!
ip -n "$NS" -o monitor link >"$TMP/links.log" 2>&1 &
LINKMON_PID=$!
wait_for 5 "MONITOR to start" grep -q OK "$TMP/monitor.log"
sleep 0.2 # let `ip monitor` subscribe (it prints nothing until a message)

field_is() { [[ $(state HGET "PORT_TABLE|Ethernet0" "$1") == "$2" ]]; }
show() {
    echo "-- $1"
    state HGETALL "PORT_TABLE|Ethernet0" | paste -d' ' - - | sed 's/^/   /'
}

say "flapping Ethernet0"
ip -n "$NS" link set Ethernet0 down
wait_for 10 "admin down" field_is admin_status down
show "admin down"
ip -n "$NS" link set Ethernet0 up
ip -n "$NS" link set p0 down
wait_for 10 "admin up, carrier down" field_is admin_status up
wait_for 10 "carrier down" field_is netdev_oper_status down
show "admin up, carrier down (peer p0 down)"
ip -n "$NS" link set Ethernet0 mtu 9100
wait_for 10 "mtu 9100" field_is mtu 9100
show "mtu 9100"
ip -n "$NS" link set p0 up
wait_for 10 "carrier up" field_is netdev_oper_status up
show "up again"

sleep 0.3 # let the monitors flush the last lines
kill "$MONITOR_PID" "$LINKMON_PID" 2>/dev/null || true
wait "$MONITOR_PID" "$LINKMON_PID" 2>/dev/null || true
MONITOR_PID= LINKMON_PID=

events=$(grep -c . "$TMP/links.log" || true)
eth_events=$(grep -c ' Ethernet' "$TMP/links.log" || true)
round_trips=$(grep -c '\[[0-9]* unix:' "$TMP/monitor.log" || true)
in_scripts=$(grep -c '\[[0-9]* lua\]' "$TMP/monitor.log" || true)
say "Redis commands during the flap"
echo "link messages in the namespace: $events ($eth_events for Ethernet*, the rest for the peers)"
echo "daemon commands (round trips):  $round_trips"
echo "commands run inside scripts:    $in_scripts"
if ((events > 0)); then
    awk -v r="$round_trips" -v s="$in_scripts" -v e="$events" \
        'BEGIN { printf "per link message: %.2f round trips, %.2f commands in total\n", r / e, (r + s) / e }'
fi

# --- metrics and health, over TLS 1.3 with a client certificate --------------
say "GET /healthz"
scrape /healthz
echo
say "GET /metrics (a few of the samples)"
scrape /metrics | grep -E '^portsyncd_(port_(oper|admin)_status\{port="Ethernet0"\}|link_events_received_total|redis_up|port_init_done) '
echo "without a client certificate:"
ip netns exec "$NS" curl -sS --tlsv1.3 --cacert "$TMP/certs/ca.crt" "https://[::1]:7493/metrics" 2>&1 | tail -n 1 || true

# --- warm restart: nothing changed, nothing written ---------------------------
say "warm restart (WARM_RESTART_ENABLE_TABLE|system enable=true)"
state HSET "WARM_RESTART_ENABLE_TABLE|system" enable true >/dev/null
kill -TERM "$DAEMON_PID" && wait "$DAEMON_PID" || true
redis-cli -s "$SOCK" MONITOR >"$TMP/warm-monitor.log" 2>&1 &
MONITOR_PID=$!
wait_for 5 "MONITOR to start" grep -q OK "$TMP/warm-monitor.log"
start_daemon
reconciled() { [[ $(state HGET "WARM_RESTART_TABLE|portsyncd" state) == reconciled ]]; }
wait_for 20 "state=reconciled" reconciled
sleep 0.2
kill "$MONITOR_PID" 2>/dev/null && wait "$MONITOR_PID" 2>/dev/null || true
MONITOR_PID=
echo "WARM_RESTART_TABLE|portsyncd: $(state HGETALL "WARM_RESTART_TABLE|portsyncd" | paste -sd' ')"
grep -o 'warm restart reconciled.*' "$TMP/portsyncd.log" | tail -n 1
port_writes=$(grep -E '"(HSET|HDEL|DEL|SADD)" "[^"]*Ethernet' "$TMP/warm-monitor.log" | grep -c . || true)
echo "write commands naming a port during the warm restart (MONITOR): $port_writes"

# --- stop ----------------------------------------------------------------------
say "SIGTERM"
T2=$(now_ms)
kill -TERM "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=
echo "portsyncd exited with status $rc after $(($(now_ms) - T2)) ms"
((rc == 0)) || die "portsyncd did not exit cleanly"
