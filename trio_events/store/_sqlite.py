"""A durable, de-duplicating store of Ray events: SQLite in WAL mode, one row per event id.

Upstream delivery is at-least-once (a sender retries a batch whose reply it did not see), so the
event id is the primary key and rows are written with ``INSERT OR IGNORE``: a repeated event is
counted as a duplicate and stored once. One call of :meth:`EventStore.insert_batch` is one
transaction. Every value the store derives from an event is validated first (eventId, eventType,
timestamps within int64 nanoseconds, attempt numbers within int64): an event that fails is
refused alone, named with its index, eventId and reason, and the rest of the batch is stored.

Besides the raw JSON each row keeps the columns people filter and sort by (type, source, time as
text and as integer nanoseconds, session, node, and the entity the event is about); every state
transition of a lifecycle event also gets a row in ``transitions`` so "which tasks failed" and
"what state is it in now" are index lookups rather than JSON scans.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Final, Self, final

import attrs
import orjson
import trio

from trio_events.store._ray_json import (
    JsonObject,
    children,
    decode_b64,
    entity_of,
    error_info,
    id_hex,
    text,
    timestamp_ns,
)

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    event_id       BLOB PRIMARY KEY,  -- the decoded bytes, so any base64 spelling dedups
    event_type     TEXT NOT NULL,
    source_type    TEXT NOT NULL,
    severity       TEXT NOT NULL,
    timestamp      TEXT NOT NULL,     -- RFC 3339 exactly as received
    timestamp_ns   INTEGER,           -- NULL when absent or unparseable
    session_name   TEXT NOT NULL,
    node_id        TEXT NOT NULL,     -- hex
    entity_kind    TEXT,              -- task, actor, job, node, worker, placement_group, ...
    entity_id      TEXT,              -- hex (the submission id as is)
    entity_attempt INTEGER,           -- task attempt; NULL for other kinds
    entity_name    TEXT NOT NULL,     -- task name, actor name, node name... when the event has one
    error_type     TEXT NOT NULL,     -- from a task lifecycle event's rayErrorInfo
    error_message  TEXT NOT NULL,
    received_ns    INTEGER NOT NULL,
    json           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_type ON events (event_type);
CREATE INDEX IF NOT EXISTS events_source ON events (source_type);
CREATE INDEX IF NOT EXISTS events_time ON events (timestamp_ns);
CREATE INDEX IF NOT EXISTS events_session ON events (session_name);
CREATE INDEX IF NOT EXISTS events_node ON events (node_id);
CREATE INDEX IF NOT EXISTS events_entity ON events (entity_kind, entity_id, entity_attempt);
CREATE TABLE IF NOT EXISTS transitions (
    event_id       BLOB NOT NULL,
    seq            INTEGER NOT NULL,  -- position in the event's stateTransitions
    entity_kind    TEXT NOT NULL,
    entity_id      TEXT NOT NULL,
    entity_attempt INTEGER,
    state          TEXT NOT NULL,
    timestamp      TEXT NOT NULL,
    timestamp_ns   INTEGER,
    PRIMARY KEY (event_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transitions_state ON transitions (entity_kind, state);
CREATE INDEX IF NOT EXISTS transitions_entity
    ON transitions (entity_kind, entity_id, entity_attempt, timestamp_ns);
"""

_INSERT_EVENT: Final = "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_TRANSITION: Final = "INSERT OR IGNORE INTO transitions VALUES (?,?,?,?,?,?,?,?)"

_EventRow = tuple[object, ...]
_TransitionRow = tuple[object, ...]


# SQLite integers are signed 64-bit; a value outside would raise OverflowError at insert time.
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# Ray's ids are 16 to 28 bytes; anything this long is not an id and is refused.
MAX_EVENT_ID_BYTES: Final = 256


