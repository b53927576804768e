"""The event model: construction, validation, merge semantics (ray-reference.md 2.4), serialization."""

from __future__ import annotations

import datetime as dt
from functools import reduce
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_events import pb
from trio_events.producer._event_kinds import _LifecycleEvent, _SingleIdEvent, _TaskAttemptEvent
from trio_events.producer._events import (
    EVENT_CLASSES,
    RayActorDefinitionEvent,
    RayActorLifecycleEvent,
    RayDriverJobLifecycleEvent,
    RayNodeLifecycleEvent,
    RayPlatformEvent,
    RaySubmissionJobDefinitionEvent,
    RaySubmissionJobLifecycleEvent,
    RayTaskDefinitionEvent,
    RayTaskLifecycleEvent,
    RayTaskProfileEvent,
    RayWorkerLifecycleEvent,
)

if TYPE_CHECKING:
    from trio_events.producer._event_base import RayEventBase

TASK_ID = bytes(range(24))
T0 = 1_750_000_000_123_456_789


def _entity_kwargs(cls: type[RayEventBase], entity: int) -> dict[str, Any]:
    if issubclass(cls, _TaskAttemptEvent):
        attempt_field = "attempt_number" if cls is RayTaskProfileEvent else "task_attempt"
        return {"task_id": TASK_ID[:-1] + bytes([entity]), attempt_field: entity % 3}
    if issubclass(cls, _SingleIdEvent):
        field = cls.ENTITY_FIELD
        value = f"sub-{entity}" if field == "submission_id" else bytes([entity]) * 16
        return {field: value}
    return {}


def _transition_states(cls: type[RayEventBase]) -> list[str]:
    transition: Any = cls.PAYLOAD_TYPE.DESCRIPTOR.fields_by_name["state_transitions"].message_type
    return [v.name for v in transition.fields_by_name["state"].enum_type.values]


@st.composite
def events_of_one_entity(draw: st.DrawFn, cls: type[RayEventBase]) -> list[RayEventBase]:
    entity = draw(st.integers(0, 255))
    n = draw(st.integers(1, 6))
    out: list[RayEventBase] = []
    for i in range(n):
        kw: dict[str, Any] = _entity_kwargs(cls, entity)
        if issubclass(cls, _LifecycleEvent):
            states = draw(st.lists(st.sampled_from(_transition_states(cls)), max_size=3))
            kw["transitions"] = [{"state": s, "timestamp": T0 + i} for s in states]
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
                timestamp=T0 + i,
                severity=draw(st.sampled_from(["INFO", "WARNING", "ERROR"])),
                message=draw(st.text(max_size=5)),
                session_name=f"session-{i}",
                **kw,
            )
        )
    return out


def _fold(events: list[RayEventBase]) -> RayEventBase:
    def step(acc: RayEventBase, ev: RayEventBase) -> RayEventBase:
        acc.merge(ev)
        return acc

    return reduce(step, [e.copy() for e in events[1:]], events[0].copy())


MERGEABLE = [cls for cls in EVENT_CLASSES.values() if cls.SUPPORTS_MERGE]


