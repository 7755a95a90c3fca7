#!/usr/bin/env bash
# Installs the system packages fusegate's build needs, when they are missing:
# cmake (zlib-ng, under pingora), pkg-config and libssl-dev (OpenSSL for TLS upstreams),
# a C compiler; curl (HTTP/2 and TLS client of the tests); nats-server for the
# control-plane tests; nginx, wrk and h2load (nghttp2-client) for the load and edge
# benchmarks (the suite smoke-runs them); openssl for scripts/selfsigned.sh; promtool
# (prometheus) for the alert rules' tests; chromium and chromium-driver for the
# dashboard's browser tests.
# Debian/Ubuntu (apt-get); run as root or with sudo available.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
