"""The 17 event types of Ray 2.60, with Ray's entity ids and merge rules (ray-reference.md 2.4).

- Definition events keep the first and ignore later duplicates.
- Lifecycle events append the other event's state transitions, in order.
- Task lifecycle events also take the other's scalar properties (error info, node and worker ids,
  pid, debugger flag, ...) last-writer-wins, as Ray's ``AppendTaskLifecycleUpdate``; the log info
  is combined field by field (its fields are all proto3 ``optional``), so a log-files update and
  a later end-offsets update of one attempt keep both.
- Worker lifecycle fills ``job_id`` if still empty, then appends transitions.
- Task profile events append profile entries.
- Platform and submission-job events are never merged: Ray 2.60 creates them only in Python
  (``InternalEventBuilder`` -> ``CreatePythonRayEvent``), and a ``PythonRayEvent`` does not merge.

Lifecycle constructors take one transition as keywords (``state="RUNNING"`` plus the
transition's other fields; its timestamp is the event's) or several as ``transitions=[...]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from trio_events import pb
from trio_events.producer._coerce import fill_message
from trio_events.producer._event_base import RayEventBase
from trio_events.producer._event_kinds import _LifecycleEvent, _SingleIdEvent, _TaskAttemptEvent

if TYPE_CHECKING:
    from google.protobuf.message import Message

_E = pb.RayEvent

# --- task events -------------------------------------------------------------------------


@final
class RayTaskDefinitionEvent(_TaskAttemptEvent):
    """TASK_DEFINITION_EVENT: one per task attempt; later duplicates are ignored."""

    __slots__ = ()
    EVENT_TYPE = _E.TASK_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.TaskDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 8


@final
class RayActorTaskDefinitionEvent(_TaskAttemptEvent):
    """ACTOR_TASK_DEFINITION_EVENT: the definition of an actor method call attempt."""

    __slots__ = ()
    EVENT_TYPE = _E.ACTOR_TASK_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.ActorTaskDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 10


@final
class RayTaskLifecycleEvent(_TaskAttemptEvent, _LifecycleEvent):
    """TASK_LIFECYCLE_EVENT: transitions append; scalar properties are last-writer-wins."""

    __slots__ = ()
    EVENT_TYPE = _E.TASK_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.TaskLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 9

    def merge_data(self, other: Message) -> None:
        mine: Any = self._payload
        for fd, value in other.ListFields():
            if fd.name == "state_transitions":
                mine.state_transitions.extend(value)
            elif fd.name == "task_log_info":
                # Every TaskLogInfo field has presence: a later update sets only what it knows
                # (e.g. the end offsets), so merging keeps the earlier files and start offsets.
                mine.task_log_info.MergeFrom(value)
            elif fd.message_type is not None:
                getattr(mine, fd.name).CopyFrom(value)
            else:
                setattr(mine, fd.name, value)


@final
class RayTaskProfileEvent(_TaskAttemptEvent):
    """TASK_PROFILE_EVENT: merging appends the other's profile entries."""

    __slots__ = ()
    EVENT_TYPE = _E.TASK_PROFILE_EVENT
    PAYLOAD_TYPE = pb.TaskProfileEvents
    PAYLOAD_FIELD_NUMBER = 11
    ATTEMPT_FIELD = "attempt_number"

    def merge_data(self, other: Message) -> None:
        mine: Any = self._payload
        theirs: Any = other
        mine.profile_events.events.extend(theirs.profile_events.events)


# --- driver jobs, nodes, actors -------------------------------------------------------------


@final
class RayDriverJobDefinitionEvent(_SingleIdEvent):
    """DRIVER_JOB_DEFINITION_EVENT (entity: job id)."""

    __slots__ = ()
    EVENT_TYPE = _E.DRIVER_JOB_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.DriverJobDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 12
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "job_id"
    REQUIRED_FIELDS = ("job_id",)


@final
class RayDriverJobLifecycleEvent(_LifecycleEvent):
    """DRIVER_JOB_LIFECYCLE_EVENT (entity: job id)."""

    __slots__ = ()
    EVENT_TYPE = _E.DRIVER_JOB_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.DriverJobLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 13
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "job_id"
    REQUIRED_FIELDS = ("job_id",)


@final
class RayNodeDefinitionEvent(_SingleIdEvent):
    """NODE_DEFINITION_EVENT (entity: node id)."""

    __slots__ = ()
    EVENT_TYPE = _E.NODE_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.NodeDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 14
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "node_id"
    REQUIRED_FIELDS = ("node_id",)


@final
class RayNodeLifecycleEvent(_LifecycleEvent):
    """NODE_LIFECYCLE_EVENT (entity: node id)."""

    __slots__ = ()
    EVENT_TYPE = _E.NODE_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.NodeLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 15
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "node_id"
    REQUIRED_FIELDS = ("node_id",)


@final
class RayActorDefinitionEvent(_SingleIdEvent):
    """ACTOR_DEFINITION_EVENT (entity: actor id)."""

    __slots__ = ()
    EVENT_TYPE = _E.ACTOR_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.ActorDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 16
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "actor_id"
    REQUIRED_FIELDS = ("actor_id",)


@final
class RayActorLifecycleEvent(_LifecycleEvent):
    """ACTOR_LIFECYCLE_EVENT (entity: actor id)."""

    __slots__ = ()
    EVENT_TYPE = _E.ACTOR_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.ActorLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 17
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "actor_id"
    REQUIRED_FIELDS = ("actor_id",)


# --- placement groups, submission jobs, platform, workers ----------------------------------


