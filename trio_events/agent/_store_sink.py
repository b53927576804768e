"""A publisher destination that writes into the local SQLite store instead of POSTing.

``trio-events agent`` with no export address uses it, so a fresh install keeps (and can query)
what it receives instead of discarding it as Ray does. It speaks the same ``PublishClient``
protocol as the HTTP client, so it gets the publisher's filtering, retries, metrics and drain.
"""

from __future__ import annotations

import sqlite3
from typing import final

import orjson

from trio_events.agent._sink import Outcome, PublishOutcome
from trio_events.store._sqlite import EventStore, InvalidEventError

_OK = PublishOutcome(Outcome.SUCCESS, "stored")


@final
class StorePublishClient:
    """Stores each published JSON array body in an :class:`EventStore` (one transaction)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.inserted = 0
        self.duplicates = 0

    async def publish(self, body: bytes) -> PublishOutcome:
        events = orjson.loads(body)
        try:
            inserted, duplicates = await self._store.insert_batch(events)
        except InvalidEventError as exc:
            return PublishOutcome(Outcome.PERMANENT, "invalid_event", detail=str(exc))
        except sqlite3.OperationalError as exc:  # locked or disk full: may pass, so retry
            return PublishOutcome(Outcome.RETRYABLE, "sqlite_error", detail=str(exc))
        self.inserted += inserted
        self.duplicates += duplicates
        return _OK

    async def aclose(self) -> None:
        await self._store.aclose()
