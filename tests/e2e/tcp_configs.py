"""Config templates shared by the tcp_proxy end-to-end and oracle tests."""

from __future__ import annotations


def tcp_proxy_yaml(admin: int, port: int, upstream: int, *, cluster: str = "echo",
                   idle_timeout: str = "30s", extra_filter: str = "", access_log: str = "",
                   buffer_limit: int | None = None, connect_attempts: int | None = None,
                   extra_hosts: tuple[int, ...] = (), max_duration: str = "") -> str:
    limit = (f"    per_connection_buffer_limit_bytes: {buffer_limit}\n"
             if buffer_limit is not None else "")
    attempts = (f"          max_connect_attempts: {connect_attempts}\n"
                if connect_attempts is not None else "")
    if max_duration:
        attempts += f"          max_downstream_connection_duration: {max_duration}\n"
    log = ""
    if access_log:
        log = f"""          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {access_log}
"""
    hosts = "".join(
        "        - endpoint: {address: {socket_address: "
        f"{{address: 127.0.0.1, port_value: {p}}}}}}}\n"
        for p in (upstream, *extra_hosts)
    )
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: tcp_in
    stat_prefix: tcp_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
{limit}    filter_chains:
    - filters:
{extra_filter}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp_echo
          cluster: {cluster}
          idle_timeout: {idle_timeout}
{attempts}{log}  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
{hosts}"""
