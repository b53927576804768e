"""The receiving end of Ray's HTTP event export: POSTed JSON arrays of events into an EventStore.

Point Ray's aggregator at it (``RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR=http://host:
port/`` or KubeRay's ``.../v1/events``; every path is accepted) or our own agent's publisher.

A body is decoded (``Content-Encoding`` gzip or zstd, both bounded against decompression bombs)
and parsed; a body that is not a JSON array gets 400 (415 for an unknown encoding, 413 when too
large) and a one-sentence reason, and nothing of it is stored. The elements of an array are then
validated one by one: the valid ones are stored in one transaction and the invalid ones (no or
bad eventId, a timestamp past int64 nanoseconds such as year 2300, ...) are refused alone. The
answer is a plain 200 with ``{"inserted": n, "duplicates": m, "refused": [{"index": i,
"reason": r, "message": s, "eventId": e}, ...]}``: a sender that only looks at the status treats
the batch as delivered (retrying it would change nothing), and the collector counts the refused
events by reason in its statistics and its final line. Bad input therefore never gets a 5xx. A
database that cannot be written (locked, disk full) or reached (PostgreSQL down) gets 503 with
``Retry-After`` and one log line per outage. Duplicates are events whose id is already stored (a
sender's retry after a lost reply), which is how at-least-once delivery becomes exactly-once
storage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import zlib
from collections import Counter
from typing import Final, NoReturn, final

import attrs
import orjson
import trio
import zstandard

from trio_events._http_server import DEFAULT_MAX_BODY_BYTES, Request, Response, serve_http
from trio_events.store._backend import Store, StoreUnavailableError, open_store

logger = logging.getLogger("trio_events.store.collector")

# zstd can expand about 32768-fold (an RLE block: 4 bytes in, 128 KiB out), and its streaming
# decompressor has no output limit, so input is fed in pieces small enough that one piece cannot
# overshoot the remaining budget by more than about this much.
_ZSTD_MAX_RATIO: Final = 32 * 1024
_ZSTD_MIN_PIECE: Final = 64
# What a 503 asks the sender to wait: a locked SQLite file frees up quickly; an unreachable
# PostgreSQL server takes longer to come back.
RETRY_AFTER_LOCKED: Final = 1
RETRY_AFTER_UNREACHABLE: Final = 2


@final
@attrs.frozen
class CollectorConfig:
    """Where the collector listens and stores. ``max_body_bytes`` bounds a body both as received
    and after decompression. ``db_path`` is an SQLite path or a ``postgresql://`` URL;
    ``retention`` (seconds), when set, deletes sessions whose last event arrived longer ago."""

    db_path: str = attrs.field(converter=os.fspath)
    host: str | None = "127.0.0.1"
    port: int = 8084
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retention: float | None = None

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}.")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, not {self.max_body_bytes}.")
        if self.retention is not None and self.retention < 60:
            raise ValueError(f"retention must be at least 60 seconds, not {self.retention}.")


@final
@attrs.frozen
class CollectorStatistics:
    """Counts since the collector started: stored events, repeated events, refused requests
    (by the HTTP layer too: 408, 413, 431...), refused events by reason."""

    accepted: int
    duplicates: int
    rejected_requests: int
    accepted_requests: int
    refused_events: int = 0
    refused_by_reason: dict[str, int] = attrs.field(factory=dict)
    rejected_by_status: dict[int, int] = attrs.field(factory=dict)
    unavailable_requests: int = 0  #: answered 503: the store could not be written or reached


@final
class BadBodyError(Exception):
    """A body that cannot be stored; ``str()`` is the one-sentence reason sent back."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@final
