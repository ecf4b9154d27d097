"""``envoy.filters.http.dynamo``: DynamoDB stats from the requests and responses passing by.

Envoy's contrib filter holds both messages whole (``StopIterationAndBuffer``) to parse them;
over the buffer limit that fails the request (413) or the response (500). This one never holds
anything: every method returns ``CONTINUE``, the bytes go on as they arrive, and the filter keeps
a reference to each chunk (:class:`~envoi_dynamodb.sniffer.BodyCopy`) until the message ends,
then reads its copy. A message over the stream's buffer limit is not sniffed (counted
``req_body_too_large`` / ``resp_body_too_large``) and passes untouched. No header or body byte is
ever changed, so the ``x-amz-crc32`` DynamoDB puts on a response still matches what boto3 gets.

When the response ends (Envoy's ``onEncodeComplete``) the filter charges, with the
milliseconds since the request headers:

* ``operation.<op>.upstream_rq_total*`` / ``upstream_rq_time*`` (or ``operation_missing``),
* ``table.<table>.*`` the same (or ``table_missing`` / ``multiple_tables``),

then reads the response body: partition capacity, the 4xx error type
(``error.<table|no_table>.<type>`` or ``empty_response_body``), and for batch calls the tables
left in ``UnprocessedKeys`` (and ``UnprocessedItems``). A stream that never completes (reset,
client gone mid-body) charges nothing, as in Envoy.
"""

from __future__ import annotations

import time
from typing import Any

from envoi.http import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HeaderMap,
    StreamFilter,
)

from envoi_dynamodb.operations import BATCH_OPERATIONS
from envoi_dynamodb.sniffer import (
    NO_TABLE,
    BodyCopy,
    InvalidBody,
    TableDescriptor,
    TooLarge,
    Unreadable,
    decode_content,
    parse_operation,
    read_response,
    request_table,
    response_worth_reading,
)
from envoi_dynamodb.stats import DROPPED, DynamoStats

_CONTINUE = FilterHeadersStatus.CONTINUE
_DATA_CONTINUE = FilterDataStatus.CONTINUE
_TRAILERS_CONTINUE = FilterTrailersStatus.CONTINUE
RUNTIME_ENABLED = "dynamodb.filter_enabled"


class DynamoShared:
    """Per filter config: the stats and the runtime every stream of that config uses."""

    __slots__ = ("runtime", "stats", "tap")

    def __init__(self, stats: DynamoStats, runtime: Any, tap: Any = None) -> None:
        self.stats = stats
        self.runtime = runtime
        #: The live tap (``envoi.tap.TapPoint``): operations, tables and statuses when someone
        #: listens to ``/tap``.
        self.tap = tap if tap is not None else _NO_TAP


class _NoTap:
    active = False


_NO_TAP: Any = _NoTap()


def _too_large(headers: HeaderMap, limit: int) -> bool:
    length = headers.get_bytes(b"content-length")
    return length is not None and length.isdigit() and int(length) > limit


def _coding(headers: HeaderMap) -> str | None:
    coding = headers.get_bytes(b"content-encoding")
    return coding.decode("latin-1") if coding else None


