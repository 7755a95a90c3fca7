#!/usr/bin/env bash
# Makes a self-signed certificate and key for trying fusegate's TLS listener:
#   bash scripts/selfsigned.sh [dir] [name...]
# writes <dir>/gateway.pem and <dir>/gateway.key (default dir: certs), valid for
# localhost, 127.0.0.1, ::1 and any extra names given, for 30 days. For trying only:
# clients must be told to trust it (curl --cacert certs/gateway.pem).
set -euo pipefail
dir=${1:-certs}
shift || true
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do san="$san,DNS:$name"; done
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=localhost" -addext "subjectAltName=$san" \
  -keyout "$dir/gateway.key" -out "$dir/gateway.pem" 2>/dev/null
chmod 600 "$dir/gateway.key"
echo "wrote $dir/gateway.pem and $dir/gateway.key ($san)"
