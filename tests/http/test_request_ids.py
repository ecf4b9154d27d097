"""The HCM's generated x-request-id values are uuid4 strings, unique, as Envoy makes them."""

from __future__ import annotations

import uuid

from envoi_http.hcm.request_id import request_id as _request_id


def test_request_ids_are_distinct_version_4_uuids() -> None:
    made = [_request_id() for _ in range(1000)]  # crosses several batches of 256
    assert len(set(made)) == len(made)
    for rid in made:
        u = uuid.UUID(rid.decode())
        assert str(u) == rid.decode()
        assert u.version == 4 and u.variant == uuid.RFC_4122
