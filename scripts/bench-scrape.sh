#!/usr/bin/env bash
# Benchmark (not a test): how long one scrape of the metrics endpoint takes,
# with 64 ports, over TLS 1.3 with a client certificate, as curl sees it
# (connect + handshake + request + body). Prints the number of metric
# families and samples served, and the median/p90 of N scrapes.
#
# Usage (as root): bash scripts/bench-scrape.sh [N]   (default N=200)
# Uses target/release/portsyncd (built if missing), a private redis-server,
# a private network namespace with 64 veth ports; cleans up after itself.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:-200}
BIN=$REPO/target/release/portsyncd
[[ -x $BIN ]] || cargo build --release --locked --bin portsyncd --manifest-path "$REPO/Cargo.toml"

TMP=$(mktemp -d /tmp/portsyncd-bench.XXXXXX)
NS=psd-bench-$$
REDIS_PID= DAEMON_PID= CONSUMER_PID=
cleanup() {
    set +e
    for pid in $CONSUMER_PID $DAEMON_PID $REDIS_PID; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

SOCK=$TMP/redis.sock
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$TMP" --daemonize no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
until redis-cli -s "$SOCK" PING >/dev/null 2>&1; do sleep 0.05; done
cat >"$TMP/db.json" <<JSON
{"INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": "$SOCK"}},
 "DATABASES": {"APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
               "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"},
               "STATE_DB": {"id": 6, "separator": "|", "instance": "redis"}},
 "VERSION": "1.0"}
JSON
for i in $(seq 0 63); do
    redis-cli -s "$SOCK" -n 4 HSET "PORT|Ethernet$((i * 4))" lanes "$((i * 4))" alias "etp$((i + 1))" \
        speed 100000 mtu 9100 admin_status up index "$i" >/dev/null
done
CONSUMER=$(cat "$REPO/scripts/consumer.lua")
(while :; do redis-cli -s "$SOCK" -n 0 EVAL "$CONSUMER" 0 PORT_TABLE >/dev/null 2>&1 || true; sleep 0.05; done) &
CONSUMER_PID=$!

bash "$REPO/certs-example/gen-certs.sh" "$TMP/certs" >/dev/null
C=$TMP/certs
ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" "$BIN" --db-config "$TMP/db.json" --metrics-listen '[::1]:7493' \
    --metrics-cert "$C/server.crt" --metrics-key "$C/server.key" --metrics-ca "$C/ca.crt" \
    >"$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
sleep 0.5
batch=$TMP/links
: >"$batch"
for i in $(seq 0 63); do
    echo "link add Ethernet$((i * 4)) type veth peer name peer$i" >>"$batch"
done
for i in $(seq 0 63); do
    echo "link set Ethernet$((i * 4)) up" >>"$batch"
    echo "link set peer$i up" >>"$batch"
done
ip -n "$NS" -batch "$batch"

scrape() {
    ip netns exec "$NS" curl -sS --tlsv1.3 --cacert "$C/ca.crt" --cert "$C/client.crt" \
        --key "$C/client.key" "$@" https://[::1]:7493/metrics
}
until scrape 2>/dev/null | grep -q '^portsyncd_port_init_done 1'; do sleep 0.2; done
body=$(scrape)
families=$(grep -c '^# TYPE ' <<<"$body")
samples=$(grep -vc '^#' <<<"$body")
echo "64 ports: $families metric families, $samples samples, $(wc -c <<<"$body") bytes"

# One curl per scrape (new connection and handshake each time); pauses keep
# under the per-client rate limit (5/s, burst 20). curl reports, per run,
# when the TLS handshake was done and when the whole body was in.
for _ in $(seq "$N"); do
    scrape -o /dev/null -w '%{time_appconnect} %{time_total}\n'
    sleep 0.21
done >"$TMP/times"
median() { sort -n | awk '{ t[NR] = $1 } END { printf "%.2f", t[int((NR + 1) / 2)] * 1000 }'; }
p90() { sort -n | awk '{ t[NR] = $1 } END { printf "%.2f", t[int(NR * 0.9)] * 1000 }'; }
echo "over $N scrapes (ms):"
echo "  whole scrape (connect + handshake + request + body): median $(awk '{print $2}' "$TMP/times" | median), p90 $(awk '{print $2}' "$TMP/times" | p90)"
echo "  of which TCP + TLS handshake:                        median $(awk '{print $1}' "$TMP/times" | median)"
echo "  request + render + body after the handshake:         median $(awk '{print $2 - $1}' "$TMP/times" | median)"
