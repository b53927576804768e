"""Histories of one entity as Ray exports them, and recorder-side events of one entity.

:func:`entity_histories` produces the wire events a receiver sees for one task attempt chain,
actor, job or node, in an order real Ray can produce: each emitting process exports its own
events in order, but the owner's and the executor's streams (two core workers) interleave
freely, a definition may arrive after lifecycle events, and a recorder merges the transitions
of one export interval into one event. Shrinking goes towards fewer events, fewer retries and
the owner's stream first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

import attrs
from hypothesis import strategies as st

from trio_events import pb
from trio_events._proto.src.ray.protobuf import common_pb2
from trio_events.producer._events import (
    RayActorDefinitionEvent,
    RayTaskLifecycleEvent,
    RayTaskProfileEvent,
    RayWorkerLifecycleEvent,
)
from trio_events.testing._values import REALISTIC_SECONDS, ray_ids, texts

if TYPE_CHECKING:
    from trio_events.producer._event_base import RayEventBase

#: The entity kinds :func:`entity_histories` knows.
HISTORY_KINDS: Final = ("task", "actor", "job", "node")
_E = pb.RayEvent
_TASK_LIFECYCLE = pb.EVENT_TYPES_BY_NAME["TASK_LIFECYCLE_EVENT"]


@final
@attrs.frozen
class EntityHistory:
    """Events of one entity in arrival order; ``final_state`` is the last state Ray reached
    (e.g. ``"FINISHED"``, ``"DEAD"``), what a correct state reconstruction must end with."""

    kind: str
    entity_id: bytes
    events: tuple[pb.RayEvent, ...]
    final_state: str
    attempts: int = 1  #: task attempts (retries + 1); 1 for other kinds


class _Stamper:
    """Base fields of each event: unique 28-byte ids, increasing nanosecond timestamps."""

    def __init__(self, prefix: bytes, start_ns: int, node_id: bytes) -> None:
        self._prefix, self._now, self.node_id, self._count = prefix, start_ns, node_id, 0

    def tick(self) -> int:
        self._now += 1_000_003
        return self._now

    def event(self, event_type: int, source: int, *, node_id: bytes | None = None) -> pb.RayEvent:
        self._count += 1
        event = pb.RayEvent(
            event_id=self._prefix + self._count.to_bytes(4, "big"),
            event_type=event_type,  # type: ignore[arg-type]
            source_type=source,  # type: ignore[arg-type]
            severity=_E.INFO,
            session_name="session_2025-06-30_16-50-30_1_1",
            node_id=node_id if node_id is not None else self.node_id,
        )
        event.timestamp.FromNanoseconds(self.tick())
        return event


@st.composite
def _chunks(draw: st.DrawFn, items: list[Any]) -> list[list[Any]]:
    """``items`` split into consecutive non-empty groups (the transitions of one export)."""
    groups: list[list[Any]] = []
    for item in items:
        join: bool = draw(st.booleans())
        if groups and join:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


@st.composite
def _interleave(draw: st.DrawFn, streams: list[list[pb.RayEvent]]) -> list[pb.RayEvent]:
    """One arrival order of ``streams`` that keeps each stream's own order."""
    pending = [list(s) for s in streams if s]
    out: list[pb.RayEvent] = []
    while pending:
        i = draw(st.integers(0, len(pending) - 1))
        out.append(pending[i].pop(0))
        if not pending[i]:
            del pending[i]
    return out


@st.composite
def _with_definition(
    draw: st.DrawFn, lifecycle: list[pb.RayEvent], definition: pb.RayEvent
) -> list[pb.RayEvent]:
    at = draw(st.integers(0, len(lifecycle)))  # shrinks to "definition first"
    return [*lifecycle[:at], definition, *lifecycle[at:]]


def _stamper(draw: st.DrawFn) -> _Stamper:
    start = draw(st.integers(REALISTIC_SECONDS, REALISTIC_SECONDS + 10**7)) * 10**9
    return _Stamper(draw(st.binary(min_size=24, max_size=24)), start, draw(ray_ids("node")))


