"""A publisher destination that writes into the local SQLite store instead of POSTing.

``trio-events agent`` with no export address uses it, so a fresh install keeps (and can query)
what it receives instead of discarding it as Ray does. It speaks the same ``PublishClient``
protocol as the HTTP client, so it gets the publisher's filtering, retries, metrics and drain.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from typing import TYPE_CHECKING, final

import orjson

from trio_events.agent._sink import Outcome, PublishOutcome

if TYPE_CHECKING:
    from trio_events._metrics import Metrics
    from trio_events.store._sqlite import EventStore

logger = logging.getLogger("trio_events.agent.store_sink")

_OK = PublishOutcome(Outcome.SUCCESS, "stored")


@final
class StorePublishClient:
    """Stores each published JSON array body in an :class:`EventStore` (one transaction).

    Events the store refuses (a timestamp past int64 nanoseconds, a bad eventId...) are refused
    alone, as the collector does: the batch counts as delivered (retrying would change nothing)
    and the refused events are counted by reason in :attr:`refused` and in
    ``trio_events_store_refused_events``, and logged.
    """

    def __init__(self, store: EventStore, *, metrics: Metrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self.inserted = 0
        self.duplicates = 0
        self.refused: Counter[str] = Counter()

    async def publish(self, body: bytes) -> PublishOutcome:
        events = orjson.loads(body)
        try:
            result = await self._store.insert_batch(events)
        except sqlite3.OperationalError as exc:  # locked or disk full: may pass, so retry
            return PublishOutcome(Outcome.RETRYABLE, "sqlite_error", detail=str(exc))
        self.inserted += result.inserted
        self.duplicates += result.duplicates
        if result.refused:
            by_reason = result.refused_by_reason()
            self.refused.update(by_reason)
            if self._metrics is not None:
                for reason, count in by_reason.items():
                    self._metrics.store_refused_events.labels(reason).inc(count)
            logger.warning(
                "The local store refused %d of %d events (%s); the first: %s",
                len(result.refused),
                len(events),
                ", ".join(f"{k}={v}" for k, v in sorted(by_reason.items())),
                result.refused[0].message,
            )
        return _OK

    async def aclose(self) -> None:
        await self._store.aclose()
