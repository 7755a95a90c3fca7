#!/usr/bin/env bash
# Load benchmark: fusegate side by side with nginx and a bare pingora proxy, on loopback.
#
#   bash benches/load.sh [--duration S] [--rounds N] [--connections C] [--workers W] [--debug]
#
# Starts a fast upstream (nginx, answering 200 "ok"), then the proxies in front of it:
# nginx (upstream keepalive on), examples/bare_proxy.rs (pingora, no features), fusegate
# (one route, breaker, metrics and request ids on), the same fusegate writing a JSON
# access log to a file, and the same fusegate with a dashboard client attached (its
# admin port's /events stream read throughout), each with W worker threads/processes.
# The bare proxy and fusegate run twice: with the pingora changes in vendor/patches, and
# with them switched off (PINGORA_PATCHES=off, pingora 0.9.1 as released).
# wrk drives each in turn, round after round (interleaved), for S seconds after a second
# of warm-up. Prints req/s, latency p50/p99, proxy CPU seconds per request, the
# connections the upstream accepted during a round (connection reuse) and peak RSS
# (medians over rounds), and fusegate's ratios to the others; then fusegate's RSS with
# 10,000 routes and how long a reload of that config takes. Every process listens on
# 127.0.0.1 and is stopped at the end. --debug uses debug builds (a smoke run; numbers
# mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 rounds=3 connections=50 workers=1 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing wrk:wrk nginx:nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

build "$profile" --bin fusegate --example bare_proxy
BIN=target/$profile

work=$(mktemp -d)
pids=()
trap bench_cleanup EXIT

UP=$(free_port); NGX=$(free_port); BARE=$(free_port); FG=$(free_port); ADMIN=$(free_port)
BARE0=$(free_port); FG0=$(free_port); ADMIN0=$(free_port)
FGL=$(free_port); ADMIN_L=$(free_port); FGD=$(free_port); ADMIN_D=$(free_port)

# The upstream: two workers, so it is not the bottleneck.
nginx_conf "$work/up" "server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok\n'; } location = /upstream_status { stub_status; } }" 2
"$NGINX" -c "$work/up/nginx.conf"

nginx_conf "$work/px" "upstream u { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" "$workers"
"$NGINX" -c "$work/px/nginx.conf"

"$BIN/examples/bare_proxy" "127.0.0.1:$BARE" "127.0.0.1:$UP" "$workers" >/dev/null 2>"$work/bare.log" &
pids+=($!); bare_pid=$!
PINGORA_PATCHES=off "$BIN/examples/bare_proxy" "127.0.0.1:$BARE0" "127.0.0.1:$UP" "$workers" >/dev/null 2>"$work/bare0.log" &
pids+=($!); bare0_pid=$!

fusegate_conf "$FG" "$ADMIN" "$UP" "$workers" > "$work/fusegate.toml"
"$BIN/fusegate" run -c "$work/fusegate.toml" >/dev/null 2>"$work/fusegate.log" &
pids+=($!); fg_pid=$!
fusegate_conf "$FG0" "$ADMIN0" "$UP" "$workers" > "$work/fusegate0.toml"
PINGORA_PATCHES=off "$BIN/fusegate" run -c "$work/fusegate0.toml" >/dev/null 2>"$work/fusegate0.log" &
pids+=($!); fg0_pid=$!
fusegate_conf "$FGL" "$ADMIN_L" "$UP" "$workers" "" "[access_log]
path = \"$work/access.log\"" > "$work/fusegate-log.toml"
"$BIN/fusegate" run -c "$work/fusegate-log.toml" >/dev/null 2>"$work/fusegate-log.log" &
pids+=($!); fgl_pid=$!

fusegate_conf "$FGD" "$ADMIN_D" "$UP" "$workers" > "$work/fusegate-dash.toml"
"$BIN/fusegate" run -c "$work/fusegate-dash.toml" >/dev/null 2>"$work/fusegate-dash.log" &
pids+=($!); fgd_pid=$!

for port in $UP $NGX $BARE $BARE0 $FG $FG0 $FGL $FGD; do
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then break; fi
    sleep 0.1
  done
done

rss_now() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rss_kib() { local m=0; for p in "$@"; do v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); m=$((m + v)); done; echo "$m"; }
to_us() { # wrk latency (e.g. 512.00us, 1.20ms, 2.00s) to microseconds
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print n }'
}

# A dashboard client on the last fusegate for the whole run (bounded by the run's length).
max_run=$(( (duration + 5) * rounds * 5 + 60 ))
curl -sN --max-time "$max_run" "http://127.0.0.1:$ADMIN_D/events" > "$work/events.txt" &
pids+=($!)

