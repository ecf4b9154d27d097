"""``envoy.filters.network.http_connection_manager``: HTTP/1.1 streams and the HTTP filter chain."""
