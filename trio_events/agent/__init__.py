"""The aggregator agent: gRPC ingest, the multi-consumer buffer, the spool, publishers, service.

:class:`AgentService` is what ``trio-events agent`` runs; the stages it supervises are public
too, for embedding them in a trio program. Destinations plug in behind :class:`PublishClient`.
"""

from __future__ import annotations

from trio_events.agent._buffer import BufferStatistics as BufferStatistics
from trio_events.agent._buffer import EventBuffer as EventBuffer
from trio_events.agent._buffer import MultiConsumerEventBuffer as MultiConsumerEventBuffer
from trio_events.agent._consumer import ConsumerStatistics as ConsumerStatistics
from trio_events.agent._consumer import EventBatch as EventBatch
from trio_events.agent._consumer import EventConsumer as EventConsumer
from trio_events.agent._convert import JsonConverter as JsonConverter
from trio_events.agent._convert_pool import ConversionPool as ConversionPool
from trio_events.agent._convert_pool import ConversionPoolStatistics as ConversionPoolStatistics
from trio_events.agent._convert_pool import PooledConverter as PooledConverter
from trio_events.agent._dashboard_publisher import DashboardHeadClient as DashboardHeadClient
from trio_events.agent._dashboard_publisher import DashboardHeadConfig as DashboardHeadConfig
from trio_events.agent._delivery import BatchConverter as BatchConverter
from trio_events.agent._filtering import (
    DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES as DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES,
)
from trio_events.agent._filtering import (
    parse_exposable_event_types as parse_exposable_event_types,
)
from trio_events.agent._gcs_publisher import TASK_EVENT_TYPES as TASK_EVENT_TYPES
from trio_events.agent._gcs_publisher import GcsPublisherConfig as GcsPublisherConfig
from trio_events.agent._gcs_publisher import GcsTaskEventsClient as GcsTaskEventsClient
from trio_events.agent._http_sink import HttpPublisherClient as HttpPublisherClient
from trio_events.agent._http_sink import HttpPublisherConfig as HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig as AgentConfig
from trio_events.agent._ingest import AggregatorAgent as AggregatorAgent
from trio_events.agent._publisher import RayEventPublisher as RayEventPublisher
from trio_events.agent._publisher_config import PublisherConfig as PublisherConfig
from trio_events.agent._publisher_config import PublisherStatistics as PublisherStatistics
from trio_events.agent._service import AgentService as AgentService
from trio_events.agent._service_config import Destination as Destination
from trio_events.agent._service_config import ServiceAddresses as ServiceAddresses
from trio_events.agent._service_config import ServiceConfig as ServiceConfig
from trio_events.agent._service_config import ShutdownSummary as ShutdownSummary
from trio_events.agent._sink import Outcome as Outcome
from trio_events.agent._sink import PublishClient as PublishClient
from trio_events.agent._sink import PublishOutcome as PublishOutcome
from trio_events.agent._spool import SpoolEventBuffer as SpoolEventBuffer
from trio_events.agent._spool_db import SpoolConfig as SpoolConfig
from trio_events.agent._spool_db import SpoolStatistics as SpoolStatistics
from trio_events.agent._task_publishing import TaskEventsDestination as TaskEventsDestination

__all__ = [
    "DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES",
    "TASK_EVENT_TYPES",
    "AgentConfig",
    "AgentService",
    "AggregatorAgent",
    "BatchConverter",
    "BufferStatistics",
    "ConsumerStatistics",
    "ConversionPool",
    "ConversionPoolStatistics",
    "DashboardHeadClient",
    "DashboardHeadConfig",
    "Destination",
    "EventBatch",
    "EventBuffer",
    "EventConsumer",
    "GcsPublisherConfig",
    "GcsTaskEventsClient",
    "HttpPublisherClient",
    "HttpPublisherConfig",
    "JsonConverter",
    "MultiConsumerEventBuffer",
    "Outcome",
    "PooledConverter",
    "PublishClient",
    "PublishOutcome",
    "PublisherConfig",
    "PublisherStatistics",
    "RayEventPublisher",
    "ServiceAddresses",
    "ServiceConfig",
    "ShutdownSummary",
    "SpoolConfig",
    "SpoolEventBuffer",
    "SpoolStatistics",
    "TaskEventsDestination",
    "parse_exposable_event_types",
]
