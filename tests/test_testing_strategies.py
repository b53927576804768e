"""The public strategies keep their documented guarantees and shrink to minimal examples."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from trio_events import pb
from trio_events._proto.src.ray.protobuf import common_pb2
from trio_events.agent import JsonConverter
from trio_events.testing import strategies as s

SEARCH = settings(
    database=None, max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck)
)
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENTITY_SIZES = {
    "task_id": 24,
    "job_id": 4,
    "actor_id": 16,
    "node_id": 28,
    "worker_id": 28,
    "placement_group_id": 18,
}


def fraction_digits(stamp: str) -> int:
    seconds = stamp.rstrip("Z").rpartition(":")[2]
    return len(seconds.partition(".")[2])


@pytest.mark.parametrize("event_type", sorted(s.EVENT_PAYLOAD_FIELDS))
@FEW
@given(data=st.data())
def test_each_event_type_is_valid_with_rays_id_sizes(event_type: int, data: st.DataObject) -> None:
    event = data.draw(s.ray_events(event_type, newer_ray=False))
    assert event.event_type == event_type
    assert len(event.event_id) == len(event.node_id) == 28
    payload = getattr(event, s.EVENT_PAYLOAD_FIELDS[event_type])
    for name, size in ENTITY_SIZES.items():
        if name in payload.DESCRIPTOR.fields_by_name:
            assert len(getattr(payload, name)) == size, name
    assert pb.RayEvent.FromString(event.SerializeToString()) == event
    # Strictly 2.60: every enum has a name, so the JSON holds names, never numbers.
    value = json_format.MessageToDict(event, always_print_fields_with_no_presence=True)
    assert isinstance(value["eventType"], str)
    assert isinstance(value["severity"], str)
    assert s.EVENT_PAYLOAD_FIELDS[event_type] in {f.name for f, _ in event.ListFields()}


@FEW
@given(s.publisher_posts(max_events=3))
def test_posts_are_the_converters_json_of_their_events(post: s.PublisherPost) -> None:
    body = orjson.loads(post.body)
    assert 1 <= len(body) <= 3
    expected = [
        json_format.MessageToDict(
            e,
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=post.proto_names,
        )
        for e in post.events
    ]
    assert (
        orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)
        or body == expected
    )  # NaN compares unequal; the byte form does not
    assert ("eventId" in body[0]) != post.proto_names
    assert post.headers == (("Content-Type", "application/json"),)


@settings(FEW, max_examples=10)
@given(s.add_events_requests(max_events=4))
def test_add_events_requests_round_trip(request_: pb.AddEventsRequest) -> None:
    assert 1 <= len(request_.events_data.events) <= 4
    data = request_.SerializeToString(deterministic=True)
    assert pb.AddEventsRequest.FromString(data).SerializeToString(deterministic=True) == data
    for attempt in request_.events_data.task_events_metadata.dropped_task_attempts:
        assert len(attempt.task_id) == 24


@pytest.mark.parametrize("digits", [0, 3, 6, 9])
def test_timestamps_reach_every_precision(digits: int) -> None:
    converter = JsonConverter()
    found = find(
        s.ray_events(newer_ray=False),
        lambda e: fraction_digits(converter.to_dict(e)["timestamp"]) == digits,
        settings=SEARCH,
    )
    assert fraction_digits(converter.to_dict(found)["timestamp"]) == digits


@pytest.mark.parametrize(
    ("predicate", "year"), [(lambda y: y <= 1, "0001"), (lambda y: y >= 9999, "9999")]
)
def test_timestamps_reach_protobufs_limits(predicate, year: str) -> None:
    converter = JsonConverter()
    found = find(s.timestamps(), lambda t: predicate(t.ToDatetime().year), settings=SEARCH)
    assert json_format.MessageToJson(found).strip('"').startswith(year)
    assert converter  # the converter handles them too (checked in test_json)


def test_newer_ray_values_occur() -> None:
    unknown_type = find(s.ray_events(), lambda e: e.event_type > 17, settings=SEARCH)
    assert unknown_type.event_type == 18  # shrunk to the first number after 2.60's
    unknown_enum = find(
        s.ray_events(pb.EVENT_TYPES_BY_NAME["TASK_DEFINITION_EVENT"]),
        lambda e: e.severity > 6,
        settings=SEARCH,
    )
    assert json_format.MessageToDict(unknown_enum)["severity"] == 7


def test_failing_examples_shrink_to_minimal_ones() -> None:
    small = s.ray_events("DRIVER_JOB_LIFECYCLE_EVENT")  # few fields: quick to shrink
    event = find(small, lambda e: e.message != "", settings=SEARCH)
    assert event.message == "0"
    assert (event.timestamp.seconds, event.timestamp.nanos) == (0, 0)  # the epoch
    assert event.event_id == event.node_id == bytes(28)
    fraction = find(small, lambda e: e.timestamp.nanos != 0, settings=SEARCH)
    assert (fraction.timestamp.seconds, fraction.timestamp.nanos) == (0, 1_000_000)
    post = find(s.publisher_posts(max_events=3), lambda p: len(p.events) >= 2, settings=SEARCH)
    assert len(post.events) == 2


@pytest.mark.parametrize("kind", s.HISTORY_KINDS)
@FEW
@given(data=st.data())
def test_entity_histories_are_one_entity_in_a_possible_order(
    kind: str, data: st.DataObject
) -> None:
    history = data.draw(s.entity_histories(kind))
    assert history.kind == kind
    assert len({e.event_id for e in history.events}) == len(history.events)
    transitions = []
    for event in history.events:
        payload = getattr(event, s.EVENT_PAYLOAD_FIELDS[event.event_type])
        ids = [
            v for f, v in payload.ListFields() if f.name in ENTITY_SIZES and v == history.entity_id
        ]
        assert ids, (kind, event)
        for t in getattr(payload, "state_transitions", []):
            attempt = getattr(payload, "task_attempt", 0)
            transitions.append((attempt, t.timestamp.ToNanoseconds(), t.state, t.DESCRIPTOR))
    # Reconstruction: the latest transition of the latest attempt is the final state.
    attempt, _, state, descriptor = max(transitions, key=lambda t: (t[0], t[1]))
    assert (
        descriptor.fields_by_name["state"].enum_type.values_by_number[state].name
        == history.final_state
    )
    assert attempt == history.attempts - 1


def test_histories_reach_rays_awkward_orders() -> None:
    late_definition = find(
        s.entity_histories("actor"), lambda h: h.events[0].event_type != 9, settings=SEARCH
    )
    assert 9 in [e.event_type for e in late_definition.events[1:]]
    assert late_definition.events[0].event_type == 10  # a lifecycle event came first
    executor_first = find(
        s.entity_histories("task"),
        lambda h: any(
            t.state == common_pb2.RUNNING
            for t in h.events[0].task_lifecycle_event.state_transitions
        ),
        settings=SEARCH,
    )
    # The executor's RUNNING arrived before the owner's SUBMITTED_TO_WORKER: a receiver must
    # not assume the owner's events come first.
    submitted = [
        i
        for i, e in enumerate(executor_first.events)
        if any(
            t.state == common_pb2.SUBMITTED_TO_WORKER
            for t in e.task_lifecycle_event.state_transitions
        )
    ]
    assert submitted
    assert submitted[0] > 0
    retried = find(s.entity_histories("task"), lambda h: h.attempts == 3, settings=SEARCH)
    assert {e.task_lifecycle_event.task_attempt for e in retried.events if e.event_type == 2} == {
        0,
        1,
        2,
    }


@pytest.mark.parametrize("kind", s.WIRE_DAMAGE)
@settings(FEW, max_examples=5)
@given(data=st.data())
def test_hostile_event_bytes_do_what_they_say(kind: str, data: st.DataObject) -> None:
    hostile = data.draw(s.hostile_event_bytes(kinds=(kind,), oversized_bytes=1000))
    assert hostile.kind == kind
    if kind == "unknown_fields":
        pb.RayEvent.FromString(hostile.data)  # still valid
    elif kind == "oversized":
        assert len(pb.RayEvent.FromString(hostile.data).message) >= 1000
    elif kind == "invalid_utf8":
        with pytest.raises(DecodeError):
            pb.RayEvent.FromString(hostile.data)
    else:
        assert hostile.data


@settings(FEW, max_examples=5)
@given(
    bad=s.hostile_add_events_requests(kinds=("invalid_utf8",)),
    fine=s.hostile_add_events_requests(kinds=("unknown_fields",)),
)
def test_hostile_requests_carry_the_damaged_event(bad: s.Hostile, fine: s.Hostile) -> None:
    with pytest.raises(DecodeError):
        pb.AddEventsRequest.FromString(bad.data)
    assert len(pb.AddEventsRequest.FromString(fine.data).events_data.events) == 1


@pytest.mark.parametrize("kind", s.JSON_DAMAGE)
@settings(FEW, max_examples=5)
@given(data=st.data())
def test_hostile_json_bodies_do_what_they_say(kind: str, data: st.DataObject) -> None:
    hostile = data.draw(s.hostile_json_bodies(kinds=(kind,), oversized_bytes=1000))
    if kind == "invalid_utf8":
        with pytest.raises(UnicodeDecodeError):
            hostile.data.decode("utf-8")
    elif kind in ("truncated", "deep_nesting"):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(hostile.data)
    elif kind == "not_an_array":
        assert not isinstance(orjson.loads(hostile.data), list)
    elif kind == "oversized":
        assert len(hostile.data) > 1000
    else:
        assert isinstance(orjson.loads(hostile.data), list)


def test_strategies_reject_unknown_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"^event_type must be a RayEvent.EventType name such as 'TASK_LIFECYCLE_EVENT', got 'TASK'\.$",
    ):
        s.ray_events("TASK")
    with pytest.raises(
        ValueError, match=r"^event_type must be one of Ray 2.60's 17 event types \(1-17\), got 0\.$"
    ):
        s.ray_events(0)
    with pytest.raises(
        ValueError, match=r"^kind must be one of task, actor, job, node \(or None\), got 'pg'\.$"
    ):
        s.entity_histories("pg")
    with pytest.raises(
        ValueError, match=r"^kinds must be some of invalid_utf8, .*; got \['bad'\]\.$"
    ):
        s.hostile_event_bytes(kinds=("bad",))


def test_the_plugin_imports_nothing_heavy() -> None:
    """pytest loads the plugin in every run: it must not import hypothesis or the agent."""
    code = (
        "import sys, trio_events.testing._plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('hypothesis', 'trio_events.agent'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_body_traits_name_what_receivers_trip_over() -> None:
    body = [
        {
            "eventType": 18,
            "severity": 7,
            "timestamp": "1970-01-01T00:00:00Z",
            "message": "a\x00b\U0001f600",
            "labels": {f"k{i}": "v" for i in range(100)},
            "stateTransitions": [{"timestamp": "9999-12-31T23:59:59.123456789Z"}],
        }
    ]
    assert s.body_traits(body) == [
        "whole-second timestamps",
        "nanosecond timestamps",
        "timestamps before 1970 or after 2262",
        "an event type newer than 2.60",
        "enum numbers",
        "control characters in strings",
        "characters beyond the BMP",
        "a map of 100+ entries",
    ]
    assert s.body_traits([{"timestamp": "2025-06-30T16:50:30.123Z", "severity": "INFO"}]) == []
