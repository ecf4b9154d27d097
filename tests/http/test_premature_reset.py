"""The rapid-reset (CVE-2023-44487) counter, as Envoy 1.39.3 counts it."""

from __future__ import annotations

from envoi_http.hcm.premature_reset import PrematureResets


def test_250th_premature_reset_trips_with_defaults() -> None:
    p = PrematureResets()
    assert not any(p.stream_ended(0.001, False) for _ in range(249))
    assert p.stream_ended(0.001, False)
    assert not p.stream_ended(0.001, False)  # once


def test_answered_or_long_lived_streams_are_not_premature() -> None:
    p = PrematureResets()
    for _ in range(1000):
        assert not p.stream_ended(0.001, True)
        assert not p.stream_ended(2.0, False)  # lived over a second (truncated: 2 > 1)
    assert p.premature == 0


def test_lifetime_is_truncated_to_seconds() -> None:
    p = PrematureResets(limit=2)
    assert p.stream_ended(1.9, False)  # int(1.9) == 1: not over the 1 s minimum


def test_after_the_limit_half_of_all_streams() -> None:
    p = PrematureResets(limit=10)
    for _ in range(20):
        assert not p.stream_ended(0.1, True)
    for _ in range(19):
        assert not p.stream_ended(0.1, False)  # 19 of 39 ended streams
    assert p.stream_ended(0.1, False)  # 20 of 40: half