@pytest.mark.parametrize("cls", MERGEABLE, ids=lambda c: c.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_merge_is_associative_and_keeps_the_first_event(
    cls: type[RayEventBase], data: st.DataObject
) -> None:
    events = data.draw(events_of_one_entity(cls))
    split = data.draw(st.integers(1, len(events)))
    whole = _fold(events).serialize()
    if split < len(events):
        left, right = _fold(events[:split]), _fold(events[split:])
        left.merge(right)
        assert left.serialize() == whole
        assert left.merged_count == len(events)
    first = events[0].serialize()
    # The first event's id and top-level fields survive every merge.
    for field in ("event_id", "source_type", "event_type", "timestamp", "severity", "message"):
        assert getattr(whole, field) == getattr(first, field)
    assert whole.session_name == first.session_name
    # Merging never mutates the events that were merged in.
    assert events[-1].serialize().event_id == events[-1].event_id


@pytest.mark.parametrize(
    "cls", [c for c in MERGEABLE if issubclass(c, _LifecycleEvent)], ids=lambda c: c.__name__
)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_merge_appends_transitions_in_order(cls: type[RayEventBase], data: st.DataObject) -> None:
    events = data.draw(events_of_one_entity(cls))
    merged: Any = _fold(events).payload
    expected = [t for e in events for t in e.payload.state_transitions]  # type: ignore[attr-defined]
    assert list(merged.state_transitions) == expected


@settings(max_examples=300, deadline=None)
@given(events=events_of_one_entity(RayTaskLifecycleEvent))
def test_task_lifecycle_scalars_are_last_writer_wins(events: list[RayEventBase]) -> None:
    merged: Any = _fold(events).payload
    for field in ("worker_pid", "actor_repr_name", "ray_error_info"):
        writers = (
            [e.payload for e in events if e.payload.HasField(field)]
            if field != "worker_pid"
            else [
                e.payload
                for e in events
                if e.payload.worker_pid  # type: ignore[attr-defined]
            ]
        )
        if writers:
            assert getattr(merged, field) == getattr(writers[-1], field)


@pytest.mark.parametrize("cls", list(EVENT_CLASSES.values()), ids=lambda c: c.__name__)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_serialize_round_trips_through_the_wire(
    cls: type[RayEventBase], data: st.DataObject
) -> None:
    events = data.draw(events_of_one_entity(cls))
    for event in events:
        wire = event.serialize()
        parsed: Any = pb.RayEvent.FromString(wire.SerializeToString())
        assert parsed == wire
        assert parsed.event_id == event.event_id
        assert len(event.event_id) == 28
        assert parsed.event_type == cls.EVENT_TYPE
        assert parsed.timestamp.seconds * 10**9 + parsed.timestamp.nanos == event.timestamp_ns
        name = pb.RayEvent.DESCRIPTOR.fields_by_number[cls.PAYLOAD_FIELD_NUMBER].name
        assert parsed.HasField(name)
        assert getattr(parsed, name) == event.payload
        rebuilt = cls.from_payload(
            getattr(parsed, name),
            timestamp_ns=event.timestamp_ns,
            severity=parsed.severity,
            message=parsed.message,
            session_name=parsed.session_name,
            source_type=parsed.source_type,
            event_id=parsed.event_id,
        )
        assert rebuilt.serialize() == wire


def test_every_event_type_has_a_class_bound_to_its_payload_field() -> None:
    assert sorted(EVENT_CLASSES) == list(range(1, 18))
    for number, cls in EVENT_CLASSES.items():
        field = pb.RayEvent.DESCRIPTOR.fields_by_number[cls.PAYLOAD_FIELD_NUMBER]
        assert field.message_type is cls.PAYLOAD_TYPE.DESCRIPTOR
        assert pb.EVENT_TYPE_NAMES[number].lower().startswith(field.name.split("_event")[0][:4])


def test_event_ids_are_minted_at_creation_and_stable() -> None:
    a = RayDriverJobLifecycleEvent(job_id=b"\x01\x00\x00\x00", state="CREATED")
    b = RayDriverJobLifecycleEvent(job_id=b"\x01\x00\x00\x00", state="FINISHED")
    assert a.event_id != b.event_id
    assert a.serialize().event_id == a.serialize().event_id == a.event_id


def test_ray_merge_example_driver_job_created_then_finished() -> None:
    # Ray's TestMergeEvents: one event, transitions [CREATED, FINISHED], first's fields kept.
    a = RayDriverJobLifecycleEvent(job_id=b"\x01\x00\x00\x00", state="CREATED", session_name="s")
    b = RayDriverJobLifecycleEvent(job_id=b"\x01\x00\x00\x00", state="FINISHED", session_name="x")
    a.merge(b)
    wire = a.serialize()
    assert wire.source_type == pb.RayEvent.GCS
    assert wire.session_name == "s"
    assert [t.state for t in wire.driver_job_lifecycle_event.state_transitions] == [1, 2]


def test_definitions_keep_the_first() -> None:
    a = RayTaskDefinitionEvent(task_id=TASK_ID, task_attempt=0, task_name="first")
    b = RayTaskDefinitionEvent(task_id=TASK_ID, task_attempt=0, task_name="second")
    a.merge(b)
    assert a.serialize().task_definition_event.task_name == "first"


def test_worker_lifecycle_fills_job_id_only_when_empty() -> None:
    a = RayWorkerLifecycleEvent(worker_id=b"w" * 28, state="ALIVE")
    a.merge(RayWorkerLifecycleEvent(worker_id=b"w" * 28, job_id=b"j001", state="DEAD"))
    a.merge(RayWorkerLifecycleEvent(worker_id=b"w" * 28, job_id=b"j002"))
    assert a.serialize().worker_lifecycle_event.job_id == b"j001"


def test_task_attempts_are_separate_entities() -> None:
    a = RayTaskLifecycleEvent(task_id=TASK_ID, task_attempt=0, state="RUNNING")
    b = RayTaskLifecycleEvent(task_id=TASK_ID, task_attempt=1, state="RUNNING")
    assert a.entity_id != b.entity_id
    with pytest.raises(
        ValueError,
        match=r"^cannot merge a RayTaskLifecycleEvent of entity .* only events with the same entity id and type merge\.$",
    ):
        a.merge(b)


def test_different_types_of_one_entity_do_not_merge() -> None:
    a = RayActorDefinitionEvent(actor_id=b"a" * 16)
    b = RayActorLifecycleEvent(actor_id=b"a" * 16, state="ALIVE")
    assert a.merge_key != b.merge_key
    with pytest.raises(ValueError, match="same entity id and type"):
        a.merge(b)


def test_platform_events_never_merge() -> None:
    a = RayPlatformEvent(object_kind="Pod", entity_id=b"uid")
    b = RayPlatformEvent(object_kind="Pod", entity_id=b"uid")
    assert a.merge_key != b.merge_key
    with pytest.raises(TypeError, match=r"^RayPlatformEvent events are never merged\.$"):
        a.merge(b)


def test_constructor_takes_ordinary_python_values() -> None:
    when = dt.datetime(2025, 6, 30, 16, 50, 30, 130457, tzinfo=dt.UTC)
    event = RayNodeLifecycleEvent(
        node_id=b"n" * 28,
        state="ALIVE",
        resources={"CPU": 4, "memory": 1.5e9},
        alive_sub_state=1,
        timestamp=when,
        severity="WARNING",
        source_type="RAYLET",
    )
    wire = event.serialize()
    assert wire.timestamp.ToDatetime(tzinfo=dt.UTC) == when
    transition = wire.node_lifecycle_event.state_transitions[0]
    assert transition.timestamp == wire.timestamp
    assert dict(transition.resources) == {"CPU": 4.0, "memory": 1.5e9}
    assert transition.alive_sub_state == pb.NodeLifecycleEvent.DRAINING
    assert wire.severity == pb.RayEvent.WARNING
    assert wire.source_type == pb.RayEvent.RAYLET


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"task_id": "ab"},
            TypeError,
            r"^RayTaskDefinitionEvent\.task_id must be bytes \(use bytes\.fromhex\(\) for a hex id\), got str\.$",
        ),
        (
            {"task_id": b"t", "language": "RUST"},
            ValueError,
            r"^RayTaskDefinitionEvent\.language has no value named 'RUST'; valid names are: PYTHON, JAVA, CPP\.$",
        ),
        (
            {"task_id": b"t", "language": 7},
            ValueError,
            r"^RayTaskDefinitionEvent\.language has no value 7; valid values are: PYTHON=0, JAVA=1, CPP=2\.$",
        ),
        (
            {"task_id": b"t", "task_attempt": 2**31},
            ValueError,
            r"^RayTaskDefinitionEvent\.task_attempt must be between -2147483648 and 2147483647, got 2147483648\.$",
        ),
        (
            {"task_id": b"t", "required_resources": [1]},
            TypeError,
            r"^RayTaskDefinitionEvent\.required_resources must be a dict, got list\.$",
        ),
        (
            {"task_id": b"t", "nope": 1},
            TypeError,
            r"^RayTaskDefinitionEvent has no field 'nope'; valid fields are: .*\.$",
        ),
        ({"task_attempt": 1}, TypeError, r"^RayTaskDefinitionEvent needs task_id\.$"),
        (
            {"task_id": b"t", "timestamp": dt.datetime(2025, 1, 1)},
            ValueError,
            r"^RayTaskDefinitionEvent timestamp is a naive datetime; pass a timezone-aware one, e\.g\. datetime\.now\(timezone\.utc\)\.$",
        ),
        (
            {"task_id": b"t", "severity": "LOUD"},
            ValueError,
            r"^RayTaskDefinitionEvent severity has no value named 'LOUD'; valid names are: .*\.$",
        ),
    ],
)
def test_constructor_errors_are_sentences(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RayTaskDefinitionEvent(**kwargs)


def test_submission_job_transition_message_has_its_own_keyword() -> None:
    event = RaySubmissionJobLifecycleEvent(
        submission_id="raysubmit_1", state="FAILED", state_message="exit 1", message="base"
    )
    wire = event.serialize()
    assert wire.message == "base"
    assert wire.submission_job_lifecycle_event.state_transitions[0].message == "exit 1"


def test_from_payload_rejects_the_wrong_message() -> None:
    with pytest.raises(
        TypeError,
        match=r"^RayActorLifecycleEvent\.from_payload takes a ray\.rpc\.events\.ActorLifecycleEvent, got a ray\.rpc\.events\.ActorDefinitionEvent\.$",
    ):
        RayActorLifecycleEvent.from_payload(pb.ActorDefinitionEvent())


def test_platform_event_payload_message_has_its_own_keyword() -> None:
    event = RayPlatformEvent(
        object_kind="Pod", reason="OOMKilled", platform_message="container exceeded", message="m"
    )
    wire = event.serialize()
    assert wire.message == "m"
    assert wire.platform_event.message == "container exceeded"
    assert wire.platform_event.reason == "OOMKilled"


def test_two_submission_job_definitions_of_one_id_are_both_kept() -> None:
    # Ray 2.60 builds these in Python (CreatePythonRayEvent): a PythonRayEvent never merges.
    first = RaySubmissionJobDefinitionEvent(submission_id="raysubmit_1", entrypoint="a.py")
    second = RaySubmissionJobDefinitionEvent(submission_id="raysubmit_1", entrypoint="b.py")
    assert first.merge_key != second.merge_key
    with pytest.raises(TypeError, match=r"^RaySubmissionJobDefinitionEvent events are never"):
        first.merge(second)


def test_two_log_only_updates_of_one_attempt_combine_the_log_info() -> None:
    start = RayTaskLifecycleEvent(
        task_id=b"t" * 24,
        task_attempt=0,
        task_log_info={"stdout_file": "out.log", "stderr_file": "err.log", "stdout_start": 10},
    )
    end = RayTaskLifecycleEvent(
        task_id=b"t" * 24, task_attempt=0, task_log_info={"stdout_end": 99, "stderr_end": 7}
    )
    start.merge(end)
    info: Any = start.payload.task_log_info  # type: ignore[attr-defined]
    assert (info.stdout_file, info.stderr_file) == ("out.log", "err.log")
    assert (info.stdout_start, info.stdout_end, info.stderr_end) == (10, 99, 7)
    assert not info.HasField("stderr_start")  # never set by either update
    # A later writer still wins a field both set.
    again = RayTaskLifecycleEvent(
        task_id=b"t" * 24, task_attempt=0, task_log_info={"stdout_file": "moved.log"}
    )
    start.merge(again)
    assert start.payload.task_log_info.stdout_file == "moved.log"  # type: ignore[attr-defined]
    assert start.payload.task_log_info.stdout_end == 99  # type: ignore[attr-defined]