hz=$(getconf CLK_TCK)
declare -A results
# Connections the upstream accepted so far (its stub_status; the query itself is one).
upstream_accepts() { curl -s "http://127.0.0.1:$UP/upstream_status" | awk 'NR==3 {print $1}'; }
echo "proxy round req_per_s p50_us p99_us cpu_us_per_req new_upstream_conns" > "$work/results"
for round in $(seq "$rounds"); do
  for name in nginx bare0 bare fusegate0 fusegate fusegate-log fusegate-dash; do
    case $name in
      nginx) port=$NGX; procs=$(nginx_pids "$work/px") ;;
      bare) port=$BARE; procs=$bare_pid ;;
      bare0) port=$BARE0; procs=$bare0_pid ;;
      fusegate0) port=$FG0; procs=$fg0_pid ;;
      fusegate) port=$FG; procs=$fg_pid ;;
      fusegate-log) port=$FGL; procs=$fgl_pid ;;
      fusegate-dash) port=$FGD; procs=$fgd_pid ;;
    esac
    # shellcheck disable=SC2086
    # A second of warm-up first: a proxy's pooled upstream connections may have
    # outlived its idle timeout while the others ran.
    wrk -t1 -c"$connections" -d1s "http://127.0.0.1:$port/api/bench/item" >/dev/null
    before=$(cpu_ticks $procs)
    accepts_before=$(upstream_accepts)
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$port/api/bench/item")
    # shellcheck disable=SC2086
    after=$(cpu_ticks $procs)
    conns=$(( $(upstream_accepts) - accepts_before - 1 ))
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_us "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1=="99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [ -n "$errors" ] && echo "$name round $round: $errors" >&2
    cpu=$(awk -v a="$before" -v b="$after" -v hz="$hz" -v n="$total" 'BEGIN { printf "%.2f", (b-a)/hz*1e6/n }')
    echo "$name $round $rps $p50 $p99 $cpu $conns" >> "$work/results"
  done
done

# shellcheck disable=SC2046
rss_ngx=$(rss_kib $(nginx_pids "$work/px")); rss_bare=$(rss_kib "$bare_pid"); rss_fg=$(rss_kib "$fg_pid")
rss_bare0=$(rss_kib "$bare0_pid"); rss_fg0=$(rss_kib "$fg0_pid")
rss_fgl=$(rss_kib "$fgl_pid"); rss_fgd=$(rss_kib "$fgd_pid")
logged=$(wc -l < "$work/access.log")
echo "access log: $logged lines written"
snapshots=$(grep -c '^event: snapshot' "$work/events.txt" || true)
echo "dashboard client: $snapshots snapshots received"

# fusegate's memory with 10,000 routes (two upstreams each) configured.
BIG=$(free_port); BIG_ADMIN=$(free_port)
python3 - "$work/10k.toml" "$BIG" "$BIG_ADMIN" <<'PY'
import sys
path, port, admin = sys.argv[1:]
out = [f'[server]\nlisten = "127.0.0.1:{port}"\nthreads = 1\n[admin]\nlisten = "127.0.0.1:{admin}"\n[log]\nlevel = "warn"\n']
for i in range(10000):
    out.append(f'[routes.plugin-{i}]\nupstreams = ["127.0.0.1:{10000 + i}", "127.0.0.2:{10000 + i}"]\n')
open(path, "w").write("".join(out))
PY
"$BIN/fusegate" run -c "$work/10k.toml" >/dev/null 2>"$work/10k.log" &
pids+=($!); big_pid=$!
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$BIG_ADMIN/alive" && break; sleep 0.1; done
echo "fusegate with 10,000 routes: RSS $(($(rss_now "$big_pid") / 1024)) MiB once started, peak $(($(rss_kib "$big_pid") / 1024)) MiB"
# Reloads of that config: each one adds a route, so each has work to do. The file
# watcher sees the change and reloads first; once its generation is in force, POST
# /reload reloads the same file again, and the time it takes to answer (after the new
# route table is in force) is the reload time.
generation() { curl -s "http://127.0.0.1:$BIG_ADMIN/info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config_generation"])'; }
reload_ms=()
for i in 1 2 3 4 5 6; do
  before=$(generation)
  printf '[routes.added-%s]\nupstreams = ["127.0.0.1:9%s"]\n' "$i" "$i" >> "$work/10k.toml"
  for _ in $(seq 100); do [ "$(generation)" -gt "$before" ] && break; sleep 0.05; done
  took=$(curl -s -o "$work/reload.json" -w '%{time_total}' -X POST "http://127.0.0.1:$BIG_ADMIN/reload")
  if ! grep -q '"ok":true' "$work/reload.json"; then
    echo "reload failed: $(cat "$work/reload.json")" >&2
    exit 1
  fi
  reload_ms+=("$(awk -v t="$took" 'BEGIN { printf "%.0f", t * 1000 }')")
