#!/usr/bin/env bash
# Generates a certificate set for portsyncd's metrics endpoint (P-384 ECDSA,
# SHA-384 signatures, as --tls-profile cnsa requires):
#
#   ca.crt / ca.key           a private CA (10 years)
#   server.crt / server.key   the daemon's certificate, for ::1 and localhost
#   client.crt / client.key   a scraper's certificate, with a DNS and a URI SAN
#
# Keys are written with mode 0600 (the daemon refuses a key that group or
# others can read); certificates with 0644.
#
# Usage: [CA_NAME=...] gen-certs.sh OUTDIR [CLIENT_DNS [CLIENT_URI]]
#   CLIENT_DNS defaults to prometheus.example,
#   CLIENT_URI to spiffe://example/prometheus,
#   CA_NAME (the CA's CN) to "portsyncd metrics CA".
# Install on a switch: copy ca.crt, server.crt, server.key to
# /etc/portsyncd/metrics/ (or pass --metrics-ca/--metrics-cert/--metrics-key),
# and give client.crt/client.key to the scraper.
set -euo pipefail

out=${1:?usage: gen-certs.sh OUTDIR [CLIENT_DNS [CLIENT_URI]]}
client_dns=${2:-prometheus.example}
client_uri=${3:-spiffe://example/prometheus}
mkdir -p "$out"
cd "$out"
umask 077

newkey() { openssl ecparam -name secp384r1 -genkey -noout -out "$1"; chmod 600 "$1"; }

# sign NAME SUBJECT EXTENSIONS: NAME.key + NAME.crt signed by the CA.
sign() {
    local name=$1 subject=$2 ext=$3
    newkey "$name.key"
    openssl req -new -key "$name.key" -subj "$subject" -sha384 -out "$name.csr"
    printf '%s\n' "$ext" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 397 -sha384 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
    chmod 644 "$name.crt"
}

newkey ca.key
openssl req -x509 -new -key ca.key -sha384 -days 3650 -subj "/CN=${CA_NAME:-portsyncd metrics CA}" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out ca.crt
chmod 644 ca.crt

sign server "/CN=portsyncd" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:::1"

sign client "/CN=$client_dns" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:$client_dns,URI:$client_uri"

rm -f ca.srl
echo "certificates written to $(pwd)"
