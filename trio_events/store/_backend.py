"""What both stores implement, and the one place that picks a store from ``--store``.

A store is named by a path (SQLite, the embedded default) or by a ``postgresql://`` (or
``postgres://``) URL. Writers (the collector, the agent's local sink) hold a :class:`Store`;
readers (``query``, ``history``) hold a :class:`Reader`, which runs SQL written once for both:
``?`` placeholders, standard SQL that SQLite and PostgreSQL read alike (explicit ``NULLS
FIRST``/``LAST``, no bare columns beside aggregates), and hands out new events in append order
for the history index to follow.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING, Any, Final, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trio_events.store._postgres import PostgresOptions
    from trio_events.store._sqlite import InsertResult

_SCHEMES: Final = ("postgresql://", "postgres://")


# What the history index reads of each new event: (event_type, session_name, timestamp_ns, json).
NewEvent = tuple[str, str, int | None, str]
NEW_EVENT_COLUMNS: Final = "event_type, session_name, timestamp_ns, json"


class StoreUnavailableError(Exception):
    """The store cannot be reached now (a database down, a timeout); retrying later may work.

    The collector answers 503 with ``Retry-After`` for it; the message is one sentence.
    """


class Store(Protocol):
    """A de-duplicating writer of event batches."""

    @property
    def path(self) -> str: ...

    async def insert_batch(self, events: Sequence[object]) -> InsertResult:
        """Store a batch's valid events in one transaction, refusing the invalid ones alone."""
        ...

    async def prune(self, older_than_ns: int) -> int:
        """Delete the sessions whose newest event arrived before ``older_than_ns``; how many."""
        ...

    async def aclose(self) -> None: ...


class Reader(Protocol):
    """Read-only access for queries and the history index (synchronous: run it in a thread)."""

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` written with ``?`` placeholders."""
        ...

    def read_new(self, limit: int) -> list[NewEvent]:
        """Up to ``limit`` events not handed out before, in append order."""
        ...

    def close(self) -> None: ...


def is_postgres(store: str | os.PathLike[str]) -> bool:
    return isinstance(store, str) and store.startswith(_SCHEMES)


def describe(store: str) -> str:
    """The store's name for messages: the path, or the URL without its password."""
    if not is_postgres(store):
        return store
    from trio_events.store._postgres import redact

    return redact(store)


async def open_store(store: str, options: PostgresOptions | None = None) -> Store:
    """Open (creating and migrating the schema of) the store named ``store``."""
    import trio

    if is_postgres(store):
        from trio_events.store._postgres import PostgresOptions, PostgresStore

        return await PostgresStore.open(store, options or PostgresOptions())
    from trio_events.store._sqlite import EventStore

    return await trio.to_thread.run_sync(EventStore, store)


def open_reader(store: str | os.PathLike[str]) -> Reader:
    """A read-only reader; FileNotFoundError for a missing SQLite file, ValueError for a bad one,
    StoreUnavailableError when PostgreSQL cannot be reached."""
    if is_postgres(store):
        from trio_events.store._postgres import PostgresReader

        return PostgresReader(os.fspath(store))
    return SqliteReader(store)


@final
class SqliteReader:
    """A read-only SQLite connection; new events follow the rowid."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from trio_events.store._sqlite import connect_read_only

        self._conn = connect_read_only(path)
        self._last_rowid = 0

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def read_new(self, limit: int) -> list[NewEvent]:
        rows = self._conn.execute(
            f"SELECT rowid, {NEW_EVENT_COLUMNS} FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (self._last_rowid, limit),
        ).fetchall()
        if rows:
            self._last_rowid = rows[-1][0]
        return [row[1:] for row in rows]

    def close(self) -> None:
        self._conn.close()


# The exceptions a reader raises for a store that is missing, unreadable or unreachable.
READ_ERRORS: Final = (FileNotFoundError, ValueError, sqlite3.Error, StoreUnavailableError)


def closing(reader: Reader) -> contextlib.closing[Reader]:
    return contextlib.closing(reader)
