#!/usr/bin/env bash
# Makes deploy/k8s/secrets/ for trying the manifests: a private CA (ca.crt,
# ca.key: give ca.crt to clients, keep ca.key away from the cluster), a server
# certificate it signed for the Services' names (tls.crt, tls.key), and one
# random API key (api_keys). Production certificates come from your own CA or
# cert-manager; the file names are what kustomization.yaml expects.
# Usage: bash deploy/k8s/make_secrets.sh [NAMESPACE]
set -euo pipefail
ns=${1:-default}
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
cd "$dir"
umask 077
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out ca.key
openssl req -x509 -new -key ca.key -days 365 -subj "/CN=blip2-serve CA" -out ca.crt
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out tls.key
openssl req -new -key tls.key -subj "/CN=blip2-serve" -out tls.csr
names="DNS:blip2-serve,DNS:blip2-serve.$ns,DNS:blip2-serve.$ns.svc,DNS:blip2-serve-headless.$ns.svc,DNS:localhost"
printf 'subjectAltName=%s\n' "$names" > tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -extfile tls.ext -out tls.crt
rm -f tls.csr tls.ext ca.srl
openssl rand -hex 32 > api_keys
echo "wrote $(pwd): tls.crt, tls.key, api_keys (one key), and ca.crt for clients"