class DynamoFilter(StreamFilter):
    """One per stream (built by the factory's callback)."""

    def __init__(self, shared: DynamoShared) -> None:
        self.shared = shared
        # Envoy decides once per stream, when the filter is made.
        self.enabled = shared.runtime.feature_enabled(RUNTIME_ENABLED, 100)
        self.start = 0.0
        self.operation = ""
        self.table: TableDescriptor = NO_TABLE
        self.table_known = True  # False: the request body was not read (too large, unreadable)
        self.request: BodyCopy | None = None
        self.request_coding: str | None = None
        self.response: BodyCopy | None = None
        self.response_coding: str | None = None
        self.status = 0
        self.done = False

    # -- request ---------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if not self.enabled:
            return _CONTINUE
        self.start = time.monotonic()
        target = headers.get_bytes(b"x-amz-target")
        self.operation = parse_operation(target.decode("latin-1")) if target else ""
        if end_stream:
            return _CONTINUE  # no body: no table
        limit = self.decoder_callbacks.buffer_limit
        if _too_large(headers, limit):
            self._request_not_read("req_body_too_large")
        else:
            self.request = BodyCopy(limit)
            self.request_coding = _coding(headers)
        return _CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        copy = self.request
        if copy is not None:
            if not copy.add(data):
                self.request = None
                self._request_not_read("req_body_too_large")
            elif end_stream:
                self._request_complete()
        return _DATA_CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        if self.request is not None:
            self._request_complete()
        return _TRAILERS_CONTINUE

    def _request_not_read(self, stat: str) -> None:
        self.table_known = False
        self.shared.stats.inc(stat)

    def _request_complete(self) -> None:
        copy, self.request = self.request, None
        assert copy is not None
        body = copy.take()
        if self.request_coding:
            try:
                body = decode_content(body, self.request_coding, copy.limit)
            except TooLarge:
                self._request_not_read("req_body_too_large")
                return
            except Unreadable:
                self._request_not_read("req_body_unreadable")
                return
        try:
            self.table = request_table(self.operation, body)
        except InvalidBody:
            self.shared.stats.inc("invalid_req_body")

    # -- response --------------------------------------------------------------------------

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if not self.enabled or self.done:
            return _CONTINUE
        self.status = headers.status
        if end_stream:
            self._response_complete()
            return _CONTINUE
        limit = self.encoder_callbacks.buffer_limit
        if _too_large(headers, limit):
            self._response_not_read()
        else:
            self.response = BodyCopy(limit)
            self.response_coding = _coding(headers)
        return _CONTINUE

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        if not self.enabled or self.done:
            return _DATA_CONTINUE
        copy = self.response
        if copy is not None and not copy.add(data):
            self.response = None
            self._response_not_read()
        if end_stream:
            self._response_complete()
        return _DATA_CONTINUE

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        if self.enabled and not self.done:
            self._response_complete()
        return _TRAILERS_CONTINUE

    def _response_not_read(self) -> None:
        """Over the limit: counted when the body could have held something counted (not a 2xx
        answer to a non-batch call, whose only fact would be the partition capacity DynamoDB
        does not send: a big Query page is normal, not a loss)."""
        if not 200 <= self.status < 300 or self.operation in BATCH_OPERATIONS:
            self.shared.stats.inc("resp_body_too_large")

    def _response_complete(self) -> None:
        error_type = self._charge_response()
        tap = self.shared.tap
        if tap.active:
            cb = self.encoder_callbacks
            fields: dict[str, Any] = {
                "stream": cb.stream_id, "operation": self.operation,
                "table": self.table.table_name if self.table_known else "",
                "status": self.status,
                "duration_ms": round((time.monotonic() - self.start) * 1000, 3)}
            if error_type:
                fields["error_type"] = error_type
            tap.publish("dynamodb.operation", cb.connection.id, fields)

    def _charge_response(self) -> str | None:
        """Charge the stats of a complete response; the error type its body names, if any."""
        self.done = True
        self.request = None  # a response before the request's end: stop reading it
        stats = self.shared.stats
        status = self.status
        ms = int((time.monotonic() - self.start) * 1000)

        operation = stats.admit_operation(self.operation) if self.operation else ""
        if not operation:
            stats.inc("operation_missing")
        elif operation != DROPPED:
            stats.charge("operation", operation, status, ms)

        table = ""
        if self.table_known:
            name = self.table.table_name
            if name:
                table = stats.admit_table(name)
                if table != DROPPED:
                    stats.charge("table", table, status, ms)
            elif self.table.is_single_table:
                stats.inc("table_missing")
            else:
                stats.inc("multiple_tables")

        copy, self.response = self.response, None
        if copy is None:
            return None
        body = copy.take()
        if not body:
            return None
        if self.response_coding:
            try:
                body = decode_content(body, self.response_coding, copy.limit)
            except TooLarge:
                stats.inc("resp_body_too_large")
                return None
            except Unreadable:
                stats.inc("resp_body_unreadable")
                return None
        named_table = table if table != DROPPED else ""
        named_op = operation if operation != DROPPED else ""
        if not response_worth_reading(named_op, named_table, status, body):
            return None
        try:
            facts = read_response(named_op, named_table, status, body)
        except InvalidBody:
            stats.inc("invalid_resp_body")
            return None
        for partition_id, units in facts.partitions:
            stats.partition_capacity(named_table, named_op, partition_id, units)
        if facts.error_type is not None:
            if facts.error_type:
                stats.inc(f"error.{named_table or 'no_table'}.{facts.error_type}")
            else:
                stats.inc("empty_response_body")
        for stat, tables in (("BatchFailureUnprocessedKeys", facts.unprocessed_keys),
                             ("BatchFailureUnprocessedItems", facts.unprocessed_items)):
            for name in tables:
                admitted = stats.admit_table(name)
                if admitted != DROPPED:
                    stats.inc(f"error.{admitted}.{stat}")
        return facts.error_type

    def on_destroy(self) -> None:
        self.request = self.response = None