done
later=$(printf '%s\n' "${reload_ms[@]:3}" | sort -n | sed -n 2p)
echo "fusegate with 10,000 routes: reload ${reload_ms[0]} ms the first time, $later ms once warm (median of the 4th-6th; all: ${reload_ms[*]})"
echo "fusegate with 10,000 routes: RSS after $(generation) generations $(($(rss_now "$big_pid") / 1024)) MiB, peak $(($(rss_kib "$big_pid") / 1024)) MiB"

python3 - "$work/results" "$rss_ngx" "$rss_bare" "$rss_fg" "$rss_fgl" "$rss_fgd" "$rss_bare0" "$rss_fg0" "$workers" "$connections" "$duration" "$rounds" <<'PY'
import statistics, sys
path, rss_ngx, rss_bare, rss_fg, rss_fgl, rss_fgd, rss_bare0, rss_fg0, workers, conns, dur, rounds = sys.argv[1:]
rows = [l.split() for l in open(path).read().splitlines()[1:]]
med = {}
for name in ("nginx", "bare0", "bare", "fusegate0", "fusegate", "fusegate-log", "fusegate-dash"):
    r = [x for x in rows if x[0] == name]
    med[name] = [statistics.median(float(x[i]) for x in r) for i in range(2, 7)]
rss = {"nginx": int(rss_ngx), "bare": int(rss_bare), "fusegate": int(rss_fg),
       "bare0": int(rss_bare0), "fusegate0": int(rss_fg0),
       "fusegate-log": int(rss_fgl), "fusegate-dash": int(rss_fgd)}
print(f"{workers} worker(s), {conns} connections, {rounds} round(s) of {dur} s each (medians)")
print(f"{'proxy':<32}{'req/s':>10}{'p50 us':>10}{'p99 us':>10}{'CPU us/req':>12}{'peak RSS MiB':>14}{'new upstream conns':>20}")
labels = (("nginx", "nginx"), ("bare0", "bare pingora 0.9.1"), ("bare", "bare pingora, patched"),
          ("fusegate0", "fusegate on pingora 0.9.1"), ("fusegate", "fusegate"),
          ("fusegate-log", "fusegate + access log"), ("fusegate-dash", "fusegate + dashboard"))
for name, label in labels:
    rps, p50, p99, cpu, conns = med[name]
    print(f"{label:<32}{rps:>10.0f}{p50:>10.0f}{p99:>10.0f}{cpu:>12.2f}{rss[name]/1024:>14.1f}{conns:>20.0f}")
f, b, n = med["fusegate"], med["bare"], med["nginx"]
def ratio(a, c): return a / c if c else float("nan")
print(f"fusegate/bare pingora, both patched: req/s {ratio(f[0], b[0]):.2f}x, p99 {ratio(f[2], b[2]):.2f}x, CPU/req {ratio(f[3], b[3]):.2f}x")
b0, f0 = med["bare0"], med["fusegate0"]
print(f"fusegate/bare pingora 0.9.1: req/s {ratio(f[0], b0[0]):.2f}x, p99 {ratio(f[2], b0[2]):.2f}x, CPU/req {ratio(f[3], b0[3]):.2f}x")
print(f"pingora patches on/off, fusegate: req/s {ratio(f[0], f0[0]):.2f}x, p99 {ratio(f[2], f0[2]):.2f}x, CPU/req {ratio(f[3], f0[3]):.2f}x")
print(f"pingora patches on/off, bare: req/s {ratio(b[0], b0[0]):.2f}x, p99 {ratio(b[2], b0[2]):.2f}x, CPU/req {ratio(b[3], b0[3]):.2f}x")
print(f"fusegate/nginx:        req/s {ratio(f[0], n[0]):.2f}x, p99 {ratio(f[2], n[2]):.2f}x, CPU/req {ratio(f[3], n[3]):.2f}x")
l = med["fusegate-log"]
print(f"access log on/off:     req/s {ratio(l[0], f[0]):.2f}x, p99 {ratio(l[2], f[2]):.2f}x, CPU/req {ratio(l[3], f[3]):.2f}x")
d = med["fusegate-dash"]
print(f"dashboard on/off:      req/s {ratio(d[0], f[0]):.2f}x, p99 {ratio(d[2], f[2]):.2f}x, CPU/req {ratio(d[3], f[3]):.2f}x")
PY