class Collector:
    """Receives POSTed event batches and stores them; ``GET /healthz`` answers 200."""

    def __init__(self, config: CollectorConfig) -> None:
        self._config = config
        self._store: Store | None = None
        self.pruned_sessions = 0
        self._running = False
        self._accepted = 0
        self._duplicates = 0
        self._accepted_requests = 0
        self._refused: Counter[str] = Counter()
        self._rejected: Counter[int] = Counter()
        self._unavailable = 0
        self._warned_unavailable = False

    @property
    def config(self) -> CollectorConfig:
        return self._config

    def statistics(self) -> CollectorStatistics:
        return CollectorStatistics(
            accepted=self._accepted,
            duplicates=self._duplicates,
            rejected_requests=self._rejected.total(),
            accepted_requests=self._accepted_requests,
            refused_events=self._refused.total(),
            refused_by_reason=dict(self._refused),
            rejected_by_status=dict(self._rejected),
            unavailable_requests=self._unavailable,
        )

    def count_rejected(self, status: int) -> None:
        """Count a request refused with ``status``, here or by the HTTP layer (408, 413...)."""
        self._rejected[status] += 1

    async def run(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Open the store, serve until cancelled, close the store; ``started()`` gets the port."""
        if self._running:
            raise RuntimeError("This Collector is already running; create one per server.")
        self._running = True
        config = self._config
        self._store = await open_store(config.db_path)
        try:
            async with trio.open_nursery() as nursery:
                if config.retention is not None:
                    nursery.start_soon(self._prune_forever, self._store, config.retention)
                await serve_http(
                    self.handle,
                    config.host,
                    config.port,
                    task_status=task_status,
                    max_body_bytes=config.max_body_bytes,
                    on_refusal=self.count_rejected,
                )
        finally:
            store, self._store = self._store, None
            # Closing waits for an in-flight insert to finish; that is bounded, so it is shielded.
            with trio.CancelScope(shield=True):
                await store.aclose()

    async def _prune_forever(self, store: Store, retention: float) -> NoReturn:
        """Delete sessions older than ``retention`` now and then (every collector may; the
        store makes concurrent pruning safe). An unreachable store is tried again next time."""
        while True:
            cutoff = time.time_ns() - int(retention * 1e9)
            # An unreachable store is tried again next round; ingestion answers 503 meanwhile.
            with contextlib.suppress(StoreUnavailableError):
                self.pruned_sessions += await store.prune(cutoff)
            await trio.sleep(min(retention / 10, 3600.0))

    async def handle(self, request: Request) -> Response:
        """Answer one request (public so it can be mounted in another server)."""
        if request.method == "POST":
            return await self._ingest(request)
        if request.method in ("GET", "HEAD") and request.path == "/healthz":
            return Response.text(200, "ok")
        refusal = Response.text(405, "Send events with POST.")
        return attrs.evolve(refusal, headers=(*refusal.headers, ("allow", "POST")))

    async def _ingest(self, request: Request) -> Response:
        store = self._store
        if store is None:
            return Response.text(503, "The collector is not running.")
        try:
            # Decompressing and parsing a large body takes milliseconds: keep it off the loop.
            events = await trio.to_thread.run_sync(
                parse_body,
                request.body,
                request.header("content-encoding"),
                self._config.max_body_bytes,
            )
        except BadBodyError as exc:
            self.count_rejected(exc.status)
            return Response.text(exc.status, str(exc))
        try:
            result = await store.insert_batch(events)
        except sqlite3.OperationalError as exc:  # locked by another writer, disk full...
            return self._unavailable_answer(store.path, exc, RETRY_AFTER_LOCKED)
        except StoreUnavailableError as exc:  # PostgreSQL down or unreachable
            # Not stored, not acknowledged: the sender keeps the batch and retries after this.
            return self._unavailable_answer(store.path, exc, RETRY_AFTER_UNREACHABLE)
        if self._warned_unavailable:
            self._warned_unavailable = False
            logger.warning("The event store %s accepts writes again.", store.path)
        self._accepted += result.inserted
        self._duplicates += result.duplicates
        self._accepted_requests += 1
        refused = []
        for refusal in result.refused:
            self._refused[refusal.reason] += 1
            refused.append(
                {
                    "index": refusal.index,
                    "reason": refusal.reason,
                    "message": refusal.message,
                    "eventId": refusal.event_id,
                }
            )
        if refused:
            first = result.refused[0]
            logger.warning(
                "Refused %d of %d events of a request (%s); the first: %s",
                len(refused),
                len(events),
                ", ".join(f"{k}={v}" for k, v in sorted(result.refused_by_reason().items())),
                first.message,
            )
        body = {"inserted": result.inserted, "duplicates": result.duplicates, "refused": refused}
        return Response.json(200, orjson.dumps(body))

    def _unavailable_answer(self, path: str, exc: Exception, retry_after: int) -> Response:
        # One line per outage, not a traceback per request: the sender retries on 503.
        self._unavailable += 1
        if not self._warned_unavailable:
            self._warned_unavailable = True
            logger.error(
                "The event store %s cannot be written (%s); answering 503 until it can.", path, exc
            )
        refusal = Response.text(503, f"The event store cannot be written now ({exc}); retry.")
        return attrs.evolve(refusal, headers=(*refusal.headers, ("retry-after", str(retry_after))))


def parse_body(body: bytes, content_encoding: str | None, limit: int) -> list[object]:
    """Decode and parse a POST body into its list of elements, or raise BadBodyError.

    The elements themselves are validated by the store, before it writes anything.
    """
    decoded = decode_content(body, content_encoding, limit)
    try:
        value = orjson.loads(decoded)
    except orjson.JSONDecodeError as exc:
        raise BadBodyError(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(value, list):
        raise BadBodyError(f"The body must be a JSON array of events, not a {_json_kind(value)}.")
    return value


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with its ``Content-Encoding`` undone, refusing to produce more than ``limit``."""
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    # Encodings are listed in the order they were applied, so they are undone in reverse.
    for encoding in reversed(encodings):
        if encoding in ("gzip", "x-gzip"):
            body = _gunzip(body, limit)
        elif encoding == "zstd":
            body = _unzstd(body, limit)
        elif encoding != "identity":
            raise BadBodyError(
                f"Content-Encoding {encoding!r} is not supported; use gzip, zstd or none.", 415
            )
    return body


def _too_large(limit: int) -> BadBodyError:
    return BadBodyError(f"The decompressed body exceeds the limit of {limit} bytes.", 413)


def _gunzip(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while True:  # one iteration per gzip member; concatenated members are valid gzip
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadBodyError(f"The gzip body is corrupt: {exc}.") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not inflater.eof:
            if inflater.unconsumed_tail:  # stopped by the output limit with input left
                raise _too_large(limit)
            raise BadBodyError("The gzip body is truncated.")
        data = inflater.unused_data
        if not data:
            return bytes(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    if not data:
        raise BadBodyError("The zstd body is truncated.")
    out = bytearray()
    view = memoryview(data)
    decompressor = zstandard.ZstdDecompressor()
    pending = b""  # input given to the previous frame's decompressor that lies past its end
    while pending or view:  # one iteration per zstd frame
        inflater = decompressor.decompressobj()
        try:
            while not inflater.eof and (pending or view):
                if pending:
                    chunk, pending = pending, b""
                else:
                    piece = max(_ZSTD_MIN_PIECE, (limit + 1 - len(out)) // _ZSTD_MAX_RATIO)
                    chunk, view = view[:piece].tobytes(), view[piece:]
                out += inflater.decompress(chunk)
                if len(out) > limit:
                    raise _too_large(limit)
        except zstandard.ZstdError as exc:
            raise BadBodyError(f"The zstd body is corrupt: {exc}.") from None
        if not inflater.eof:
            raise BadBodyError("The zstd body is truncated.")
        pending = inflater.unused_data
    return bytes(out)


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "JSON object"
    if isinstance(value, str):
        return "JSON string"
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "JSON boolean"
    return "JSON number"
