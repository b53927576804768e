"""Ray's wire messages (the 2.60 schema), re-exported from the generated code.

``from trio_events import pb`` then ``pb.RayEvent``, ``pb.AddEventsRequest`` and so on. The
generated modules live in ``trio_events._proto`` under Ray's own file layout
(``src/ray/protobuf/...``) so that descriptors carry Ray's file names.

The generated code registers into a private descriptor pool (:data:`DESCRIPTOR_POOL`), not
protobuf's default one, so trio-events can be imported into a process that also imports Ray's own
generated modules (a Ray driver, task or actor), which use the same file and message names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_events._proto import _pool
from trio_events._proto.src.ray.protobuf.common_pb2 import (
    ActorDeathCause as ActorDeathCause,
)
from trio_events._proto.src.ray.protobuf.common_pb2 import (
    ActorDiedErrorContext as ActorDiedErrorContext,
)
from trio_events._proto.src.ray.protobuf.common_pb2 import (
    FunctionDescriptor as FunctionDescriptor,
)
from trio_events._proto.src.ray.protobuf.common_pb2 import (
    PythonFunctionDescriptor as PythonFunctionDescriptor,
)
from trio_events._proto.src.ray.protobuf.common_pb2 import RayErrorInfo as RayErrorInfo
from trio_events._proto.src.ray.protobuf.common_pb2 import TaskAttempt as TaskAttempt
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_grpc import (
    EventAggregatorServiceBase as EventAggregatorServiceBase,
)
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_grpc import (
    EventAggregatorServiceStub as EventAggregatorServiceStub,
)
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_pb2 import (
    AddEventsReply as AddEventsReply,
)
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_pb2 import (
    AddEventsRequest as AddEventsRequest,
)
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_pb2 import (
    AddEventsStatus as AddEventsStatus,
)
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_pb2 import (
    RayEventsData as RayEventsData,
)
from trio_events._proto.src.ray.protobuf.events_event_aggregator_service_pb2 import (
    TaskEventsMetadata as TaskEventsMetadata,
)
from trio_events._proto.src.ray.protobuf.events_task_profile_events_pb2 import (
    TaskProfileEvents as TaskProfileEvents,
)
from trio_events._proto.src.ray.protobuf.gcs_service_grpc import (
    InternalKVGcsServiceBase as InternalKVGcsServiceBase,
)
from trio_events._proto.src.ray.protobuf.gcs_service_grpc import (
    InternalKVGcsServiceStub as InternalKVGcsServiceStub,
)
from trio_events._proto.src.ray.protobuf.gcs_service_grpc import (
    RayEventExportGcsServiceBase as RayEventExportGcsServiceBase,
)
from trio_events._proto.src.ray.protobuf.gcs_service_grpc import (
    RayEventExportGcsServiceStub as RayEventExportGcsServiceStub,
)
from trio_events._proto.src.ray.protobuf.gcs_service_pb2 import GcsStatus as GcsStatus
from trio_events._proto.src.ray.protobuf.gcs_service_pb2 import (
    InternalKVGetReply as InternalKVGetReply,
)
from trio_events._proto.src.ray.protobuf.gcs_service_pb2 import (
    InternalKVGetRequest as InternalKVGetRequest,
)
from trio_events._proto.src.ray.protobuf.profile_events_pb2 import (
    ProfileEventEntry as ProfileEventEntry,
)
from trio_events._proto.src.ray.protobuf.profile_events_pb2 import ProfileEvents as ProfileEvents
from trio_events._proto.src.ray.protobuf.public.events_actor_definition_event_pb2 import (
    ActorDefinitionEvent as ActorDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_actor_lifecycle_event_pb2 import (
    ActorLifecycleEvent as ActorLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_actor_task_definition_event_pb2 import (
    ActorTaskDefinitionEvent as ActorTaskDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_base_event_pb2 import RayEvent as RayEvent
from trio_events._proto.src.ray.protobuf.public.events_driver_job_definition_event_pb2 import (
    DriverJobDefinitionEvent as DriverJobDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_driver_job_lifecycle_event_pb2 import (
    DriverJobLifecycleEvent as DriverJobLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_node_definition_event_pb2 import (
    NodeDefinitionEvent as NodeDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_node_lifecycle_event_pb2 import (
    NodeLifecycleEvent as NodeLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_placement_group_definition_event_pb2 import (
    PlacementGroupDefinitionEvent as PlacementGroupDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_placement_group_lifecycle_event_pb2 import (
    PlacementGroupLifecycleEvent as PlacementGroupLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_submission_job_definition_event_pb2 import (
    SubmissionJobDefinitionEvent as SubmissionJobDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_submission_job_lifecycle_event_pb2 import (
    SubmissionJobLifecycleEvent as SubmissionJobLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_task_definition_event_pb2 import (
    TaskDefinitionEvent as TaskDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_task_lifecycle_event_pb2 import (
    TaskLifecycleEvent as TaskLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_worker_definition_event_pb2 import (
    WorkerDefinitionEvent as WorkerDefinitionEvent,
)
from trio_events._proto.src.ray.protobuf.public.events_worker_lifecycle_event_pb2 import (
    WorkerLifecycleEvent as WorkerLifecycleEvent,
)
from trio_events._proto.src.ray.protobuf.public.platform_event_pb2 import (
    PlatformEvent as PlatformEvent,
)
from trio_events._proto.src.ray.protobuf.reporter_grpc import (
    ReporterServiceBase as ReporterServiceBase,
)
from trio_events._proto.src.ray.protobuf.reporter_grpc import (
    ReporterServiceStub as ReporterServiceStub,
)
from trio_events._proto.src.ray.protobuf.reporter_pb2 import HealthCheckReply as HealthCheckReply
from trio_events._proto.src.ray.protobuf.reporter_pb2 import (
    HealthCheckRequest as HealthCheckRequest,
)

if TYPE_CHECKING:
    from google.protobuf.descriptor_pool import DescriptorPool

#: ``RayEvent.EventType`` names by number, e.g. ``EVENT_TYPE_NAMES[2] == "TASK_LIFECYCLE_EVENT"``.
EVENT_TYPE_NAMES: dict[int, str] = {
    v.number: v.name for v in RayEvent.DESCRIPTOR.enum_types_by_name["EventType"].values
}
#: The inverse of :data:`EVENT_TYPE_NAMES`.
EVENT_TYPES_BY_NAME: dict[str, int] = {name: n for n, name in EVENT_TYPE_NAMES.items()}

#: The private descriptor pool holding Ray's schema (not protobuf's default pool).
DESCRIPTOR_POOL: DescriptorPool = _pool.POOL
