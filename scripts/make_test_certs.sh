#!/usr/bin/env bash
# Regenerates the TLS test fixtures in tests/fixtures/tls/ (openssl only):
#   ca.pem                    a self-signed test CA (its key is thrown away)
#   server.pem, server.key    localhost / 127.0.0.1 (subjectAltName), serverAuth
#   client.pem, client.key    CN=mixq-test-client, clientAuth (mutual TLS)
# ECDSA P-256 keys, valid for 100 years, so the fixtures never expire in CI.
# For tests only: the keys are public.
#   scripts/make_test_certs.sh [OUT_DIR]
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/tls}"
days=36500
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA.
key "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$days" \
  -subj "/CN=mixq test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$out/ca.pem"

# sign NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem signed by the CA.
sign() {
  local name="$1" subject="$2" extensions="$3"
  key "$out/$name.key"
  openssl req -new -key "$out/$name.key" -subj "$subject" -out "$work/$name.csr"
  printf '%s\n' "$extensions" > "$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$out/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$days" \
    -extfile "$work/$name.ext" -out "$out/$name.pem" 2>/dev/null
}

sign server "/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"

sign client "/CN=mixq-test-client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

chmod 644 "$out"/*.pem "$out"/*.key
openssl verify -CAfile "$out/ca.pem" "$out/server.pem" "$out/client.pem"
