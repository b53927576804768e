"""trio-events: Ray's event export pipeline on trio.

The public surface is what this module exports; everything in ``trio_events._*`` is private.
Wire messages are in :mod:`trio_events.pb`.
"""

from __future__ import annotations

from trio_events import pb as pb
from trio_events._event_base import RayEventBase as RayEventBase
from trio_events._events import EVENT_CLASSES as EVENT_CLASSES
from trio_events._events import RayActorDefinitionEvent as RayActorDefinitionEvent
from trio_events._events import RayActorLifecycleEvent as RayActorLifecycleEvent
from trio_events._events import RayActorTaskDefinitionEvent as RayActorTaskDefinitionEvent
from trio_events._events import RayDriverJobDefinitionEvent as RayDriverJobDefinitionEvent
from trio_events._events import RayDriverJobLifecycleEvent as RayDriverJobLifecycleEvent
from trio_events._events import RayNodeDefinitionEvent as RayNodeDefinitionEvent
from trio_events._events import RayNodeLifecycleEvent as RayNodeLifecycleEvent
from trio_events._events import (
    RayPlacementGroupDefinitionEvent as RayPlacementGroupDefinitionEvent,
)
from trio_events._events import RayPlacementGroupLifecycleEvent as RayPlacementGroupLifecycleEvent
from trio_events._events import RayPlatformEvent as RayPlatformEvent
from trio_events._events import RaySubmissionJobDefinitionEvent as RaySubmissionJobDefinitionEvent
from trio_events._events import RaySubmissionJobLifecycleEvent as RaySubmissionJobLifecycleEvent
from trio_events._events import RayTaskDefinitionEvent as RayTaskDefinitionEvent
from trio_events._events import RayTaskLifecycleEvent as RayTaskLifecycleEvent
from trio_events._events import RayTaskProfileEvent as RayTaskProfileEvent
from trio_events._events import RayWorkerDefinitionEvent as RayWorkerDefinitionEvent
from trio_events._events import RayWorkerLifecycleEvent as RayWorkerLifecycleEvent
from trio_events._metrics import Metrics as Metrics

__version__ = "0.1.0"

__all__ = [
    "EVENT_CLASSES",
    "Metrics",
    "RayActorDefinitionEvent",
    "RayActorLifecycleEvent",
    "RayActorTaskDefinitionEvent",
    "RayDriverJobDefinitionEvent",
    "RayDriverJobLifecycleEvent",
    "RayEventBase",
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
    "pb",
]