def _task_lifecycle(
    stamp: _Stamper, ids: tuple[bytes, int, bytes], states: list[int], node: bytes, **fields: Any
) -> pb.RayEvent:
    event = stamp.event(_TASK_LIFECYCLE, _E.CORE_WORKER, node_id=node)
    payload = event.task_lifecycle_event
    payload.task_id, payload.task_attempt, payload.job_id = ids
    for state in states:
        transition = payload.state_transitions.add(state=state)
        transition.timestamp.FromNanoseconds(stamp.tick())
    for name, value in fields.items():
        if name == "ray_error_info":
            payload.ray_error_info.CopyFrom(value)
        else:
            setattr(payload, name, value)
    return event


@st.composite
def _task_history(draw: st.DrawFn) -> EntityHistory:
    stamp = _stamper(draw)
    task_id, job_id = draw(ray_ids("task")), draw(ray_ids("job"))
    retries = draw(st.integers(0, 2))
    final_ok = draw(st.booleans())
    arrivals: list[pb.RayEvent] = []
    for attempt in range(retries + 1):
        owner_node, exec_node = stamp.node_id, draw(ray_ids("node"))
        worker_id = draw(ray_ids("worker"))
        last = attempt == retries
        ok = last and final_ok

        owner_states = [
            common_pb2.PENDING_ARGS_AVAIL,
            common_pb2.PENDING_NODE_ASSIGNMENT,
            common_pb2.SUBMITTED_TO_WORKER,
        ]
        ids = (task_id, attempt, job_id)
        owner = [_task_lifecycle(stamp, ids, g, owner_node) for g in draw(_chunks(owner_states))]
        # SUBMITTED_TO_WORKER carries the worker it went to (ray-reference.md 2.4).
        owner[-1].task_lifecycle_event.node_id = exec_node
        owner[-1].task_lifecycle_event.worker_id = worker_id
        end = common_pb2.FINISHED if ok else common_pb2.FAILED
        error = common_pb2.RayErrorInfo(error_message=draw(texts()))
        extra: dict[str, Any] = {} if ok else {"ray_error_info": error}
        executor = [
            _task_lifecycle(
                stamp, ids, [common_pb2.RUNNING], exec_node, worker_pid=draw(st.integers(1, 2**22))
            ),
            _task_lifecycle(stamp, ids, [end], exec_node, **extra),
        ]
        if draw(st.booleans()):  # the executor's recorder merged both into one event
            merged = executor[0]
            merged.task_lifecycle_event.MergeFrom(executor[1].task_lifecycle_event)
            executor = [merged]
        definition = stamp.event(pb.EVENT_TYPES_BY_NAME["TASK_DEFINITION_EVENT"], _E.CORE_WORKER)
        spec = definition.task_definition_event
        spec.task_id, spec.task_attempt, spec.job_id = task_id, attempt, job_id
        spec.task_name = draw(st.sampled_from(["f", "train_step", "Actor.__init__"]))
        owner = draw(_with_definition(owner, definition))
        if draw(st.booleans()):
            profile = stamp.event(
                pb.EVENT_TYPES_BY_NAME["TASK_PROFILE_EVENT"], _E.CORE_WORKER, node_id=exec_node
            )
            events = profile.task_profile_events
            events.task_id, events.attempt_number, events.job_id = task_id, attempt, job_id
            events.profile_events.events.add(event_name="task:execute", start_time=1, end_time=2)
            executor.append(profile)
        arrivals += draw(_interleave([owner, executor]))
    final = "FINISHED" if final_ok else "FAILED"
    return EntityHistory("task", task_id, tuple(arrivals), final, attempts=retries + 1)


