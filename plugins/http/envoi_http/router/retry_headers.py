"""The router's ``x-envoy-*`` request headers, as Envoy 1.39.3 treats them.

They reach the router only from internal clients (``hcm/internal.py`` removes them from every
other request; by default no client is internal). Then:

* ``x-envoy-retry-on`` / ``x-envoy-retry-grpc-on`` add their conditions to the route's retry
  policy (or make one: 1 retry, 25 ms base back-off) -- the HTTP conditions from the first, the
  gRPC ones (``cancelled``, ``deadline-exceeded``, ``internal``, ``resource-exhausted``,
  ``unavailable``) from the second; ``x-envoy-max-retries`` sets the number of
  retries when some retry condition applies (alone it does nothing). Unknown values are ignored.
* ``x-envoy-upstream-rq-timeout-ms`` replaces the route timeout (``0``: none; not a number:
  ignored); ``x-envoy-upstream-rq-per-try-timeout-ms`` sets the per-try timeout, dropped when
  it is not below the global one.
* With router ``respect_expected_rq_timeout``, an incoming ``x-envoy-expected-rq-timeout-ms``
  is the timeout; ``x-envoy-upstream-rq-timeout-ms`` then applies only without it (and goes
  upstream untouched when not used).
* All the used ones are removed before the request goes upstream. ``x-envoy-expected-rq-timeout-ms``
  is set to the per-try or global timeout (the time left on a retry) unless
  ``suppress_envoy_headers`` (then an incoming one passes).
* A route's deprecated ``max_grpc_timeout`` (Envoy 1.39.3 still obeys it, with a warning; not
  on a route with ``max_stream_duration``): a gRPC request's timeout is its ``grpc-timeout``
  less ``grpc_timeout_offset`` (when the offset is below it), capped at ``max_grpc_timeout``
  (``0s``: no cap; no header: the cap), instead of the route's ``timeout``; the header goes
  upstream as the per-try or global timeout (the time left on a retry), as Envoy's
  ``setTimeoutHeaders`` writes it.
* Virtual host ``include_request_attempt_count``: ``x-envoy-attempt-count: N`` on each attempt
  (even with ``suppress_envoy_headers``); ``include_attempt_count_in_response``: on the response.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, NamedTuple

from envoi.http.grpc import format_timeout, is_grpc_request, parse_timeout_ms

from envoi_http.router.route_policies import GRPC_RETRY_ON, RETRY_ON_HTTP, RetryPolicy

if TYPE_CHECKING:
    from envoi.http.headers import HeaderMap

    from envoi_http.router.config import Route

RETRY_ON = b"x-envoy-retry-on"
RETRY_GRPC_ON = b"x-envoy-retry-grpc-on"
MAX_RETRIES = b"x-envoy-max-retries"
RQ_TIMEOUT = b"x-envoy-upstream-rq-timeout-ms"
PER_TRY = b"x-envoy-upstream-rq-per-try-timeout-ms"
EXPECTED = b"x-envoy-expected-rq-timeout-ms"
ATTEMPT_COUNT = b"x-envoy-attempt-count"
GRPC_TIMEOUT = b"grpc-timeout"
GRPC_ON = frozenset(GRPC_RETRY_ON)
CONTROL = frozenset((RETRY_ON, RETRY_GRPC_ON, MAX_RETRIES, RQ_TIMEOUT, PER_TRY, EXPECTED))


def _conditions(value: bytes | None, known: frozenset[str]) -> frozenset[str]:
    """The conditions of ``value`` that its header knows (Envoy's ``parseRetryOn`` /
    ``parseRetryGrpcOn``: the gRPC ones count only in x-envoy-retry-grpc-on, the HTTP ones only
    in x-envoy-retry-on; anything else is ignored)."""
    if not value:
        return frozenset()
    return frozenset(x.strip() for x in value.decode("latin-1").split(",")) & known


def _ms(value: bytes | None) -> float | None:
    return int(value) / 1000 if value is not None and value.isdigit() else None


def _retry_policy(route: Route, h: HeaderMap) -> RetryPolicy | None:
    rp = route.retry_policy
    on_header, grpc_header = h.get_bytes(RETRY_ON), h.get_bytes(RETRY_GRPC_ON)
    max_header = h.get_bytes(MAX_RETRIES)
    for name, v in ((RETRY_ON, on_header), (RETRY_GRPC_ON, grpc_header),
                    (MAX_RETRIES, max_header)):
        if v is not None:
            h.remove_bytes(name)
    extra = _conditions(on_header, RETRY_ON_HTTP) | _conditions(grpc_header, GRPC_ON)
    if extra:
        rp = (RetryPolicy(retry_on=extra, num_retries=1, per_try_timeout=0.0,
                          base_interval=0.025, max_interval=0.25,
                          retriable_status_codes=frozenset())
              if rp is None else dataclasses.replace(rp, retry_on=rp.retry_on | extra))
    if rp is not None and max_header is not None and max_header.isdigit():
        rp = dataclasses.replace(rp, num_retries=int(max_header))
    return rp


def route_timeouts(route: Route) -> tuple[float, float]:
    """The route's own (timeout, per-try timeout): what a request without x-envoy-* control
    headers gets (the router's RoutePlan keeps them)."""
    rp = route.retry_policy
    return effective(global_timeout(route), rp.per_try_timeout if rp is not None else 0.0)


def global_timeout(route: Route) -> float:
    """The route's ``timeout``, except that a route with ``max_stream_duration`` has none
    (Envoy's "new timeouts": the stream's duration, hcm/duration.py, bounds it instead)."""
    return route.timeout if route.max_duration is None else 0.0


def effective(timeout: float, per_try: float) -> tuple[float, float]:
    """A per-try timeout not below the global one is dropped, as Envoy does."""
    if per_try and timeout and per_try >= timeout:
        per_try = 0.0
    return timeout, per_try


def grpc_timeout(route: Route, h: HeaderMap) -> float | None:
    """The global timeout the deprecated ``max_grpc_timeout`` gives a gRPC request (Envoy's
    ``finalTimeout``); None when it does not apply (unset, a route with
    ``max_stream_duration``, not a gRPC request)."""
    cap = route.max_grpc_timeout
    if cap is None or route.max_duration is not None or \
            not is_grpc_request(h.get_bytes(b"content-type"), h.path):
        return None
    ms = parse_timeout_ms(h.get_bytes(GRPC_TIMEOUT)) or 0
    offset = route.grpc_timeout_offset
    if offset is not None and offset < ms:  # (never down to 0, which is no timeout)
        ms -= offset
    if cap and (ms == 0 or ms > cap):
        ms = cap
    return ms / 1000


def grpc_timeouts(route: Route, h: HeaderMap, suppress_envoy_headers: bool
                  ) -> tuple[float, float] | None:
    """A request without x-envoy-* control headers on a route with ``max_grpc_timeout``:
    (timeout, per-try) and its timeout headers when it is gRPC, else None (the route's
    own)."""
    timeout = grpc_timeout(route, h)
    if timeout is None:
        return None
    rp = route.retry_policy
    timeout, per_try = effective(timeout, rp.per_try_timeout if rp is not None else 0.0)
    _timeout_headers(h, per_try or timeout, suppress_envoy_headers, True)
    return timeout, per_try


def _timeout_headers(h: HeaderMap, expected: float, suppress_envoy_headers: bool,
                     grpc: bool) -> None:
    """``x-envoy-expected-rq-timeout-ms`` and, under ``max_grpc_timeout``, ``grpc-timeout``:
    the time the upstream has (Envoy's ``setTimeoutHeaders``)."""
    if not expected:
        return
    if not suppress_envoy_headers:
        h.set_bytes(EXPECTED, b"%d" % int(expected * 1000))
    if grpc:
        h.set_bytes(GRPC_TIMEOUT, format_timeout(round(expected * 1000)))


class RequestRetry(NamedTuple):
    """What the route and the request's x-envoy-* headers make of retries and timeouts
    (``grpc``: the timeout is max_grpc_timeout's, ``grpc-timeout`` follows it)."""

    policy: RetryPolicy | None
    timeout: float
    per_try: float
    grpc: bool = False


def setup(route: Route, h: HeaderMap, respect_expected_rq_timeout: bool,
          suppress_envoy_headers: bool) -> RequestRetry:
    """The retry policy and timeouts of a request that carries x-envoy-* control headers (the
    router's RoutePlan has the answer for the others); removes the headers it used and sets
    ``x-envoy-expected-rq-timeout-ms``."""
    rp = _retry_policy(route, h)
    per_try = rp.per_try_timeout if rp is not None else 0.0
    grpc = grpc_timeout(route, h)
    timeout = global_timeout(route) if grpc is None else grpc
    used = None
    if respect_expected_rq_timeout:
        used = _ms(h.get_bytes(EXPECTED))
    if used is None:
        v = h.get_bytes(RQ_TIMEOUT)
        if v is not None:
            h.remove_bytes(RQ_TIMEOUT)
            used = _ms(v)
    if used is not None:
        timeout = used
    v = h.get_bytes(PER_TRY)
    if v is not None:
        h.remove_bytes(PER_TRY)
        pt = _ms(v)
        if pt is not None:
            per_try = pt
    timeout, per_try = effective(timeout, per_try)
    _timeout_headers(h, per_try or timeout, suppress_envoy_headers, grpc is not None)
    return RequestRetry(rp, timeout, per_try, grpc is not None)


def on_attempt(h: HeaderMap, attempts: int, count_attempts: bool, timeout: float,
               per_try: float, started: float, suppress_envoy_headers: bool,
               grpc: bool = False) -> None:
    """Before attempt ``attempts`` goes upstream (retries and counted attempts): the attempt
    count, and the time left as ``x-envoy-expected-rq-timeout-ms`` (and ``grpc-timeout`` when
    ``grpc``: max_grpc_timeout's) (``started``: the request's monotonic start)."""
    if count_attempts:
        h.set_bytes(ATTEMPT_COUNT, b"%d" % attempts)
    if attempts > 1 and timeout:
        left = max(0.0, timeout - (time.monotonic() - started))
        expected = per_try if per_try and per_try < left else left
        _timeout_headers(h, expected or 0.001, suppress_envoy_headers, grpc)