@final
class RayPlacementGroupDefinitionEvent(_SingleIdEvent):
    """PLACEMENT_GROUP_DEFINITION_EVENT (entity: placement group id)."""

    __slots__ = ()
    EVENT_TYPE = _E.PLACEMENT_GROUP_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.PlacementGroupDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 19
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "placement_group_id"
    REQUIRED_FIELDS = ("placement_group_id",)


@final
class RayPlacementGroupLifecycleEvent(_LifecycleEvent):
    """PLACEMENT_GROUP_LIFECYCLE_EVENT (entity: placement group id)."""

    __slots__ = ()
    EVENT_TYPE = _E.PLACEMENT_GROUP_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.PlacementGroupLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 20
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "placement_group_id"
    REQUIRED_FIELDS = ("placement_group_id",)


@final
class RaySubmissionJobDefinitionEvent(_SingleIdEvent):
    """SUBMISSION_JOB_DEFINITION_EVENT (entity: submission id, a string); never merged.

    Ray 2.60 builds it in Python (``CreatePythonRayEvent``), and Python-created events are never
    grouped: two definitions of one submission id are both exported.
    """

    __slots__ = ()
    EVENT_TYPE = _E.SUBMISSION_JOB_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.SubmissionJobDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 21
    DEFAULT_SOURCE_TYPE = _E.JOBS
    ENTITY_FIELD = "submission_id"
    REQUIRED_FIELDS = ("submission_id",)
    SUPPORTS_MERGE = False


@final
class RaySubmissionJobLifecycleEvent(_LifecycleEvent):
    """SUBMISSION_JOB_LIFECYCLE_EVENT (entity: submission id); never merged, like the definition.

    The transition's own ``message`` field is passed as ``state_message=`` because ``message``
    is the event's base field.
    """

    __slots__ = ()
    EVENT_TYPE = _E.SUBMISSION_JOB_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.SubmissionJobLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 22
    DEFAULT_SOURCE_TYPE = _E.JOBS
    ENTITY_FIELD = "submission_id"
    REQUIRED_FIELDS = ("submission_id",)
    SUPPORTS_MERGE = False
    TRANSITION_ALIASES = {"state_message": "message"}


@final
class RayPlatformEvent(RayEventBase):
    """PLATFORM_EVENT (e.g. Kubernetes events): never merged, like Ray's ``PythonRayEvent``.

    ``entity_id`` is caller-supplied (``entity_id=b"..."``); it defaults to the event id. The
    payload's own ``message`` field is passed as ``platform_message=`` because ``message`` is the
    event's base field.
    """

    __slots__ = ("_entity_id",)
    EVENT_TYPE = _E.PLATFORM_EVENT
    PAYLOAD_TYPE = pb.PlatformEvent
    PAYLOAD_FIELD_NUMBER = 23
    DEFAULT_SOURCE_TYPE = _E.CLUSTER_LIFECYCLE
    SUPPORTS_MERGE = False

    _entity_id: bytes | None

    def __init__(
        self, *, entity_id: bytes | None = None, platform_message: str | None = None, **kwargs: Any
    ) -> None:
        if entity_id is not None and not isinstance(entity_id, bytes):
            raise TypeError("RayPlatformEvent entity_id must be bytes.")
        self._entity_id = entity_id
        super().__init__(**kwargs)
        if platform_message is not None:
            fill_message(self._payload, {"message": platform_message}, what="RayPlatformEvent")

    @property
    def entity_id(self) -> bytes:
        entity = getattr(self, "_entity_id", None)
        return self.event_id if entity is None else entity

    def copy(self) -> RayPlatformEvent:
        twin = super().copy()
        twin._entity_id = getattr(self, "_entity_id", None)
        return twin


@final
class RayWorkerDefinitionEvent(_SingleIdEvent):
    """WORKER_DEFINITION_EVENT (entity: worker id)."""

    __slots__ = ()
    EVENT_TYPE = _E.WORKER_DEFINITION_EVENT
    PAYLOAD_TYPE = pb.WorkerDefinitionEvent
    PAYLOAD_FIELD_NUMBER = 25
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "worker_id"
    REQUIRED_FIELDS = ("worker_id",)


@final
class RayWorkerLifecycleEvent(_LifecycleEvent):
    """WORKER_LIFECYCLE_EVENT (entity: worker id); merging fills job_id if still empty."""

    __slots__ = ()
    EVENT_TYPE = _E.WORKER_LIFECYCLE_EVENT
    PAYLOAD_TYPE = pb.WorkerLifecycleEvent
    PAYLOAD_FIELD_NUMBER = 24
    DEFAULT_SOURCE_TYPE = _E.GCS
    ENTITY_FIELD = "worker_id"
    REQUIRED_FIELDS = ("worker_id",)

    def merge_data(self, other: Message) -> None:
        mine: Any = self._payload
        theirs: Any = other
        if not mine.job_id:
            mine.job_id = theirs.job_id
        super().merge_data(other)


#: Every built-in event class, by ``RayEvent.EventType`` number.
EVENT_CLASSES: dict[int, type[RayEventBase]] = {
    cls.EVENT_TYPE: cls
    for cls in (
        RayTaskDefinitionEvent,
        RayTaskLifecycleEvent,
        RayActorTaskDefinitionEvent,
        RayTaskProfileEvent,
        RayDriverJobDefinitionEvent,
        RayDriverJobLifecycleEvent,
        RayNodeDefinitionEvent,
        RayNodeLifecycleEvent,
        RayActorDefinitionEvent,
        RayActorLifecycleEvent,
        RayPlacementGroupDefinitionEvent,
        RayPlacementGroupLifecycleEvent,
        RaySubmissionJobDefinitionEvent,
        RaySubmissionJobLifecycleEvent,
        RayPlatformEvent,
        RayWorkerLifecycleEvent,
        RayWorkerDefinitionEvent,
    )
}