@st.composite
def _actor_history(draw: st.DrawFn) -> EntityHistory:
    stamp = _stamper(draw)
    actor_id, job_id = draw(ray_ids("actor")), draw(ray_ids("job"))
    states: list[Any] = [
        pb.ActorLifecycleEvent.DEPENDENCIES_UNREADY,
        pb.ActorLifecycleEvent.PENDING_CREATION,
    ]
    states.append(pb.ActorLifecycleEvent.ALIVE)
    for _ in range(draw(st.integers(0, 2))):
        states += [pb.ActorLifecycleEvent.RESTARTING, pb.ActorLifecycleEvent.ALIVE]
    if draw(st.booleans()):
        states.append(pb.ActorLifecycleEvent.DEAD)
    lifecycle: list[pb.RayEvent] = []
    for group in draw(_chunks(states)):
        event = stamp.event(pb.EVENT_TYPES_BY_NAME["ACTOR_LIFECYCLE_EVENT"], _E.GCS)
        event.actor_lifecycle_event.actor_id = actor_id
        for state in group:
            t = event.actor_lifecycle_event.state_transitions.add(state=state)
            t.timestamp.FromNanoseconds(stamp.tick())
            if state == pb.ActorLifecycleEvent.ALIVE:
                t.node_id, t.worker_id = draw(ray_ids("node")), draw(ray_ids("worker"))
                t.pid, t.port, t.repr_name = 4242, 10_001, "Counter()"
        lifecycle.append(event)
    definition = stamp.event(pb.EVENT_TYPES_BY_NAME["ACTOR_DEFINITION_EVENT"], _E.GCS)
    spec = definition.actor_definition_event
    spec.actor_id, spec.job_id, spec.class_name = actor_id, job_id, "Counter"
    events = draw(_with_definition(lifecycle, definition))
    final = pb.ActorLifecycleEvent.State.Name(states[-1])
    return EntityHistory("actor", actor_id, tuple(events), final)


@st.composite
def _job_history(draw: st.DrawFn) -> EntityHistory:
    stamp = _stamper(draw)
    job_id = draw(ray_ids("job"))
    states = [pb.DriverJobLifecycleEvent.CREATED]
    if draw(st.booleans()):
        states.append(pb.DriverJobLifecycleEvent.FINISHED)
    lifecycle = []
    for group in draw(_chunks(states)):
        event = stamp.event(pb.EVENT_TYPES_BY_NAME["DRIVER_JOB_LIFECYCLE_EVENT"], _E.GCS)
        event.driver_job_lifecycle_event.job_id = job_id
        for state in group:
            t = event.driver_job_lifecycle_event.state_transitions.add(state=state)
            t.timestamp.FromNanoseconds(stamp.tick())
        lifecycle.append(event)
    definition = stamp.event(pb.EVENT_TYPES_BY_NAME["DRIVER_JOB_DEFINITION_EVENT"], _E.GCS)
    spec = definition.driver_job_definition_event
    spec.job_id, spec.entrypoint, spec.driver_pid = job_id, "python train.py", 31337
    events = draw(_with_definition(lifecycle, definition))
    final = pb.DriverJobLifecycleEvent.State.Name(states[-1])
    return EntityHistory("job", job_id, tuple(events), final)


@st.composite
def _node_history(draw: st.DrawFn) -> EntityHistory:
    stamp = _stamper(draw)
    node_id = draw(ray_ids("node"))
    transitions: list[tuple[Any, Any]] = [(pb.NodeLifecycleEvent.ALIVE, 0)]
    if draw(st.booleans()):
        transitions.append((pb.NodeLifecycleEvent.ALIVE, pb.NodeLifecycleEvent.DRAINING))
    if draw(st.booleans()):
        transitions.append((pb.NodeLifecycleEvent.DEAD, 0))
    lifecycle = []
    for group in draw(_chunks(transitions)):
        event = stamp.event(pb.EVENT_TYPES_BY_NAME["NODE_LIFECYCLE_EVENT"], _E.GCS)
        event.node_lifecycle_event.node_id = node_id
        for state, sub_state in group:
            t = event.node_lifecycle_event.state_transitions.add(state=state)
            t.timestamp.FromNanoseconds(stamp.tick())
            t.alive_sub_state = sub_state
            if state == pb.NodeLifecycleEvent.ALIVE:
                t.resources.update({"CPU": 8.0, "memory": 3.2e10})
            else:
                t.death_info.reason = pb.NodeLifecycleEvent.DeathInfo.EXPECTED_TERMINATION
        lifecycle.append(event)
    definition = stamp.event(pb.EVENT_TYPES_BY_NAME["NODE_DEFINITION_EVENT"], _E.GCS)
    spec = definition.node_definition_event
    spec.node_id, spec.node_ip_address, spec.hostname = node_id, "10.0.0.7", "worker-7"
    events = draw(_with_definition(lifecycle, definition))
    final = pb.NodeLifecycleEvent.State.Name(transitions[-1][0])
    return EntityHistory("node", node_id, tuple(events), final)


