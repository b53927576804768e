"""The store: a de-duplicating event store, the HTTP collector in front of it, queries, history.

This is what ``trio-events collect``, ``trio-events query`` and ``trio-events history`` run, and
what the agent writes to when it has no export address.
"""

from __future__ import annotations

from trio_events.store._collector import Collector as Collector
from trio_events.store._collector import CollectorConfig as CollectorConfig
from trio_events.store._collector import CollectorStatistics as CollectorStatistics
from trio_events.store._history_server import HistoryConfig as HistoryConfig
from trio_events.store._history_server import HistoryServer as HistoryServer
from trio_events.store._sqlite import EventStore as EventStore
from trio_events.store._sqlite import InsertResult as InsertResult
from trio_events.store._sqlite import InvalidEventError as InvalidEventError
from trio_events.store._sqlite import RefusedEvent as RefusedEvent

__all__ = [
    "Collector",
    "CollectorConfig",
    "CollectorStatistics",
    "EventStore",
    "HistoryConfig",
    "HistoryServer",
    "InsertResult",
    "InvalidEventError",
    "RefusedEvent",
]
