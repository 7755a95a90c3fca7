#!/usr/bin/env bash
# Where fusegate's CPU goes per request: a cpu-clock profile of one worker under wrk load,
# on loopback, grouped into kernel, pingora, fusegate's own code, allocator, async runtime
# and the rest.
#
#   bash benches/profile.sh [--seconds S]
#
# Needs perf (Debian's linux-perf; the cpu-clock event works where hardware counters do
# not). Prints the share of samples per group and, with the CPU time per request measured
# over the same window, microseconds per request. A measurement, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing wrk:wrk nginx:nginx perf:linux-perf
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build release --bin fusegate

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -f "$work/up/nginx.pid" ] && kill "$(cat "$work/up/nginx.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT

UP=$(free_port); FG=$(free_port); ADMIN=$(free_port)
nginx_conf "$work/up" "server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok\n'; } }" 2
"$NGINX" -c "$work/up/nginx.conf"
fusegate_conf "$FG" "$ADMIN" "$UP" 1 > "$work/fusegate.toml"
target/release/fusegate run -c "$work/fusegate.toml" >/dev/null 2>"$work/fusegate.log" &
pids+=($!); fg=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$FG/" && break; sleep 0.1; done

# Warm up, then profile while wrk runs.
wrk -t1 -c50 -d2s "http://127.0.0.1:$FG/api/bench/item" >/dev/null
wrk -t1 -c50 -d"$((seconds + 2))s" "http://127.0.0.1:$FG/api/bench/item" >"$work/wrk.out" &
wrkpid=$!
sleep 1
before=$(awk '{print $14 + $15}' "/proc/$fg/stat")
perf record -q -e cpu-clock -F 2000 -g -p "$fg" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
after=$(awk '{print $14 + $15}' "/proc/$fg/stat")
wait "$wrkpid"
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")

perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' >"$work/symbols"
python3 - "$work/symbols" "$before" "$after" "$(getconf CLK_TCK)" "$rps" "$seconds" <<'PY'
import re, sys
path, before, after, hz, rps, secs = sys.argv[1:]
cpu_s = (int(after) - int(before)) / int(hz)
reqs = float(rps) * int(secs)
us_per_req = cpu_s * 1e6 / reqs if reqs else float("nan")
groups = {}
def group(dso, sym):
    if dso.startswith("[kernel"):
        return "kernel (TCP on loopback, epoll, syscalls)"
    if "libc" in dso:
        return "libc (memcpy, ...)"
    s = sym
    if re.search(r"\bmi_|mimalloc|_mi_", s):
        return "allocator (mimalloc)"
    if "fusegate" in s:
        return "fusegate's own code (hooks, breaker, router, metrics)"
    if "pingora" in s:
        return "pingora (HTTP/1 server and client, proxy, pool)"
    if "tokio" in s:
        return "async runtime (tokio)"
    if re.search(r"httparse|\bhttp::|bytes::|prometheus|hashbrown|core::|alloc::", s):
        return "libraries (http, httparse, bytes, prometheus, std)"
    return "other"
for line in open(path):
    m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
    g = group(dso, sym)
    groups[g] = groups.get(g, 0) + pct
total = sum(groups.values()) or 1
print(f"{rps} req/s; {us_per_req:.1f} us of CPU per request over the profile's {secs} s")
print(f"{'where':<56}{'share':>8}{'us/req':>9}")
for g, p in sorted(groups.items(), key=lambda kv: -kv[1]):
    print(f"{g:<56}{p / total * 100:>7.1f}%{p / total * us_per_req:>9.2f}")
PY
