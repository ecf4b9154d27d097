"""hcm/duration.py on a fake stream: which deadline a stream gets from the HCM's and the route's
max_stream_duration and its grpc-timeout header, the header the upstream gets, and the answer
when the deadline passes (the end-to-end comparison with Envoy is test_grpc_timeout_e2e.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from envoi.http.headers import HeaderMap
from envoi_http.hcm import duration
from envoi_http.router.config import MaxStreamDuration


class FakeStream:
    def __init__(self, grpc_timeout: bytes | None = None, is_grpc: bool = True) -> None:
        raw = [(b"content-type", b"application/grpc")]
        if grpc_timeout is not None:
            raw.append((b"grpc-timeout", grpc_timeout))
        self.request_headers = HeaderMap(raw, method=b"POST", path=b"/s/m")
        self.deadlines: dict[Callable[[], None], float] | None = None
        self.is_grpc = is_grpc
        self.start = time.monotonic()
        self.request_complete = True
        self.replies: list[tuple[Any, ...]] = []
        self.hcm = SimpleNamespace(stats=SimpleNamespace(
            downstream_rq_max_duration_reached=SimpleNamespace(value=0)))

    def start_deadline(self, delay: float, callback: Callable[[], None]) -> None:
        self.deadlines = {**(self.deadlines or {}), callback: delay}

    def cancel_deadline(self, callback: Callable[[], None]) -> None:
        if self.deadlines:
            self.deadlines.pop(callback, None)

    def max_duration_reached(self) -> None:
        duration.reached(self)

    def send_local_reply(self, status: int, body: bytes | str = b"", headers: Any = None,
                         details: str = "", modify_headers: Any = None, flag: str = "",
                         grpc_status: int | None = None) -> None:
        self.replies.append((status, body, details, grpc_status))

    @property
    def delay(self) -> float | None:
        return (self.deadlines or {}).get(self.max_duration_reached)


def _route(msd: MaxStreamDuration | None, kind: str = "cluster") -> Any:
    return SimpleNamespace(kind=kind, max_duration=msd)


GRPC_MAX = MaxStreamDuration(grpc_timeout_header_max=2000, grpc_timeout_header_offset=100)


@pytest.mark.parametrize("header,route,hcm,delay,upstream", [
    (b"300m", GRPC_MAX, 0, 0.2, b"200m"),                      # less the offset
    (b"1H", GRPC_MAX, 0, 1.9, b"1900m"),                       # capped, then the offset
    (b"100m", GRPC_MAX, 0, 0.0, b"0m"),                        # offset not below it: 0
    (b"0m", GRPC_MAX, 0, 0.0, b"0m"),
    (b"1H", MaxStreamDuration(grpc_timeout_header_max=0), 0, 3600.0, b"3600000m"),  # 0: no cap
    (b"5S", MaxStreamDuration(grpc_timeout_header_max=9000), 0, 5.0, b"5000m"),
    (b"300x", GRPC_MAX, 0, None, b"300x"),                     # ignored, passed on
    (b"300x", GRPC_MAX, 700, 0.7, b"700m"),                    # the HCM's
    (None, MaxStreamDuration(max_stream_duration=400), 700, 0.4, b"400m"),  # the route's
    (b"5S", MaxStreamDuration(max_stream_duration=400), 0, 0.4, b"400m"),   # no header max
    (None, MaxStreamDuration(max_stream_duration=0), 700, None, None),  # 0s: none, not the HCM's
    (b"5S", None, 700, 0.7, b"5S"),                            # old-style route: not rewritten
    (b"5S", None, 0, None, b"5S"),
])
def test_the_deadline_and_the_upstream_header(header: bytes | None, route: Any, hcm: int,
                                              delay: float | None,
                                              upstream: bytes | None) -> None:
    s = FakeStream(header)
    duration.start(s, _route(route), hcm)  # type: ignore[arg-type]
    if delay is None:
        assert s.delay is None
    else:
        assert s.delay is not None and delay - 0.05 <= s.delay <= delay
    assert s.request_headers.get_bytes(b"grpc-timeout") == upstream


def test_time_already_spent_is_taken_off() -> None:
    s = FakeStream(b"1S")
    s.start -= 0.4
    duration.refresh(s, _route(GRPC_MAX), 0)  # type: ignore[arg-type]
    assert s.delay is not None and 0.45 <= s.delay <= 0.5
    assert s.request_headers.get_bytes(b"grpc-timeout") == b"900m"  # (before the time spent)
    s.start -= 5
    duration.refresh(s, _route(GRPC_MAX), 0)  # type: ignore[arg-type]
    assert s.delay == 0.0


def test_no_route_or_a_direct_response_keeps_the_hcms() -> None:
    for route in (None, _route(GRPC_MAX, kind="direct")):
        s = FakeStream(b"300m")
        duration.start(s, route, 700)  # type: ignore[arg-type]
        assert s.delay == 0.7 and s.request_headers.get_bytes(b"grpc-timeout") == b"300m"


def test_a_new_route_without_a_duration_cancels_it_and_drops_the_header() -> None:
    s = FakeStream(b"300m")
    duration.start(s, _route(GRPC_MAX), 0)  # type: ignore[arg-type]
    assert s.delay is not None
    duration.refresh(s, _route(MaxStreamDuration(max_stream_duration=0)), 0)  # type: ignore[arg-type]
    assert s.delay is None and s.request_headers.get_bytes(b"grpc-timeout") is None


def test_non_grpc_requests_keep_their_headers() -> None:
    s = FakeStream(b"300m", is_grpc=False)
    duration.start(s, _route(GRPC_MAX), 0)  # type: ignore[arg-type]
    assert s.delay is not None and 0.15 <= s.delay <= 0.2
    assert s.request_headers.get_bytes(b"grpc-timeout") == b"300m"


@pytest.mark.parametrize("complete,status", [(True, 504), (False, 408)])
def test_reached(complete: bool, status: int) -> None:
    s = FakeStream(b"300m")
    s.request_complete = complete
    duration.reached(s)  # type: ignore[arg-type]
    assert s.hcm.stats.downstream_rq_max_duration_reached.value == 1
    assert s.replies == [(status, b"downstream duration timeout", "max_duration_timeout", 4)]
