#!/usr/bin/env bash
# Test helper: writes a CRL, signed by a CA made by certs-example/gen-certs.sh,
# that revokes CERT.
# Usage: revoke.sh CA_DIR CERT OUT_CRL
set -euo pipefail
ca_dir=$1 cert=$2 out=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/index.txt"
echo 01 >"$work/crlnumber"
cat >"$work/ca.cnf" <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $work/index.txt
crlnumber = $work/crlnumber
default_md = sha384
default_crl_days = 30
CNF
openssl ca -batch -config "$work/ca.cnf" -cert "$ca_dir/ca.crt" -keyfile "$ca_dir/ca.key" \
    -revoke "$cert" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
openssl ca -batch -config "$work/ca.cnf" -cert "$ca_dir/ca.crt" -keyfile "$ca_dir/ca.key" \
    -gencrl -out "$out" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