_HISTORIES: Final = {
    "task": _task_history(),
    "actor": _actor_history(),
    "job": _job_history(),
    "node": _node_history(),
}


def entity_histories(kind: str | None = None) -> st.SearchStrategy[EntityHistory]:
    """One entity's events in an arrival order real Ray can produce (see the module docstring);
    ``kind`` is one of :data:`HISTORY_KINDS`, or None for any."""
    if kind is None:
        return st.one_of(*_HISTORIES.values())
    try:
        return _HISTORIES[kind]
    except KeyError:
        raise ValueError(
            f"kind must be one of {', '.join(HISTORY_KINDS)} (or None), got {kind!r}."
        ) from None


# -- recorder side: events an app records, before merging -------------------------------------

_TASK_ID: Final = bytes(range(24))
_T0: Final = 1_750_000_000_123_456_789


def _payload_fields(cls: type[RayEventBase]) -> Any:
    return cls.PAYLOAD_TYPE.DESCRIPTOR.fields_by_name


def _entity_kwargs(cls: type[RayEventBase], entity: int) -> dict[str, Any]:
    # By the payload's fields, not the producer's private base classes.
    if "task_id" in _payload_fields(cls):
        attempt_field = "attempt_number" if cls is RayTaskProfileEvent else "task_attempt"
        return {"task_id": _TASK_ID[:-1] + bytes([entity]), attempt_field: entity % 3}
    field = getattr(cls, "ENTITY_FIELD", None)
    if field is not None:
        value = f"sub-{entity}" if field == "submission_id" else bytes([entity]) * 16
        return {field: value}
    return {}


def _transition_states(cls: type[RayEventBase]) -> list[str]:
    transition: Any = cls.PAYLOAD_TYPE.DESCRIPTOR.fields_by_name["state_transitions"].message_type
    return [v.name for v in transition.fields_by_name["state"].enum_type.values]


@st.composite
def entity_events(draw: st.DrawFn, cls: type[RayEventBase]) -> list[RayEventBase]:
    """1 to 6 events of class ``cls`` for one entity, as an app records them into a
    :class:`~trio_events.producer.RayEventRecorder` before it merges them (for merge tests)."""
    entity = draw(st.integers(0, 255))
    n = draw(st.integers(1, 6))
    out: list[RayEventBase] = []
    for i in range(n):
        kw: dict[str, Any] = _entity_kwargs(cls, entity)
        if "state_transitions" in _payload_fields(cls):
            states = draw(st.lists(st.sampled_from(_transition_states(cls)), max_size=3))
            kw["transitions"] = [{"state": s, "timestamp": _T0 + i} for s in states]
        if cls is RayTaskLifecycleEvent:
            if draw(st.booleans()):
                kw["worker_pid"] = draw(st.integers(1, 2**31 - 1))
            if draw(st.booleans()):
                kw["ray_error_info"] = {"error_message": draw(st.text(max_size=8))}
            if draw(st.booleans()):
                kw["actor_repr_name"] = draw(st.text(max_size=8))
        if cls is RayWorkerLifecycleEvent and draw(st.booleans()):
            kw["job_id"] = draw(st.binary(min_size=4, max_size=4))
        if cls is RayTaskProfileEvent:
            kw["profile_events"] = {
                "component_type": "worker",
                "events": [
                    {"event_name": f"e{i}.{j}", "start_time": j, "end_time": j + 1}
                    for j in range(draw(st.integers(0, 3)))
                ],
            }
        if cls is RayActorDefinitionEvent:
            kw["name"] = draw(st.text(max_size=8))
        out.append(
            cls(
                timestamp=_T0 + i,
                severity=draw(st.sampled_from(["INFO", "WARNING", "ERROR"])),
                message=draw(st.text(max_size=5)),
                session_name=f"session-{i}",
                **kw,
            )
        )
    return out
