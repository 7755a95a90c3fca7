#!/usr/bin/env bash
# Fleet measurements on one machine, over a real nats-server on loopback:
#
#   bash benches/fleet.sh [--gateways N] [--outage-gateways M] [--debug]
#
# 1. ctl at scale: N gateways (default 100) on one cluster; `fusegate ctl ping` and
#    `fusegate ctl pause` (then resume) run 5 times each; prints the "Managed N
#    gateway(s) in X ms" figures (median and worst).
# 2. Outage: M gateways (default 10) in front of one dead plugin (an upstream answering
#    500 and counting what reaches it); traffic spread evenly over the gateways, one
#    request at a time in turn, until every gateway rejects (503). Counts the requests
#    that reached the dead upstream, with local breakers and with
#    `breaker.fleet = { quorum = 2 }`, and their ratio.
# A measurement, not a test. Every process listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

gateways=100 outage=10 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --gateways) gateways=$2; shift 2 ;;
    --outage-gateways) outage=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing nats-server:nats-server
build "$profile" --bin fusegate
BIN=target/$profile/fusegate

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT

NATS=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$NATS),0.2)" 2>/dev/null && break; sleep 0.05; done

UP=$(free_port)
# The dead plugin: answers 500 to everything and counts the requests.
python3 - "$UP" "$work/dead.count" >"$work/dead.log" 2>&1 <<'PY' &
import http.server, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]
lock, n = threading.Lock(), [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with lock:
            n[0] += 1
            open(path, "w").write(str(n[0]))
        self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
pids+=($!)

phase=() # the gateways of the current phase
start_gateway() { # name, cluster, breaker extra -> GW_PORT, GW_ADMIN
  local port admin
  port=$(free_port); admin=$(free_port)
  cat >"$work/$1.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
threads = 1
[admin]
listen = "127.0.0.1:$admin"
[routes.catalog]
upstreams = ["127.0.0.1:$UP"]
breaker = { volume_threshold = 5, reset_timeout = "60s", rolling_window = "10s" $3 }
[nats]
url = "nats://127.0.0.1:$NATS"
cluster = "$2"
identity = "$1"
[log]
level = "error"
CONF
  "$BIN" run -c "$work/$1.toml" >/dev/null 2>"$work/$1.log" &
  pids+=($!); phase+=($!)
  GW_PORT=$port GW_ADMIN=$admin
}
end_phase() {
  for p in "${phase[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${phase[@]}"; do wait "$p" 2>/dev/null || true; done
  phase=()
}

wait_admin() { for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1/ready" && return 0; sleep 0.05; done; echo "gateway on $1 did not start" >&2; exit 1; }

# 1. ctl at scale.
admins=()
for i in $(seq "$gateways"); do
  start_gateway "scale-$i" scale ""
  admins+=("$GW_ADMIN")
done
for a in "${admins[@]}"; do wait_admin "$a"; done
# Every gateway connected to NATS before measuring.
for a in "${admins[@]}"; do
  for _ in $(seq 200); do curl -s "http://127.0.0.1:$a/metrics" | grep -q '^fusegate_nats_connected 1' && break; sleep 0.05; done
done
ctl() { "$BIN" ctl --nats "nats://127.0.0.1:$NATS" --cluster scale --timeout 3s -c /nonexistent "$@"; }
measure() { # label, action...
  local label=$1 ms=()
  shift
  for _ in 1 2 3 4 5; do
    out=$(ctl "$@" 2>/dev/null || true)
    ms+=("$(sed -n 's/^Managed \([0-9]*\) gateway(s) in \([0-9]*\) ms$/\1 \2/p' <<<"$out")")
    [ "$1" = pause ] && { ctl resume catalog >/dev/null 2>&1 || true; }
  done
  printf '%s\n' "${ms[@]}" | python3 -c "
import sys, statistics
rows = [l.split() for l in sys.stdin if l.strip()]
n = min(int(r[0]) for r in rows) if rows else 0
t = sorted(int(r[1]) for r in rows)
print(f'ctl $label over $gateways gateways: reached {n} every time; median {statistics.median(t):.0f} ms, worst {t[-1]} ms' if t else 'ctl $label: no answer')"
}
measure ping ping
measure pause pause catalog
end_phase

# 2. Outage: requests reaching the dead plugin until every gateway rejects.
outage_run() { # label, breaker extra
  local ports=()
  before=$(cat "$work/dead.count" 2>/dev/null || echo 0)
  for i in $(seq "$outage"); do
    start_gateway "$1-$i" "$1" "$2"
    ports+=("$GW_PORT"); wait_admin "$GW_ADMIN"
  done
  sleep 1 # every gateway subscribed
  python3 - "${ports[@]}" >"$work/sent" <<'PY'
import sys, urllib.request, urllib.error, time
ports = sys.argv[1:]
rejecting, deadline, sent = set(), time.time() + 60, 0
while len(rejecting) < len(ports) and time.time() < deadline:
    for p in ports:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{p}/api/catalog/x", timeout=5).read()
        except urllib.error.HTTPError as e:
            if e.code == 503:
                rejecting.add(p)
        sent += 1
print(sent, len(rejecting))
PY
  end_phase
}
outage_run local ""
read -r sent_local _ <"$work/sent"; local_hits=$(( $(cat "$work/dead.count") - before ))
outage_run fleetq ", fleet = { quorum = 2 }"
read -r sent_fleet _ <"$work/sent"; fleet_hits=$(( $(cat "$work/dead.count") - before ))
python3 - "$outage" "$local_hits" "$fleet_hits" "$sent_local" "$sent_fleet" <<'PY'
import sys
m, local, fleet, sl, sf = map(int, sys.argv[1:])
print(f"outage over {m} gateways: requests reaching the dead plugin until every gateway rejects:")
print(f"  local breakers: {local} (of {sl} sent)")
print(f"  fleet quorum 2: {fleet} (of {sf} sent)")
print(f"  ratio fleet/local: {fleet / local:.2f}" if local else "  ratio: n/a")
PY
