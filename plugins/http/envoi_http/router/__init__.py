"""``envoy.filters.http.router``: route tables, upstream HTTP/1.1 pools, retries and timeouts."""
