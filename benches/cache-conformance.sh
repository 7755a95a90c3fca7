#!/usr/bin/env bash
# Cache conformance: the HTTP cache-tests suite (npm http-cache-tests, the suite behind
# cache-tests.fyi) against fusegate and nginx, side by side, on loopback.
#
#   bash benches/cache-conformance.sh [--debug] [--keep DIR]
#
# Installs http-cache-tests@0.4.5 from npm into a temp dir (node and npm come from
# Debian's packages when missing), starts the suite's own origin server, then in front of
# it: fusegate (one route, prefix "/", cache on, every other key at its default) and
# nginx (proxy_cache, proxy_cache_revalidate on). Runs the suite's CLI against each and
# prints, from the suite's own result classification: passed, required failures, optimal
# misses, dependency failures, setup failures; then the ids of fusegate's required
# failures and setup failures. --keep DIR keeps the raw result files there. A
# measurement, not a test: it prints, it does not judge.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug; shift ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

. benches/lib.sh
install_missing node:nodejs npm:npm nginx:nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

build "$profile" --bin fusegate
BIN=target/$profile/fusegate

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT

ORIGIN=$(free_port); FG=$(free_port); ADMIN=$(free_port); NGX=$(free_port)

wait_port() { # port, what
  for _ in $(seq 1 200); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$2 did not listen on 127.0.0.1:$1" >&2; exit 1
}

# The suite and its origin server.
mkdir -p "$work/suite"
(cd "$work/suite" && npm init -y >/dev/null 2>&1 &&
  npm install --no-audit --no-fund --silent http-cache-tests@0.4.5 >/dev/null 2>&1)
PKG="$work/suite/node_modules/http-cache-tests"
node benches/cache-conformance/origin.mjs "$PKG" "$ORIGIN" >"$work/origin.log" 2>&1 &
pids+=($!)
wait_port "$ORIGIN" "the suite's origin server"

# fusegate: one route, prefix "/", the cache on with its defaults.
cat >"$work/fusegate.toml" <<TOML
[server]
listen = "127.0.0.1:$FG"
threads = 1
[admin]
listen = "127.0.0.1:$ADMIN"
[routes.origin]
upstreams = ["127.0.0.1:$ORIGIN"]
prefix = "/"
[routes.origin.cache]
enabled = true
[log]
level = "error"
TOML
"$BIN" run -c "$work/fusegate.toml" >"$work/fusegate.log" 2>&1 &
pids+=($!)
wait_port "$FG" fusegate

# nginx: proxy_cache with revalidation.
mkdir -p "$work/nginx/cache"
cat >"$work/nginx/nginx.conf" <<NGX
user $(id -un) $(id -gn);
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=suite:10m;
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN;
      proxy_cache suite;
      proxy_cache_revalidate on;
    }
  }
}
NGX
"$NGINX" -c "$work/nginx/nginx.conf" 2>/dev/null
wait_port "$NGX" nginx

run_suite() { # name, port -> $work/<name>.json
  (cd "$PKG" && npm run --silent cli --base="http://127.0.0.1:$2" >"$work/$1.json" 2>"$work/$1.err")
  node "$(pwd)/benches/cache-conformance/classify.mjs" "$PKG" "$work/$1.json" >"$work/$1.counts"
}
run_suite nginx "$NGX"
run_suite fusegate "$FG"
if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$work"/*.json "$work"/*.counts "$keep"/; fi

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
rows = []
for name in ["nginx", "fusegate"]:
    d = json.load(open(f"{work}/{name}.counts"))
    c = d["counts"]
    rows.append((name, c.get("pass", 0), c.get("fail", 0), c.get("optional_fail", 0),
                 c.get("dependency_fail", 0), c.get("setup_fail", 0), d["failed"]))
print("| cache | pass | required failures | optimal misses | dependency failures | setup failures |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |")
f = rows[1][6]
print("\nfusegate required failures:", ", ".join(f["fail"]) or "none")
print("fusegate setup failures:", ", ".join(f["setup_fail"]) or "none")
print("fusegate optimal misses:", ", ".join(f["optional_fail"]) or "none")
PY
