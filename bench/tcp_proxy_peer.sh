#!/usr/bin/env bash
# One tcp_proxy peer for the shared peer harness: writes the same tcp_proxy config for Envoy and
# envoi and execs the proxy on it. Usage (the harness fills the braces):
#   tcp_proxy_peer.sh envoy|envoi PROXY_BINARY {port} {admin_port} {backend_port} {tmp}
set -euo pipefail
kind=$1 bin=$2 port=$3 admin=$4 backend=$5 tmp=$6
cfg="$tmp/tcp_proxy_$kind.yaml"
cat > "$cfg" <<YAML
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: tcp_in
    address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench
          cluster: backend
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $backend}}}
YAML
case "$kind" in
  envoy) exec "$bin" -c "$cfg" --concurrency 1 --disable-hot-restart -l warning ;;
  envoi) exec "$bin" -c "$cfg" -l warning ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
