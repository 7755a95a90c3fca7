#!/usr/bin/env bash
# Edge benchmark: TLS handshakes and HTTP/2 requests, fusegate side by side with nginx,
# on loopback, with h2load (nghttp2-client).
#
#   bash benches/edge.sh [--rounds N] [--duration S] [--handshakes H] [--workers W] [--debug]
#
# Starts a fast upstream (nginx, answering 200 "ok"), then two proxies in front of it,
# each with W worker threads/processes: nginx (TLS + HTTP/2, upstream keepalive) and
# fusegate (one route, a [server.tls] listener, h2c on the plain one). The certificate is
# one self-signed P-256 pair (scripts/selfsigned.sh) for both. Round after round
# (interleaved), h2load measures on each proxy:
# - new TLS connections: H clients, one request each, so every request is a full TLS 1.3
#   handshake (reported as handshakes/s, with the proxy's CPU per handshake);
# - HTTP/2 over TLS: 50 clients, 10 streams each, for S seconds (req/s, CPU per request);
# - h2c (HTTP/2 with prior knowledge, plain text): the same.
# Prints medians over rounds and fusegate's ratio to nginx. Every process listens on
# 127.0.0.1 and is stopped at the end. --debug uses a debug build (a smoke run; numbers
# mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 duration=10 handshakes=2000 workers=1 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --handshakes) handshakes=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing h2load:nghttp2-client nginx:nginx openssl:openssl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

build "$profile" --bin fusegate
BIN=target/$profile

work=$(mktemp -d)
pids=()
trap bench_cleanup EXIT

bash scripts/selfsigned.sh "$work/certs" >/dev/null
CERT=$work/certs/gateway.pem KEY=$work/certs/gateway.key

UP=$(free_port); NGX_TLS=$(free_port); NGX_H2C=$(free_port)
FG=$(free_port); FG_TLS=$(free_port); ADMIN=$(free_port)

nginx_conf "$work/up" "server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok\n'; } }" 2
"$NGINX" -c "$work/up/nginx.conf"

# nginx 1.22 syntax (`listen ... http2`); a plain listener with http2 is h2c.
nginx_conf "$work/px" "upstream u { server 127.0.0.1:$UP; keepalive 64; }
  ssl_certificate $CERT; ssl_certificate_key $KEY; ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:$NGX_TLS ssl http2; listen 127.0.0.1:$NGX_H2C http2; keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" "$workers"
"$NGINX" -c "$work/px/nginx.conf"

fusegate_conf "$FG" "$ADMIN" "$UP" "$workers" "h2c = true" "[server.tls]
listen = [\"127.0.0.1:$FG_TLS\"]
cert = \"$CERT\"
key = \"$KEY\"" > "$work/fusegate.toml"
"$BIN/fusegate" run -c "$work/fusegate.toml" >/dev/null 2>"$work/fusegate.log" &
pids+=($!); fg_pid=$!
disown "$fg_pid"

for url in "http://127.0.0.1:$UP/" "https://127.0.0.1:$NGX_TLS/" "https://127.0.0.1:$FG_TLS/"; do
  for _ in $(seq 100); do
    if curl -sk -o /dev/null "$url"; then break; fi
    sleep 0.1
  done
done

hz=$(getconf CLK_TCK)

# run NAME PROCS H2LOAD_ARGS...: one h2load run; prints "succeeded req_per_s cpu_us_per_req".
run() {
  local procs=$1; shift
  local before after out ok rps
  # shellcheck disable=SC2086
  before=$(cpu_ticks $procs)
  out=$(h2load "$@" 2>&1)
  # shellcheck disable=SC2086
  after=$(cpu_ticks $procs)
  ok=$(awk '/^requests:/ {print $8}' <<<"$out")
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  if [ -z "$ok" ] || [ "$ok" -eq 0 ]; then
    echo "h2load $*: no request succeeded:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v a="$before" -v b="$after" -v hz="$hz" -v n="$ok" -v r="$rps" \
    'BEGIN { printf "%d %s %.2f\n", n, r, (b-a)/hz*1e6/n }'
}

echo "proxy test round succeeded per_s cpu_us" > "$work/results"
for round in $(seq "$rounds"); do
  for name in nginx fusegate; do
    case $name in
      nginx) tls=$NGX_TLS; plain=$NGX_H2C; procs=$(nginx_pids "$work/px") ;;
      fusegate) tls=$FG_TLS; plain=$FG; procs=$fg_pid ;;
    esac
    # Every client one connection with one request: each request a full handshake.
    echo "$name handshakes $round $(run "$procs" -t1 -c "$handshakes" -n "$handshakes" -m1 "https://127.0.0.1:$tls/api/bench/x")" >> "$work/results"
    echo "$name h2-tls $round $(run "$procs" -t1 -c50 -m10 -D "$duration" "https://127.0.0.1:$tls/api/bench/x")" >> "$work/results"
    echo "$name h2c $round $(run "$procs" -t1 -c50 -m10 -D "$duration" "http://127.0.0.1:$plain/api/bench/x")" >> "$work/results"
  done
done

python3 - "$work/results" "$workers" "$rounds" "$duration" "$handshakes" <<'PY'
import statistics, sys
path, workers, rounds, dur, hs = sys.argv[1:]
rows = [l.split() for l in open(path).read().splitlines()[1:]]
def med(name, test, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == name and r[1] == test)
print(f"{workers} worker(s), {rounds} round(s) (medians); h2load 1 thread")
print(f"{'test':<38}{'nginx /s':>10}{'fusegate /s':>13}{'ratio':>7}{'nginx CPU us':>14}{'fusegate CPU us':>17}")
tests = (("handshakes", f"new TLS connections ({hs} x 1 request)"),
         ("h2-tls", f"h2 over TLS (50 x 10 streams, {dur} s)"),
         ("h2c", f"h2c (50 x 10 streams, {dur} s)"))
for test, label in tests:
    n, f = med("nginx", test, 4), med("fusegate", test, 4)
    nc, fc = med("nginx", test, 5), med("fusegate", test, 5)
    print(f"{label:<38}{n:>10.0f}{f:>13.0f}{f / n if n else float('nan'):>7.2f}{nc:>14.1f}{fc:>17.1f}")
PY
