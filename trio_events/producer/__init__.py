"""The producer library: the event model, the recorder and its gRPC client.

This is all a trio application that records events imports; nothing here imports the agent
(:mod:`trio_events.agent`) or the store (:mod:`trio_events.store`).
"""

from __future__ import annotations

from trio_events.producer._client import AddEventsClient as AddEventsClient
from trio_events.producer._client import BackpressureError as BackpressureError
from trio_events.producer._client import EventAggregatorClient as EventAggregatorClient
from trio_events.producer._client import ExportError as ExportError
from trio_events.producer._client import RetryableExportError as RetryableExportError
from trio_events.producer._event_base import RayEventBase as RayEventBase
from trio_events.producer._events import EVENT_CLASSES as EVENT_CLASSES
from trio_events.producer._events import RayActorDefinitionEvent as RayActorDefinitionEvent
from trio_events.producer._events import RayActorLifecycleEvent as RayActorLifecycleEvent
from trio_events.producer._events import (
    RayActorTaskDefinitionEvent as RayActorTaskDefinitionEvent,
)
from trio_events.producer._events import (
    RayDriverJobDefinitionEvent as RayDriverJobDefinitionEvent,
)
from trio_events.producer._events import RayDriverJobLifecycleEvent as RayDriverJobLifecycleEvent
from trio_events.producer._events import RayNodeDefinitionEvent as RayNodeDefinitionEvent
from trio_events.producer._events import RayNodeLifecycleEvent as RayNodeLifecycleEvent
from trio_events.producer._events import (
    RayPlacementGroupDefinitionEvent as RayPlacementGroupDefinitionEvent,
)
from trio_events.producer._events import (
    RayPlacementGroupLifecycleEvent as RayPlacementGroupLifecycleEvent,
)
from trio_events.producer._events import RayPlatformEvent as RayPlatformEvent
from trio_events.producer._events import (
    RaySubmissionJobDefinitionEvent as RaySubmissionJobDefinitionEvent,
)
from trio_events.producer._events import (
    RaySubmissionJobLifecycleEvent as RaySubmissionJobLifecycleEvent,
)
from trio_events.producer._events import RayTaskDefinitionEvent as RayTaskDefinitionEvent
from trio_events.producer._events import RayTaskLifecycleEvent as RayTaskLifecycleEvent
from trio_events.producer._events import RayTaskProfileEvent as RayTaskProfileEvent
from trio_events.producer._events import RayWorkerDefinitionEvent as RayWorkerDefinitionEvent
from trio_events.producer._events import RayWorkerLifecycleEvent as RayWorkerLifecycleEvent
from trio_events.producer._recorder import RayEventRecorder as RayEventRecorder
from trio_events.producer._recorder import RecorderConfig as RecorderConfig
from trio_events.producer._recorder import open_recorder as open_recorder
from trio_events.producer._ring import RecorderStatistics as RecorderStatistics
from trio_events.producer._task_recorder import TaskEventRecorder as TaskEventRecorder
from trio_events.producer._task_recorder import open_task_recorder as open_task_recorder
from trio_events.producer._task_ring import TaskEventPolicy as TaskEventPolicy
from trio_events.producer._task_ring import TaskEventStatistics as TaskEventStatistics

__all__ = [
    "EVENT_CLASSES",
    "AddEventsClient",
    "BackpressureError",
    "EventAggregatorClient",
    "ExportError",
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
    "RetryableExportError",
    "TaskEventPolicy",
    "TaskEventRecorder",
    "TaskEventStatistics",
    "open_recorder",
    "open_task_recorder",
]
