"""The config of tests/http/test_hcm_options_e2e.py: one listener per HCM option under test, each
with a file access log; the same YAML runs through Envoy 1.39.3 and envoi."""

from __future__ import annotations

from http_peers import ALL_ROUTES, hcm_listener_item

LISTENER = "\n" + hcm_listener_item("{name}") + """\
          stat_prefix: {name}
{extra}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
{log_format}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{router}
""" + ALL_ROUTES + """\
              - match: {{prefix: "/direct"}}
                direct_response: {{status: 200, body: {{inline_string: "direct\\n"}}}}
              - match: {{prefix: "/dead"}}
                route: {{cluster: dead}}
              - match: {{prefix: "/empty"}}
                route: {{cluster: empty}}
              - match: {{prefix: "/up"}}
                route: {{cluster: echo}}
"""

CLUSTERS = """
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}
  - name: dead
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {dead}}}}}}}
  - name: empty
    type: STATIC
    connect_timeout: 1s
    load_assignment: {{cluster_name: empty}}
"""

TEXT_FORMAT = """\
              log_format:
                text_format_source:
                  inline_string: "{fmt}\\n"
"""
CUSTOM = ("%REQ(X-FOO?X-BAR):5% %RESP(X-UP)% %RESP(CONTENT-TYPE)% %RESPONSE_CODE% "
          "%RESPONSE_FLAGS% %UPSTREAM_HOST% %PROTOCOL% %BYTES_RECEIVED% %BYTES_SENT% "
          "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %REQ(:PATH)% "
          "dur=%DURATION%")
JSON_FORMAT = """\
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                  foo: "%REQ(X-FOO?X-BAR):5%"
                  up: "%UPSTREAM_HOST%"
                  proto: "%PROTOCOL%"
                  rx: "%BYTES_RECEIVED%"
                  tx: "%BYTES_SENT%"
                  duration: "%DURATION%"
                  mixed: "code=%RESPONSE_CODE% path=%REQ(:PATH)%"
                  constant: "abc"
"""

# name -> (HCM fields, log format, router typed_config fields)
LISTENERS: dict[str, tuple[str, str, str]] = {
    "deflog": ("          use_remote_address: true", "", ""),
    "text": ("", TEXT_FORMAT.format(fmt=CUSTOM), ""),
    "json": ("", JSON_FORMAT, ""),
    "xff0": ("          use_remote_address: true", TEXT_FORMAT.format(fmt=CUSTOM), ""),
    "xff1": ("          use_remote_address: true\n          xff_num_trusted_hops: 1",
             TEXT_FORMAT.format(fmt=CUSTOM), ""),
    "xff2": ("          use_remote_address: true\n          xff_num_trusted_hops: 2",
             TEXT_FORMAT.format(fmt=CUSTOM), ""),
    "noremote1": ("          xff_num_trusted_hops: 1", TEXT_FORMAT.format(fmt=CUSTOM), ""),
    "noremote0": ("", TEXT_FORMAT.format(fmt=CUSTOM), ""),
    "reject": ("          common_http_protocol_options:\n"
               "            headers_with_underscores_action: REJECT_REQUEST\n"
               "            max_headers_count: 5", "", ""),
    "dropu": ("          common_http_protocol_options:\n"
              "            headers_with_underscores_action: DROP_HEADER", "", ""),
    "named": ("          server_name: my-proxy/1.0", "",
              "              suppress_envoy_headers: true"),
}


def config(admin: int, ports: dict[str, int], logs: dict[str, str], echo: int,
           dead: int) -> str:
    out = [f"admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}\n"
           "static_resources:\n  listeners:"]
    for name, (extra, fmt, router) in LISTENERS.items():
        out.append(LISTENER.format(name=name, port=ports[name], extra=extra, log=logs[name],
                                   log_format=fmt, router=router).replace("\n\n", "\n"))
    out.append(CLUSTERS.format(echo=echo, dead=dead))
    return "".join(out)
