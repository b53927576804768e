"""The store: a de-duplicating event store, the HTTP collector in front of it, and queries.

This is what ``trio-events collect`` and ``trio-events query`` run, and what the agent writes
to when it has no export address.
"""

from __future__ import annotations

from trio_events.store._collector import Collector as Collector
from trio_events.store._collector import CollectorConfig as CollectorConfig
from trio_events.store._collector import CollectorStatistics as CollectorStatistics
from trio_events.store._sqlite import EventStore as EventStore
from trio_events.store._sqlite import InsertResult as InsertResult
from trio_events.store._sqlite import InvalidEventError as InvalidEventError
from trio_events.store._sqlite import RefusedEvent as RefusedEvent

__all__ = [
    "Collector",
    "CollectorConfig",
    "CollectorStatistics",
    "EventStore",
    "InsertResult",
    "InvalidEventError",
    "RefusedEvent",
]
