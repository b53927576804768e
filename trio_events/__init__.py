"""trio-events: Ray's event export pipeline on trio.

This module exports what a trio application needs to record events: the 17 event types, the
recorder and its gRPC client (the producer library, :mod:`trio_events.producer`), plus the wire
messages (:mod:`trio_events.pb`) and :class:`Metrics`. Importing it loads no agent or store code.

The other parts are their own public packages:

- :mod:`trio_events.agent`: the aggregator agent (ingest, buffer, spool, publishers, service);
- :mod:`trio_events.store`: the event store, the HTTP collector and queries over the store.

Everything in a module whose name starts with ``_`` is private.
"""

from __future__ import annotations

from trio_events import pb as pb
from trio_events._metrics import Metrics as Metrics
from trio_events._version import __version__ as __version__
from trio_events.producer import EVENT_CLASSES as EVENT_CLASSES
from trio_events.producer import AddEventsClient as AddEventsClient
from trio_events.producer import BackpressureError as BackpressureError
from trio_events.producer import EventAggregatorClient as EventAggregatorClient
from trio_events.producer import ExportError as ExportError
from trio_events.producer import RayActorDefinitionEvent as RayActorDefinitionEvent
from trio_events.producer import RayActorLifecycleEvent as RayActorLifecycleEvent
from trio_events.producer import RayActorTaskDefinitionEvent as RayActorTaskDefinitionEvent
from trio_events.producer import RayDriverJobDefinitionEvent as RayDriverJobDefinitionEvent
from trio_events.producer import RayDriverJobLifecycleEvent as RayDriverJobLifecycleEvent
from trio_events.producer import RayEventBase as RayEventBase
from trio_events.producer import RayEventRecorder as RayEventRecorder
from trio_events.producer import RayNodeDefinitionEvent as RayNodeDefinitionEvent
from trio_events.producer import RayNodeLifecycleEvent as RayNodeLifecycleEvent
from trio_events.producer import (
    RayPlacementGroupDefinitionEvent as RayPlacementGroupDefinitionEvent,
)
from trio_events.producer import RayPlacementGroupLifecycleEvent as RayPlacementGroupLifecycleEvent
from trio_events.producer import RayPlatformEvent as RayPlatformEvent
from trio_events.producer import RaySubmissionJobDefinitionEvent as RaySubmissionJobDefinitionEvent
from trio_events.producer import RaySubmissionJobLifecycleEvent as RaySubmissionJobLifecycleEvent
from trio_events.producer import RayTaskDefinitionEvent as RayTaskDefinitionEvent
from trio_events.producer import RayTaskLifecycleEvent as RayTaskLifecycleEvent
from trio_events.producer import RayTaskProfileEvent as RayTaskProfileEvent
from trio_events.producer import RayWorkerDefinitionEvent as RayWorkerDefinitionEvent
from trio_events.producer import RayWorkerLifecycleEvent as RayWorkerLifecycleEvent
from trio_events.producer import RecorderConfig as RecorderConfig
from trio_events.producer import RecorderStatistics as RecorderStatistics
from trio_events.producer import RequestTooLargeError as RequestTooLargeError
from trio_events.producer import RetryableExportError as RetryableExportError
from trio_events.producer import open_recorder as open_recorder

__all__ = [
    "EVENT_CLASSES",
    "AddEventsClient",
    "BackpressureError",
    "EventAggregatorClient",
    "ExportError",
    "Metrics",
    "RayActorDefinitionEvent",
    "RayActorLifecycleEvent",
    "RayActorTaskDefinitionEvent",
    "RayDriverJobDefinitionEvent",
    "RayDriverJobLifecycleEvent",
    "RayEventBase",
    "RayEventRecorder",
    "RayNodeDefinitionEvent",
    "RayNodeLifecycleEvent",
    "RayPlacementGroupDefinitionEvent",
    "RayPlacementGroupLifecycleEvent",
    "RayPlatformEvent",
    "RaySubmissionJobDefinitionEvent",
    "RaySubmissionJobLifecycleEvent",
    "RayTaskDefinitionEvent",
    "RayTaskLifecycleEvent",
    "RayTaskProfileEvent",
    "RayWorkerDefinitionEvent",
    "RayWorkerLifecycleEvent",
    "RecorderConfig",
    "RecorderStatistics",
    "RequestTooLargeError",
    "RetryableExportError",
    "open_recorder",
    "pb",
]
