#!/usr/bin/env bash
# Heap allocations per proxied request: fusegate and the bare pingora proxy, each built
# with a counting global allocator (`--features alloc-count`), on loopback.
#
#   bash benches/alloc.sh [--seconds S] [--connections C]
#
# Starts a fast upstream (nginx answering 200 "ok"), then each proxy with one worker.
# After a warm-up (pools, buffers and per-route counters made), wrk sends requests for a
# few seconds over C keep-alive connections; the allocator's counts before and after,
# divided by the requests wrk completed, give allocations and bytes asked for per
# request. Counts, not times: the numbers do not depend on the machine's speed. It leaves
# target/release/fusegate built with the counting allocator; the other scripts' builds
# (and `cargo build --release`) put the normal one back.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=3 connections=50
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing wrk:wrk nginx:nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build release --features alloc-count --bin fusegate --example bare_proxy
BIN=target/release

work=$(mktemp -d)
pids=()
trap bench_cleanup EXIT

UP=$(free_port); BARE=$(free_port); FG=$(free_port); ADMIN=$(free_port)
nginx_conf "$work/up" "server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok\n'; } }" 2
"$NGINX" -c "$work/up/nginx.conf"

ALLOC_COUNT_FILE="$work/bare.count" "$BIN/examples/bare_proxy" "127.0.0.1:$BARE" "127.0.0.1:$UP" 1 \
  >/dev/null 2>"$work/bare.log" &
pids+=($!)
fusegate_conf "$FG" "$ADMIN" "$UP" 1 > "$work/fusegate.toml"
ALLOC_COUNT_FILE="$work/fusegate.count" "$BIN/fusegate" run -c "$work/fusegate.toml" \
  >/dev/null 2>"$work/fusegate.log" &
pids+=($!)

for port in $UP $BARE $FG; do
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then break; fi
    sleep 0.1
  done
done

# count FILE: the allocator's "allocations bytes", read once the reporter has written
# after the caller's last request (it writes every 100 ms).
count() { sleep 0.3; cat "$1"; }

printf '| proxy | allocations per request | bytes asked for per request |\n| --- | --- | --- |\n'
for name in bare fusegate; do
  port=$BARE; [ "$name" = fusegate ] && port=$FG
  url="http://127.0.0.1:$port/api/bench/item"
  wrk -t1 -c"$connections" -d2s "$url" >/dev/null
  read -r n0 b0 < <(count "$work/$name.count")
  wrk -t1 -c"$connections" -d"${seconds}s" "$url" >"$work/$name.wrk"
  read -r n1 b1 < <(count "$work/$name.count")
  reqs=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
  label="bare pingora"; [ "$name" = fusegate ] && label="fusegate"
  awk -v l="$label" -v n=$((n1 - n0)) -v b=$((b1 - b0)) -v r="$reqs" \
    'BEGIN { printf "| %s | %.1f | %.0f |\n", l, n / r, b / r }'
done
