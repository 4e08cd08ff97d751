#!/usr/bin/env bash
# Test helper around `openssl ca`, for a CA made by certs-example/gen-certs.sh:
#
#   test-ca.sh sign CA_DIR OUT_PREFIX DNS URI [STARTDATE ENDDATE]
#       a P-384 client certificate (OUT_PREFIX.crt/.key) with a DNS and a URI
#       SAN; dates as YYYYMMDDHHMMSSZ (default now .. +30 days), so an
#       expired one can be made (`openssl x509 -days` cannot go back in
#       time); CN defaults to DNS, or set CN=... in the environment; IP=...
#       adds an IP SAN.
#   test-ca.sh revoke CA_DIR CERT OUT_CRL
#       a CRL that revokes CERT.
set -euo pipefail
cmd=$1 ca_dir=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
touch "$work/index.txt"
echo 1000 >"$work/serial"
echo 01 >"$work/crlnumber"
write_config() { # write_config DNS URI
    cat >"$work/ca.cnf" <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
crlnumber = $work/crlnumber
default_md = sha384
default_days = 30
default_crl_days = 30
policy = any
unique_subject = no
[ any ]
commonName = supplied
[ client ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:$1,URI:$2${IP:+,IP:$IP}
CNF
}
ca() { # ca ARGS...: openssl ca with this CA, its log shown on failure
    openssl ca -batch -config "$work/ca.cnf" -cert "$ca_dir/ca.crt" -keyfile "$ca_dir/ca.key" \
        "$@" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
}

case $cmd in
    sign)
        out=$1 dns=$2 uri=$3 start=${4:-} end=${5:-}
        write_config "$dns" "$uri"
        umask 077
        openssl ecparam -name secp384r1 -genkey -noout -out "$out.key"
        openssl req -new -key "$out.key" -subj "/CN=${CN:-$dns}" -sha384 -out "$work/req.csr"
        dates=()
        [[ -n $start ]] && dates=(-startdate "$start" -enddate "$end")
        ca -extensions client -notext "${dates[@]}" -in "$work/req.csr" -out "$out.crt"
        ;;
    revoke)
        cert=$1 out=$2
        write_config unused.example spiffe://unused
        ca -revoke "$cert"
        ca -gencrl -out "$out"
        ;;
    *)
        echo "usage: test-ca.sh sign|revoke CA_DIR ..." >&2
        exit 2
        ;;
esac
