#!/usr/bin/env bash
# Soak benchmark: N requests (default 2,000,000) through one fusegate route, with the
# cache on, whose upstream fails a fixed share (10%) of requests with 500. Prints
# fusegate's RSS at the start, middle and end, and every status it answered.
#
#   bash benches/soak.sh [--requests N] [--connections C] [--debug]
#
# Everything listens on 127.0.0.1; the load stops by itself after N requests (wrk runs
# in two halves of N/2, bounded in time as well).
set -euo pipefail
cd "$(dirname "$0")/.."

requests=2000000 connections=50 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } \
  || bash scripts/setup.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
. benches/lib.sh
build "$profile" --bin fusegate
BIN=target/$profile

work=$(mktemp -d)
fg_pid=""
cleanup() {
  [ -n "$fg_pid" ] && kill -9 "$fg_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.2; rm -rf "$work"
}
trap cleanup EXIT
UP=$(free_port); FG=$(free_port); ADMIN=$(free_port)

cat > "$work/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx.pid; error_log $work/error.log warn; daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  split_clients "\${request_id}" \$fail { 10% 1; * 0; }
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
    location / { if (\$fail) { return 500 'fail\n'; } add_header Cache-Control "max-age=1"; return 200 'ok\n'; } }
}
CONF
"$NGINX" -c "$work/nginx.conf"

cat > "$work/fusegate.toml" <<CONF
[server]
listen = "127.0.0.1:$FG"
threads = 1
[admin]
listen = "127.0.0.1:$ADMIN"
[routes.soak]
upstreams = ["127.0.0.1:$UP"]
breaker = { volume_threshold = 50, error_threshold_percentage = 50, reset_timeout = "1s" }
[routes.soak.cache]
max_bytes = "8MiB"
stale_if_error = "10s"
[log]
level = "error"
CONF
"$BIN/fusegate" run -c "$work/fusegate.toml" >/dev/null 2>"$work/fusegate.log" &
fg_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$ADMIN/alive" && break; sleep 0.1; done

cat > "$work/paths.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/api/soak/item/" .. (n % 5000))
end
LUA
rss() { awk '/VmRSS/ {print $2}' "/proc/$fg_pid/status"; }
half=$((requests / 2))
# wrk runs for a duration, not a count: give each half a bounded time at a conservative
# rate, then read how many requests were really sent from /metrics.
total() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^fusegate_requests_total/ {s += $2} END {printf "%d", s}'; }
drive() { # until the total reaches $1, in 10 s slices, at most 60 slices
  for _ in $(seq 60); do
    [ "$(total)" -ge "$1" ] && return 0
    wrk -t1 -c"$connections" -d10s -s "$work/paths.lua" "http://127.0.0.1:$FG" >/dev/null
  done
}
start_rss=$(rss)
drive "$half"; mid_rss=$(rss); mid_total=$(total)
drive "$requests"; end_rss=$(rss); end_total=$(total)

echo "soak: $end_total requests (target $requests), upstream failing 10%, cache on"
echo "fusegate RSS: start $((start_rss / 1024)) MiB, middle $((mid_rss / 1024)) MiB (after $mid_total), end $((end_rss / 1024)) MiB"
echo "answers by status:"
curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -F'[{}]' '/^fusegate_requests_total/ {split($2, a, "\""); print "  " a[2] ": " $3}' | sort
echo "cache:"
curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^fusegate_cache_total/ {print "  " $0}'
