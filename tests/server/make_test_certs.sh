#!/usr/bin/env bash
# Test certificates, made fresh by each test run with openssl (nothing secret
# is committed). Usage: make_test_certs.sh DIR
# DIR gets: ca.pem/ca.key (a CA), server.pem/server.key (signed by ca, for
# localhost and 127.0.0.1), client.pem/client.key (signed by ca, for mTLS),
# ca2.pem and server2.pem/server2.key (another CA and a server certificate it
# signed: a rotation, or a CA the client does not trust).
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
ca() {  # name
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -days 2 -subj "/CN=blip2 test $1" -out "$1.pem" 2>/dev/null
}
signed() {  # name ca extensions
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 -extfile "$1.ext" \
    -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca ca2
signed server ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
signed server2 ca2 "subjectAltName=DNS:localhost,IP:127.0.0.1"
signed client ca "extendedKeyUsage=clientAuth"
