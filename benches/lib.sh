# Shared by the benchmark scripts (sourced, from the project root).

# install_missing CMD:PACKAGE... installs, with apt, each package whose command is not
# on the PATH (nor in /usr/sbin).
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# free_port prints a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# build PROFILE CARGO_ARGS...: cargo build with the release or the debug profile (locked),
# its output on stderr.
build() {
  local profile=$1; shift
  if [ "$profile" = release ]; then
    cargo build --release --locked "$@" >&2
  else
    cargo build --locked "$@" >&2
  fi
}

# nginx_conf DIR HTTP_BODY WORKERS writes DIR/nginx.conf: a daemon with its pid, logs and
# temp files in DIR, no access log, the given http block body.
nginx_conf() {
  mkdir -p "$1"
  cat > "$1/nginx.conf" <<CONF
worker_processes $3;
pid $1/nginx.pid;
error_log $1/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  $2
}
CONF
}

# cpu_ticks PID... prints the user + system CPU time of the given processes, in clock
# ticks (getconf CLK_TCK per second); a process gone counts 0.
cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# nginx_pids DIR prints the pids of the nginx started with DIR/nginx.conf: its workers
# and its master.
nginx_pids() { pgrep -P "$(cat "$1/nginx.pid")" | tr '\n' ' '; cat "$1/nginx.pid"; }

# fusegate_conf PORT ADMIN_PORT UPSTREAM_PORT WORKERS [SERVER_KEYS] [MORE] prints the
# benchmark's fusegate config: one route `bench` for every path to the upstream, warn
# logging; SERVER_KEYS go into [server], MORE (other sections) at the end.
fusegate_conf() {
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
threads = $4
${5:-}
[admin]
listen = "127.0.0.1:$2"
[routes.bench]
upstreams = ["127.0.0.1:$3"]
prefix = "/"
[log]
level = "warn"
${6:-}
CONF
}

# bench_cleanup, for `trap bench_cleanup EXIT`: SIGKILLs the processes in the global
# `pids` array (the measurement is over, and a pingora server on SIGTERM waits out its
# grace period, 5 minutes by default for the bare proxy), stops every nginx started with
# a config under the global `work` directory, and removes that directory.
bench_cleanup() {
  local p f
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for f in "$work"/*/nginx.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.2
  rm -rf "$work"
}
