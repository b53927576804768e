"""trio-events: Ray's event export pipeline on trio.

The public surface is what this module exports; everything in ``trio_events._*`` is private.
Wire messages are in :mod:`trio_events.pb`.
"""

from __future__ import annotations

from trio_events import pb as pb
from trio_events._agent import AgentConfig as AgentConfig
from trio_events._agent import AggregatorAgent as AggregatorAgent
from trio_events._agent import TaskMetadataStore as TaskMetadataStore
from trio_events._buffer import BufferStatistics as BufferStatistics
from trio_events._buffer import ConsumerStatistics as ConsumerStatistics
from trio_events._buffer import EventBatch as EventBatch
from trio_events._buffer import EventBuffer as EventBuffer
from trio_events._buffer import MultiConsumerEventBuffer as MultiConsumerEventBuffer
from trio_events._collector import Collector as Collector
from trio_events._collector import CollectorConfig as CollectorConfig
from trio_events._collector import CollectorStatistics as CollectorStatistics
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
from trio_events._filtering import (
    DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES as DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES,
)
from trio_events._filtering import parse_exposable_event_types as parse_exposable_event_types
from trio_events._grpc_client import AddEventsClient as AddEventsClient
from trio_events._grpc_client import BackpressureError as BackpressureError
from trio_events._grpc_client import EventAggregatorClient as EventAggregatorClient
from trio_events._grpc_client import ExportError as ExportError
from trio_events._grpc_client import RetryableExportError as RetryableExportError
from trio_events._http_client import HttpPublisherClient as HttpPublisherClient
from trio_events._http_client import HttpPublisherConfig as HttpPublisherConfig
from trio_events._json import JsonConverter as JsonConverter
from trio_events._json import protobuf_reference_dumps as protobuf_reference_dumps
from trio_events._metrics import Metrics as Metrics
from trio_events._publisher import RayEventPublisher as RayEventPublisher
from trio_events._publisher_config import PublishClient as PublishClient
from trio_events._publisher_config import PublisherConfig as PublisherConfig
from trio_events._publisher_config import PublisherStatistics as PublisherStatistics
from trio_events._realistic import realistic_events as realistic_events
from trio_events._recorder import RayEventRecorder as RayEventRecorder
from trio_events._recorder import RecorderConfig as RecorderConfig
from trio_events._recorder import open_recorder as open_recorder
from trio_events._recorder_ring import RecorderStatistics as RecorderStatistics
from trio_events._retry import Outcome as Outcome
from trio_events._retry import PublishOutcome as PublishOutcome
from trio_events._service import AgentService as AgentService
from trio_events._service import Destination as Destination
from trio_events._service import ServiceAddresses as ServiceAddresses
from trio_events._service import ServiceConfig as ServiceConfig
from trio_events._service import ShutdownSummary as ShutdownSummary
from trio_events._spool import SpoolEventBuffer as SpoolEventBuffer
from trio_events._spool_db import SpoolConfig as SpoolConfig
from trio_events._spool_db import SpoolStatistics as SpoolStatistics
from trio_events._store import EventStore as EventStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES",
    "EVENT_CLASSES",
    "AddEventsClient",
    "AgentConfig",
    "AgentService",
    "AggregatorAgent",
    "BackpressureError",
    "BufferStatistics",
    "Collector",
    "CollectorConfig",
    "CollectorStatistics",
    "ConsumerStatistics",
    "Destination",
    "EventAggregatorClient",
    "EventBatch",
    "EventBuffer",
    "EventStore",
    "ExportError",
    "HttpPublisherClient",
    "HttpPublisherConfig",
    "JsonConverter",
    "Metrics",
    "MultiConsumerEventBuffer",
    "Outcome",
    "PublishClient",
    "PublishOutcome",
    "PublisherConfig",
    "PublisherStatistics",
    "RayActorDefinitionEvent",
    "RayActorLifecycleEvent",
    "RayActorTaskDefinitionEvent",
    "RayDriverJobDefinitionEvent",
    "RayDriverJobLifecycleEvent",
    "RayEventBase",
    "RayEventPublisher",
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
    "ServiceAddresses",
    "ServiceConfig",
    "ShutdownSummary",
    "SpoolConfig",
    "SpoolEventBuffer",
    "SpoolStatistics",
    "TaskMetadataStore",
    "open_recorder",
    "parse_exposable_event_types",
    "pb",
    "protobuf_reference_dumps",
    "realistic_events",
]
