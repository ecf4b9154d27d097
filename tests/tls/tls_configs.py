"""Configs for the TLS tests, rendered with the test's ports and certificate paths. Each one is
fed unchanged to envoi and to the real Envoy."""

from __future__ import annotations

from http_peers import ALL_ROUTES
from tls_certs import CertFiles, Pki

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
DOWNSTREAM_TLS_TYPE = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                       "DownstreamTlsContext")
UPSTREAM_TLS_TYPE = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext")
TLS_INSPECTOR = """\
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
"""


def admin(port: int) -> str:
    return f"""\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
static_resources:
"""


def cluster(name: str, port: int, transport_socket: str = "") -> str:
    return f"""\
  - name: {name}
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
{transport_socket}"""


def downstream_tls(cert: CertFiles, *, extra_common: str = "", extra: str = "",
                   indent: int = 6) -> str:
    pad = " " * indent
    text = f"""\
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": {DOWNSTREAM_TLS_TYPE}
{extra}    common_tls_context:
      tls_certificates:
      - certificate_chain: {{filename: {cert.cert}}}
        private_key: {{filename: {cert.key}}}
{extra_common}"""
    return "".join(pad + line + "\n" for line in text.splitlines())


def tcp_proxy(stat_prefix: str, cluster_name: str, indent: int = 6) -> str:
    pad = " " * indent
    text = f"""\
filters:
- name: envoy.filters.network.tcp_proxy
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
    stat_prefix: {stat_prefix}
    cluster: {cluster_name}
"""
    return "".join(pad + line + "\n" for line in text.splitlines())


def hcm(stat_prefix: str, cluster_name: str, indent: int = 6) -> str:
    pad = " " * indent
    text = f"""\
filters:
- name: envoy.filters.network.http_connection_manager
  typed_config:
    "@type": {HCM_TYPE}
    stat_prefix: {stat_prefix}
    route_config:
      virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
        - match: {{prefix: "/"}}
          route: {{cluster: {cluster_name}}}
    http_filters:
    - name: envoy.filters.http.router
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
    return "".join(pad + line + "\n" for line in text.splitlines())


def sni_routing(admin_port: int, port: int, pki: Pki, upstreams: list[int]) -> str:
    """Three names, three certificates, three clusters: SNI picks the filter chain, whose HCM
    routes to its own cluster."""
    chains = ""
    alpn = '      alpn_protocols: ["http/1.1"]'
    for name, _up in zip(("a", "b", "c"), upstreams, strict=True):
        tls = downstream_tls(pki.servers[f"{name}.local"], extra_common=alpn)
        chains += f"""\
    - name: sni_{name}
      filter_chain_match: {{server_names: ["{name}.local"]}}
{tls}\
{hcm(f"https_{name}", f"up_{name}")}"""
    clusters = "".join(cluster(f"up_{n}", p) for n, p in zip("abc", upstreams, strict=True))
    return f"""{admin(admin_port)}\
  listeners:
  - name: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters:
{TLS_INSPECTOR}\
    filter_chains:
{chains}\
  clusters:
{clusters}"""


def tls_sni_oracle(admin_port: int, port: int, pki: Pki, echo_a: int, echo_b: int) -> str:
    """``envoy-configs/tls_sni.yaml`` of the shared reference, on the test's ports and
    certificates. One difference: ``ecdh_curves: [X25519]``, so that envoi, which can tell the
    group only when one is allowed, reports ``ssl.curves.X25519`` as Envoy does."""
    cert = pki.servers["a.local+b.local"]
    tls = f"""\
      transport_socket: &tls
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {DOWNSTREAM_TLS_TYPE}
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_params: {{ecdh_curves: [X25519]}}
            tls_certificates:
            - certificate_chain: {{filename: {cert.cert}}}
              private_key: {{filename: {cert.key}}}
"""
    return f"""{admin(admin_port)}\
  listeners:
  - name: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters:
{TLS_INSPECTOR}\
    filter_chains:
    - name: sni_a
      filter_chain_match: {{server_names: ["a.local"], transport_protocol: tls}}
{tls}\
{tcp_proxy("sni_a", "echo_a")}\
    - name: sni_b
      filter_chain_match: {{server_names: ["b.local"], transport_protocol: tls}}
      transport_socket: *tls
{tcp_proxy("sni_b", "echo_b")}\
    - name: plaintext
      filter_chain_match: {{transport_protocol: raw_buffer}}
{tcp_proxy("plain", "echo_a")}\
  clusters:
{cluster("echo_a", echo_a)}{cluster("echo_b", echo_b)}"""


def upstream_tls(*, sni: str = "", ca: str = "", cert: CertFiles | None = None,
                 alpn: str = "", san_dns: str = "", extra: str = "", indent: int = 4) -> str:
    """A cluster's ``transport_socket``; ``extra`` is a line of UpstreamTlsContext fields."""
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {UPSTREAM_TLS_TYPE}']
    if sni:
        lines.append(f"    sni: {sni}")
    if extra:
        lines.append(f"    {extra}")
    lines.append("    common_tls_context:")
    if alpn:
        lines.append(f"      alpn_protocols: [{alpn}]")
    if cert is not None:
        lines += ["      tls_certificates:",
                  f"      - certificate_chain: {{filename: {cert.cert}}}",
                  f"        private_key: {{filename: {cert.key}}}"]
    if ca:
        lines += ["      validation_context:", f"        trusted_ca: {{filename: {ca}}}"]
        if san_dns:
            lines += ["        match_typed_subject_alt_names:",
                      f"        - {{san_type: DNS, matcher: {{exact: {san_dns}}}}}"]
    return "".join(" " * indent + line + "\n" for line in lines)


def upstream_routing(admin_port: int, port: int, clusters: dict[str, tuple[int, str]]) -> str:
    """A plaintext HCM listener routing ``/<name>`` to cluster ``<name>``; ``clusters`` maps
    each name to (port, transport_socket yaml)."""
    routes = "".join(f"""\
              - match: {{prefix: "/{name}"}}
                route: {{cluster: {name}}}
""" for name in clusters)
    return f"""{admin(admin_port)}\
  listeners:
  - name: http_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM_TYPE}
          stat_prefix: in
""" + ALL_ROUTES + f"""\
{routes}\
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{"".join(cluster(name, p, ts) for name, (p, ts) in clusters.items())}"""
