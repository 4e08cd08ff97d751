#!/usr/bin/env bash
# Test helper: signs a P-384 client certificate with an existing CA made by
# certs-example/gen-certs.sh, with `openssl ca` so the validity window can be
# chosen (an expired certificate needs a notAfter in the past, which
# `openssl x509 -days` cannot express).
#
# Usage: [CN=...] sign-client.sh CA_DIR OUT_PREFIX DNS URI [STARTDATE ENDDATE]
#   dates as YYYYMMDDHHMMSSZ; default: now .. +30 days; CN defaults to DNS.
set -euo pipefail
ca_dir=$1 out=$2 dns=$3 uri=$4
start=${5:-}
end=${6:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/index.txt"
echo 1000 >"$work/serial"
cat >"$work/ca.cnf" <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha384
default_days = 30
policy = any
unique_subject = no
[ any ]
commonName = supplied
[ client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:$dns,URI:$uri
CNF
umask 077
openssl ecparam -name secp384r1 -genkey -noout -out "$out.key"
openssl req -new -key "$out.key" -subj "/CN=${CN:-$dns}" -sha384 -out "$work/req.csr"
dates=()
[[ -n $start ]] && dates=(-startdate "$start" -enddate "$end")
openssl ca -batch -config "$work/ca.cnf" -extensions client -notext \
    -cert "$ca_dir/ca.crt" -keyfile "$ca_dir/ca.key" "${dates[@]}" \
    -in "$work/req.csr" -out "$out.crt" 2>"$work/ca.log" || { cat "$work/ca.log" >&2; exit 1; }
