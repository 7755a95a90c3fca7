#!/usr/bin/env bash
# Where a proxied request's CPU goes: nginx, the bare pingora proxy and fusegate, each
# with one worker, profiled in turn under the same wrk load on loopback; samples grouped
# into the kernel, the parts of pingora's HTTP/1 path, tokio, the allocator, fusegate's
# own code and the rest.
#
#   bash benches/profile.sh [--seconds S]
#
# Needs perf (Debian's linux-perf; the cpu-clock event works where hardware counters do
# not). For each proxy: the CPU time per request over the profile's window (from
# /proc/PID/stat, so the profiler's own cost is included) split by the share of samples
# per group. A measurement, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=8
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing wrk:wrk nginx:nginx perf:linux-perf
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build release --bin fusegate --example bare_proxy

work=$(mktemp -d)
pids=()
trap bench_cleanup EXIT

UP=$(free_port); NGX=$(free_port); BARE=$(free_port); FG=$(free_port); ADMIN=$(free_port)
nginx_conf "$work/up" "server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok\n'; } }" 2
"$NGINX" -c "$work/up/nginx.conf"
nginx_conf "$work/px" "upstream u { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" 1
"$NGINX" -c "$work/px/nginx.conf"
target/release/examples/bare_proxy "127.0.0.1:$BARE" "127.0.0.1:$UP" 1 >/dev/null 2>"$work/bare.log" &
pids+=($!); bare=$!
fusegate_conf "$FG" "$ADMIN" "$UP" 1 > "$work/fusegate.toml"
target/release/fusegate run -c "$work/fusegate.toml" >/dev/null 2>"$work/fusegate.log" &
pids+=($!); fg=$!
for port in $UP $NGX $BARE $FG; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
ngx=$(pgrep -P "$(cat "$work/px/nginx.pid")" | head -1)

# profile NAME PORT PID: warm up, then a cpu-clock profile of PID while wrk runs; writes
# NAME.symbols (perf's per-symbol shares) and NAME.cost (CPU ticks, requests).
profile() {
  local name=$1 port=$2 pid=$3 url="http://127.0.0.1:$2/api/bench/item"
  wrk -t1 -c50 -d2s "$url" >/dev/null
  wrk -t1 -c50 -d"$((seconds + 2))s" "$url" >"$work/$name.wrk" &
  local wrkpid=$!
  sleep 1
  local before after
  before=$(cpu_ticks "$pid")
  perf record -q -e cpu-clock -F 2000 -p "$pid" -o "$work/$name.perf" -- sleep "$seconds" 2>/dev/null
  after=$(cpu_ticks "$pid")
  wait "$wrkpid"
  local rps
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.wrk")
  echo "$((after - before)) $rps" >"$work/$name.cost"
  perf report -i "$work/$name.perf" --no-children --sort dso,sym --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' >"$work/$name.symbols"
}
profile nginx "$NGX" "$ngx"
profile bare "$BARE" "$bare"
profile fusegate "$FG" "$fg"

python3 - "$work" "$(getconf CLK_TCK)" "$seconds" <<'PY'
import re, sys
work, hz, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
GROUPS = [
    # (label, test on dso and symbol), first match wins
    ("kernel (loopback TCP, epoll, system calls)", lambda d, s: d.startswith("[kernel")),
    ("clock reads (vDSO)", lambda d, s: "vdso" in d),
    ("allocator", lambda d, s: re.search(r"\bmi_|_mi_|mimalloc|^_?_?libc_(malloc|free|calloc|realloc)|^_int_(malloc|free|realloc)|^malloc|^free$|^cfree|^realloc|^calloc|tcache|malloc_consolidate|unlink_chunk", s)),
    ("libc (memcpy, send/recv wrappers)", lambda d, s: "libc" in d),
    ("nginx", lambda d, s: d == "nginx"),
    ("fusegate's own code (hooks, breaker, router, metrics)", lambda d, s: "fusegate::" in s and not s.startswith(("<pingora", "pingora"))),
    ("pingora: downstream HTTP/1 (read request, write response)", lambda d, s: re.search(r"pingora_core::protocols::http::(v1::server|server|body|v1::body|v1::common)", s)),
    ("pingora: upstream HTTP/1 (write request, read response)", lambda d, s: re.search(r"pingora_core::protocols::http::v1::client|pingora_core::connectors::http", s)),
    ("pingora: upstream connection pool", lambda d, s: re.search(r"pingora_pool|TransportConnector|pingora_core::connectors|lru::", s)),
    ("pingora: timeouts", lambda d, s: "pingora_timeout" in s),
    ("pingora: proxy flow (phases, per-request channels, header copies)", lambda d, s: "pingora_proxy" in s or "pingora_http" in s),
    ("pingora: other (sockets, services)", lambda d, s: "pingora" in s),
    ("tokio: channels, semaphores, notify (per-request sync)", lambda d, s: re.search(r"tokio::sync", s)),
    ("tokio: scheduler, I/O readiness, tasks", lambda d, s: "tokio" in s),
    ("headers and buffers (http, httparse, bytes)", lambda d, s: re.search(r"httparse|\bhttp::|bytes::", s)),
]
def load(name):
    ticks, rps = open(f"{work}/{name}.cost").read().split()
    reqs = float(rps) * secs
    us = int(ticks) / hz * 1e6 / reqs if reqs else float("nan")
    shares = {}
    for line in open(f"{work}/{name}.symbols"):
        m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        label = next((g for g, test in GROUPS if test(dso, sym)), "other (std, hashing, ...)")
        shares[label] = shares.get(label, 0) + pct
    total = sum(shares.values()) or 1
    return float(rps), us, {k: v / total for k, v in shares.items()}
names = ["nginx", "bare", "fusegate"]
data = {n: load(n) for n in names}
labels = [g for g, _ in GROUPS] + ["other (std, hashing, ...)"]
print(f"profiled {secs} s each, one worker, wrk -t1 -c50 (CPU per request includes the profiler's cost)\n")
print("| where | nginx µs/req | bare pingora µs/req | fusegate µs/req | fusegate share |")
print("| --- | --- | --- | --- | --- |")
for g in labels:
    row = [data[n][2].get(g, 0) * data[n][1] for n in names]
    if max(row) < 0.05:
        continue
    print(f"| {g} | " + " | ".join(f"{v:.2f}" for v in row) + f" | {data['fusegate'][2].get(g, 0) * 100:.1f}% |")
print("| **total** | " + " | ".join(f"**{data[n][1]:.1f}**" for n in names) + " | 100% |")
print("| req/s while profiled | " + " | ".join(f"{data[n][0]:,.0f}" for n in names) + " | |")
PY
