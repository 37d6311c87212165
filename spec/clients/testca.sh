#!/bin/sh
# A throwaway certificate authority for the TLS specs, made with the openssl
# command (not sluice): testca.sh DIR [NAME] writes into DIR
#   ca.pem ca.key              the CA (CN "sluice test CA NAME")
#   server.pem server.key      for localhost and 127.0.0.1, signed by the CA,
#                              server.pem followed by the CA (its chain)
#   client.pem client.key      a client certificate (CN "sluice test client")
# Keys are P-256, valid for 2 days.
set -eu
dir=$1
name=${2:-}
mkdir -p "$dir"
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj "/CN=sluice test CA${name:+ $name}" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
sign() {   # sign NAME SUBJECT EXTENSIONS
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.leaf" -days 2 -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
sign server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=CA:FALSE
extendedKeyUsage=serverAuth"
cat server.leaf ca.pem > server.pem
sign client "/CN=sluice test client" "basicConstraints=CA:FALSE
extendedKeyUsage=clientAuth"
mv client.leaf client.pem
rm -f server.leaf ca.srl
