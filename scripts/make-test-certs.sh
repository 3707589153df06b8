#!/usr/bin/env bash
# Test certificates for Candela's TLS listeners (never for production: keys are written
# unencrypted and live 30 days). Writes into OUT, all PEM, keys PKCS#8 (P-256):
#
#   ca.crt ca.key                  the CA the servers' and Prometheus's certificates chain to
#   server.crt server.key          serverAuth for localhost, 127.0.0.1 and each NAME given
#   server2.crt server2.key        the same names, a new key: the certificate a rotation installs
#   prometheus.crt prometheus.key  clientAuth, signed by ca (the scraper's client certificate)
#   stranger.crt stranger.key      clientAuth, signed by another CA (must be refused)
#
#   scripts/make-test-certs.sh OUT [NAME...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT [DNS-NAME...]" >&2; exit 2; }
if ! command -v openssl >/dev/null; then
  echo "make-test-certs: installing openssl (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null; }
fi
out=$1
shift
mkdir -p "$out"
cd "$out"
days=30
san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do san="$san,DNS:$name"; done

new_ca() { # FILE CN
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -keyout "$1.key" -out "$1.crt" -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

new_leaf() { # FILE CN ISSUER EXTENDED-KEY-USAGE [SAN]
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$4"
    [ -z "${5:-}" ] || echo "subjectAltName=$5"
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

new_ca ca "Candela test CA"
new_leaf server candela-engine ca serverAuth "$san"
new_leaf server2 candela-engine ca serverAuth "$san"
new_leaf prometheus prometheus ca clientAuth
new_ca stranger-ca "Some other CA"
new_leaf stranger prometheus stranger-ca clientAuth
rm -f ./*.srl stranger-ca.key
chmod 600 ./*.key