@final
class InvalidEventError(ValueError):
    """An element of a batch cannot be stored; the message is one sentence naming it.

    ``reason`` is a short stable code for counts and metric labels (``invalid_event_id``...).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@final
@attrs.frozen
class RefusedEvent:
    """One element of a batch the store refused (the rest of the batch is stored)."""

    index: int  #: position in the batch
    reason: str  #: short code: not_an_object, missing_event_id, timestamp_out_of_range...
    message: str  #: one sentence naming the event and what is wrong with it
    event_id: str = ""  #: the eventId as it was sent, when it had one


@final
@attrs.frozen
class InsertResult:
    """What one :meth:`EventStore.insert_batch` stored, ignored as repeated, and refused."""

    inserted: int
    duplicates: int
    refused: tuple[RefusedEvent, ...] = ()

    def refused_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for refusal in self.refused:
            counts[refusal.reason] = counts.get(refusal.reason, 0) + 1
        return counts


def _checked_ns(index: int, where: str, value: str) -> int | None:
    ns = timestamp_ns(value)
    if ns is not None and not _INT64_MIN <= ns <= _INT64_MAX:
        raise InvalidEventError(
            f"Event {index} has {where} {value!r}, outside the range of int64 nanoseconds "
            "since 1970 (years 1677 to 2262).",
            "timestamp_out_of_range",
        )
    return ns


def _rows(index: int, event: object, now_ns: int) -> tuple[_EventRow, list[_TransitionRow]]:
    if not isinstance(event, Mapping):
        raise InvalidEventError(f"Event {index} is not a JSON object.", "not_an_object")
    obj: JsonObject = event
    event_id_text = text(obj, "event_id")
    if not event_id_text:
        raise InvalidEventError(f"Event {index} has no eventId (or event_id).", "missing_event_id")
    event_id = decode_b64(event_id_text, unpadded=True)
    if not event_id:
        raise InvalidEventError(
            f"Event {index} has an eventId that is not non-empty base64.", "invalid_event_id"
        )
    if len(event_id) > MAX_EVENT_ID_BYTES:
        raise InvalidEventError(
            f"Event {index} has an eventId of {len(event_id)} bytes, more than "
            f"{MAX_EVENT_ID_BYTES}.",
            "invalid_event_id",
        )
    event_type = text(obj, "event_type")
    if not event_type:
        raise InvalidEventError(
            f"Event {index} has no eventType (or event_type).", "missing_event_type"
        )
    stamp = text(obj, "timestamp")
    stamp_ns = _checked_ns(index, "timestamp", stamp)
    entity = entity_of(obj, event_type)
    kind = entity_id = None
    attempt = None
    name = error_type = error_message = ""
    transitions: list[_TransitionRow] = []
    if entity is not None:
        kind, entity_id, attempt, name = entity.kind, entity.id, entity.attempt, entity.name
        if attempt is not None and not _INT64_MIN <= attempt <= _INT64_MAX:
            raise InvalidEventError(
                f"Event {index} has an attempt number ({attempt}) outside the range of int64.",
                "integer_out_of_range",
            )
        if entity.spec.payload == "task_lifecycle_event":
            error_type, error_message = error_info(entity.payload)
        for seq, transition in enumerate(children(entity.payload, "state_transitions")):
            when = text(transition, "timestamp")
            state = text(transition, "state")
            when_ns = _checked_ns(index, f"a state transition ({seq}) at", when)
            transitions.append((event_id, seq, kind, entity_id, attempt, state, when, when_ns))
    try:
        json_text = orjson.dumps(event).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (255 levels)
        raise InvalidEventError(f"Event {index} cannot be stored: {exc}.", "unencodable") from None
    event_row = (
        event_id, event_type, text(obj, "source_type"), text(obj, "severity"), stamp,
        stamp_ns, text(obj, "session_name"), id_hex(text(obj, "node_id")),
        kind, entity_id, attempt, name, error_type, error_message, now_ns, json_text,
    )  # fmt: skip
    return event_row, transitions


def build_rows(
    events: Sequence[object],
) -> tuple[list[_EventRow], list[list[_TransitionRow]], list[RefusedEvent]]:
    """Validate every element and turn the good ones into rows; the bad ones are refused alone.

    Never raises for an element: each refusal names the element's index, its eventId when it
    has one, and the reason.
    """
    now_ns = time.time_ns()
    event_rows: list[_EventRow] = []
    transition_rows: list[list[_TransitionRow]] = []  # per stored event, in its order
    refused: list[RefusedEvent] = []
    for index, event in enumerate(events):
        try:
            row, transitions = _rows(index, event, now_ns)
        except InvalidEventError as exc:
            sent_id = text(event, "event_id") if isinstance(event, Mapping) else ""
            refused.append(RefusedEvent(index, exc.reason, str(exc), sent_id[:100]))
            continue
        event_rows.append(row)
        transition_rows.append(transitions)
    return event_rows, transition_rows, refused


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to an existing store; raises FileNotFoundError if there is none.

    Opening with ``mode=ro`` means a query never creates an empty database at a mistyped path.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"There is no event store at {os.fspath(path)!r}.")
    conn = sqlite3.connect(pathlib.Path(path).absolute().as_uri() + "?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError:
        conn.close()
        raise ValueError(f"{os.fspath(path)!r} is not an SQLite database.") from None
    if not {"events", "transitions"} <= tables:
        conn.close()
        raise ValueError(f"{os.fspath(path)!r} is not a trio-events event store.")
    return conn


@final
class EventStore:
    """Ray events in an SQLite file, written one transaction per batch.

    Threading: the store owns one connection, opened with ``check_same_thread=False`` and used by
    one thread at a time. The async methods run in trio's worker threads through a per-store
    ``CapacityLimiter(1)``; ``trio.to_thread.run_sync`` does not abandon a thread on cancellation,
    so the limiter stays held until SQLite returns, and two calls can never overlap even when the
    caller is cancelled. (A thread that owns the connection for its whole life would need its own
    queue and shutdown protocol; the limiter gives the same guarantee with trio's pool.) The
    ``*_sync`` methods are for code that is not on an event loop (tests, tools); do not mix them
    with concurrent async calls.

    Durability: WAL with ``synchronous=FULL``, so a batch whose POST was answered 200 survives a
    power loss, not only a crash; it costs one fsync per batch, not per event.

    Construction opens (or creates) the file and its schema, which blocks briefly; from trio, use
    ``await trio.to_thread.run_sync(EventStore, path)``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            # A concurrent reader (the query command) can briefly hold a lock during checkpoints.
            self._conn.execute("PRAGMA busy_timeout=5000")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"The event store {self._path!r} has schema version {version}, newer than "
                    f"this trio-events understands ({SCHEMA_VERSION}); upgrade trio-events."
                )
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def insert_batch_sync(self, events: Sequence[object]) -> InsertResult:
        """Store a batch's valid events in one transaction; the invalid ones are refused alone.

        An element that cannot be stored (no or bad eventId, a timestamp outside the int64
        nanosecond range, ...) is reported in :attr:`InsertResult.refused` and the others are
        stored. Raises only when the database itself fails (sqlite3.Error), then nothing is
        stored.
        """
        if self._closed:
            raise RuntimeError("This EventStore is closed; open a new one to insert events.")
        event_rows, transition_rows, refused = build_rows(events)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(_INSERT_EVENT, event_rows)
            inserted = conn.total_changes - before
            # A duplicate event's transitions are already stored under the same (event_id, seq)
            # keys, so OR IGNORE skips them too; one executemany keeps the loop in C.
            conn.executemany(_INSERT_TRANSITION, itertools.chain.from_iterable(transition_rows))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return InsertResult(inserted, len(event_rows) - inserted, tuple(refused))

    async def insert_batch(self, events: Sequence[object]) -> InsertResult:
        """:meth:`insert_batch_sync` in a worker thread; see the class docstring for why."""
        return await trio.to_thread.run_sync(self.insert_batch_sync, events, limiter=self._limiter)

    def prune_sync(self, older_than_ns: int) -> int:
        """Delete the sessions whose newest event arrived before ``older_than_ns``; how many."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = [
                row[0]
                for row in conn.execute(
                    "SELECT session_name FROM events GROUP BY session_name "
                    "HAVING max(received_ns) < ?",
                    (older_than_ns,),
                )
            ]
            for name in old:
                conn.execute(
                    "DELETE FROM transitions WHERE event_id IN "
                    "(SELECT event_id FROM events WHERE session_name = ?)",
                    (name,),
                )
                conn.execute("DELETE FROM events WHERE session_name = ?", (name,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(old)

    async def prune(self, older_than_ns: int) -> int:
        """:meth:`prune_sync` in a worker thread, one call at a time with inserts."""
        return await trio.to_thread.run_sync(self.prune_sync, older_than_ns, limiter=self._limiter)

    def count_sync(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent). Call only when no async call is in flight."""
        if not self._closed:
            self._closed = True
            self._conn.close()

    async def aclose(self) -> None:
        """Close after any in-flight call: the close waits its turn on the same limiter."""
        await trio.to_thread.run_sync(self.close, limiter=self._limiter)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
