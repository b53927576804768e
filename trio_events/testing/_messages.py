"""Valid Ray 2.60 messages: events of each type, AddEvents requests, the publisher's JSON POSTs.

Messages are filled by walking Ray's descriptors (so every field of the 2.60 schema is reached),
with field-aware values: ids with Ray's sizes, Timestamps in protobuf's range, open enums. Each
optional field is set after a coin flip that shrinks to "unset", so minimal examples carry
only what a failure needs.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import orjson
from hypothesis import strategies as st

from trio_events import pb
from trio_events.agent._convert import JsonConverter
from trio_events.testing._traits import body_traits
from trio_events.testing._values import (
    enum_numbers,
    ray_ids,
    scalar_values,
    texts,
    timestamp_parts,
    unknown_fields,
    wire_field,
)

if TYPE_CHECKING:
    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.message import Message

#: ``RayEvent`` field holding each event type's payload (``task_profile_events`` is plural).
EVENT_PAYLOAD_FIELDS: Final[dict[int, str]] = {
    number: "task_profile_events" if name == "TASK_PROFILE_EVENT" else name.lower()
    for number, name in pb.EVENT_TYPE_NAMES.items()
    if number != 0
}
#: Fields that identify the entity of a payload; always set, with Ray's id sizes.
ENTITY_FIELDS: Final = frozenset(
    {
        "task_id",
        "task_attempt",
        "attempt_number",
        "job_id",
        "actor_id",
        "node_id",
        "worker_id",
        "placement_group_id",
        "submission_id",
    }
)
_TASK_TYPES: Final = {1, 2, 3, 4}
_GCS, _CORE_WORKER = pb.RayEvent.GCS, pb.RayEvent.CORE_WORKER
_MAX_DEPTH: Final = 8  # deeper than Ray's deepest path (RayEvent ... NodeDeathInfo)
_NEWEST_KNOWN_TYPE: Final = max(EVENT_PAYLOAD_FIELDS)
_NEWEST_KNOWN_FIELD: Final = max(f.number for f in pb.RayEvent.DESCRIPTOR.fields)


def _source_types(event_type: int) -> tuple[int, ...]:
    if event_type in _TASK_TYPES:
        return (_CORE_WORKER,)
    if event_type == pb.EVENT_TYPES_BY_NAME["PLATFORM_EVENT"]:
        return tuple(sorted(pb.RayEvent.SourceType.values()))
    if event_type in (13, 14):  # submission jobs: the job manager
        return (pb.RayEvent.JOBS, _GCS)
    return (_GCS,)


@functools.cache
def _severities(newer_ray: bool) -> st.SearchStrategy[int]:
    known = enum_numbers(pb.RayEvent.Severity.DESCRIPTOR, newer_ray=newer_ray)
    return st.one_of(st.just(pb.RayEvent.INFO), known)


_SESSION_NAMES: Final = st.one_of(st.just("session_2025-06-30_16-50-30_1_1"), texts())


@functools.cache
def _large_maps(value_field: FieldDescriptor, newer_ray: bool) -> st.SearchStrategy[dict[Any, Any]]:
    """Maps of 100 to 300 entries (labels, resources) built cheaply from one drawn value."""

    def build(n: int, value: Any) -> dict[Any, Any]:
        return {f"key-{i:04d}": value for i in range(n)}

    return st.builds(build, st.integers(100, 300), scalar_values(value_field, newer_ray=newer_ray))


@functools.cache
def _choices(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


@functools.cache
def _counts(top: int) -> st.SearchStrategy[int]:
    return st.integers(0, top)


@functools.cache
def _scalar_lists(
    field: FieldDescriptor, newer_ray: bool, *, unique: bool = False
) -> st.SearchStrategy[list[Any]]:
    return st.lists(scalar_values(field, newer_ray=newer_ray), max_size=4, unique=unique)


@functools.cache
def _coin(depth: int) -> st.SearchStrategy[bool]:
    """Whether to set an optional field: even odds at the top, rarer deeper down (a nested
    message with every field set is slow to generate and rarely what a failure needs)."""
    odds = 1 if depth <= 1 else 2
    return st.integers(0, odds).map(lambda n: n == odds)


def _fill(
    draw: st.DrawFn,
    message: Message,
    depth: int,
    *,
    newer_ray: bool,
    force: frozenset[str] = frozenset(),
) -> None:
    """Sets a random subset of ``message``'s fields (all of ``force``), recursively."""
    descriptor = message.DESCRIPTOR
    in_real_oneof: set[str] = set()
    for oneof in descriptor.oneofs:
        if len(oneof.fields) > 1:  # proto3 ``optional`` makes one-member synthetic oneofs
            in_real_oneof |= {f.name for f in oneof.fields}
            chosen = draw(_choices((None, *oneof.fields)))
            if chosen is not None:
                _set(draw, message, chosen, depth, newer_ray=newer_ray)
    for field in descriptor.fields:
        if field.name in in_real_oneof:
            continue
        if field.name in force or draw(_coin(depth)):
            _set(draw, message, field, depth, newer_ray=newer_ray)


def _set(
    draw: st.DrawFn,
    message: Message,
    field: Any,  # a FieldDescriptor (upb's or the Python one: typeshed lists both)
    depth: int,
    *,
    newer_ray: bool,
) -> None:
    name = field.name
    sub = field.message_type
    if sub is not None and sub.GetOptions().map_entry:
        key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
        mapping = getattr(message, name)
        if value_field.message_type is None and draw(_counts(9)) == 9:
            mapping.update(draw(_large_maps(value_field, newer_ray)))
            return
        keys = draw(_scalar_lists(key_field, newer_ray, unique=True))
        for key in keys:
            if value_field.message_type is not None:
                _fill(draw, mapping[key], depth + 1, newer_ray=newer_ray)
            else:
                mapping[key] = draw(scalar_values(value_field, newer_ray=newer_ray))
        return
    if field.is_repeated:
        values = getattr(message, name)
        if sub is not None:
            for _ in range(draw(_counts(3)) if depth < _MAX_DEPTH else 0):
                _fill_message(draw, values.add(), depth + 1, newer_ray=newer_ray)
        else:
            values.extend(draw(_scalar_lists(field, newer_ray)))
        return
    if sub is not None:
        target = getattr(message, name)
        target.SetInParent()
        if depth < _MAX_DEPTH:
            _fill_message(draw, target, depth + 1, newer_ray=newer_ray)
        return
    setattr(message, name, draw(scalar_values(field, newer_ray=newer_ray)))


def _fill_message(draw: st.DrawFn, message: Message, depth: int, *, newer_ray: bool) -> None:
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        seconds, nanos = draw(timestamp_parts())
        message.seconds, message.nanos = seconds, nanos  # type: ignore[attr-defined]
        return
    _fill(draw, message, depth, newer_ray=newer_ray)


def _event_type_number(event_type: int | str | None) -> int | None:
    if event_type is None or isinstance(event_type, int):
        if event_type is not None and event_type not in EVENT_PAYLOAD_FIELDS:
            raise ValueError(
                f"event_type must be one of Ray 2.60's 17 event types (1-17), got {event_type}."
            )
        return event_type
    try:
        return pb.EVENT_TYPES_BY_NAME[event_type]
    except KeyError:
        raise ValueError(
            f"event_type must be a RayEvent.EventType name such as 'TASK_LIFECYCLE_EVENT', "
            f"got {event_type!r}."
        ) from None


def ray_events(
    event_type: int | str | None = None,
    *,
    newer_ray: bool = True,
    several_payloads: bool = False,
) -> st.SearchStrategy[pb.RayEvent]:
    """A ``RayEvent`` as Ray 2.60 serializes it: a 28-byte ``event_id`` and ``node_id``, the
    source type of the process that emits ``event_type``, a timestamp, and the payload of
    ``event_type`` (any of the 17 when None) with its entity ids always set.

    With ``newer_ray`` (the default) some events carry what a newer Ray may send and protobuf
    keeps: enum numbers this schema does not name, unknown fields, and (when ``event_type`` is
    None) an event type above 17 whose payload is an unknown field. ``several_payloads`` sets up
    to two more payloads, which the schema allows (``RayEvent`` has no oneof) and Ray never does.
    """
    return _ray_events(_event_type_number(event_type), newer_ray, several_payloads)


@functools.cache
def _ray_events(
    number: int | None, newer_ray: bool, several_payloads: bool
) -> st.SearchStrategy[pb.RayEvent]:
    return _draw_ray_event(number, newer_ray, several_payloads)


@st.composite
def _draw_ray_event(
    draw: st.DrawFn, number: int | None, newer_ray: bool, several_payloads: bool
) -> pb.RayEvent:
    newer_type = number is None and newer_ray and draw(_counts(19)) == 19
    if number is None:
        number = draw(_choices(tuple(sorted(EVENT_PAYLOAD_FIELDS))))
    event = pb.RayEvent()
    event.event_id = draw(ray_ids("event"))
    event.source_type = draw(_choices(_source_types(number)))
    seconds, nanos = draw(timestamp_parts())
    event.timestamp.seconds, event.timestamp.nanos = seconds, nanos
    event.severity = draw(_severities(newer_ray))  # type: ignore[assignment]
    event.message = draw(texts())
    event.session_name = draw(_SESSION_NAMES)
    event.node_id = draw(ray_ids("node"))
    event.event_type = number  # type: ignore[assignment]
    names = [EVENT_PAYLOAD_FIELDS[number]]
    if several_payloads:
        names += draw(st.lists(st.sampled_from(sorted(EVENT_PAYLOAD_FIELDS.values())), max_size=2))
    for name in names:
        payload = getattr(event, name)
        payload.SetInParent()
        _fill(draw, payload, 1, newer_ray=newer_ray, force=ENTITY_FIELDS)
    if newer_type:
        # Drawn after a full payload, so this path is never "simpler" to hypothesis's shrinker
        # (which prefers fewer choices) than an ordinary event.
        for name in names:
            event.ClearField(name)  # type: ignore[arg-type]
        event.event_type = draw(st.integers(_NEWEST_KNOWN_TYPE + 1, 1000))  # type: ignore[assignment]
        payload_number = draw(st.integers(_NEWEST_KNOWN_FIELD + 1, 200))
        event.MergeFromString(wire_field(payload_number, 2, draw(st.binary(max_size=40))))
        return event
    if newer_ray and draw(st.booleans()):
        getattr(event, names[0]).MergeFromString(draw(unknown_fields()))
    if newer_ray and draw(st.booleans()):
        event.MergeFromString(draw(unknown_fields()))
    return event


@st.composite
def add_events_requests(
    draw: st.DrawFn, *, max_events: int = 10, newer_ray: bool = True
) -> pb.AddEventsRequest:
    """An ``AddEventsRequest`` as a core worker or the GCS sends it: 1 to ``max_events`` events
    and, sometimes, dropped task attempts in ``task_events_metadata``."""
    request = pb.AddEventsRequest()
    data = request.events_data
    for event in draw(st.lists(ray_events(newer_ray=newer_ray), min_size=1, max_size=max_events)):
        data.events.add().CopyFrom(event)
    for _ in range(draw(st.integers(0, 2))):
        attempt = data.task_events_metadata.dropped_task_attempts.add()
        attempt.task_id = draw(ray_ids("task"))
        attempt.attempt_number = draw(st.integers(0, 5))
    return request


@functools.cache
def _converter(preserving_proto_field_name: bool) -> JsonConverter:
    return JsonConverter(preserving_proto_field_name=preserving_proto_field_name)


@final
@attrs.frozen
class PublisherPost:
    """One POST of Ray's HTTP publisher: ``body`` is the JSON array of ``events`` as
    ``json_format.MessageToJson`` prints them (protobuf field names if ``proto_names``)."""

    events: tuple[pb.RayEvent, ...]
    proto_names: bool
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)

    def traits(self) -> list[str]:
        """The unusual things this body holds, e.g. ``"whole-second timestamps"``: what a
        receiver most often trips over (see :func:`body_traits`)."""
        return body_traits(orjson.loads(self.body))

    def describe(self) -> str:
        """A short description: how many events of which types, the key style, the traits."""
        counts: dict[str, int] = {}
        for event in self.events:
            name = pb.EVENT_TYPE_NAMES.get(event.event_type, f"event type {event.event_type}")
            counts[name] = counts.get(name, 0) + 1
        kinds = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        style = "proto field names" if self.proto_names else "camelCase"
        traits = "".join(f"; {trait}" for trait in self.traits())
        return f"{len(self.events)} event(s) ({kinds}), {style}, {len(self.body)} bytes{traits}"


def make_post(events: list[pb.RayEvent], *, proto_names: bool = False) -> PublisherPost:
    """The POST Ray's publisher would send for ``events``, converted by trio-events' converter
    (equal to protobuf's ``MessageToJson``)."""
    body = _converter(proto_names).dumps(events)
    return PublisherPost(events=tuple(events), proto_names=proto_names, body=body)


@st.composite
def publisher_posts(
    draw: st.DrawFn,
    *,
    max_events: int = 10,
    proto_names: bool | None = None,
    newer_ray: bool = True,
) -> PublisherPost:
    """What Ray's publisher POSTs: 1 to ``max_events`` events as one JSON array, camelCase keys
    or (``RAY_DASHBOARD_AGGREGATOR_AGENT_PRESERVE_PROTO_FIELD_NAME``) proto field names; both
    when ``proto_names`` is None."""
    events = draw(st.lists(ray_events(newer_ray=newer_ray), min_size=1, max_size=max_events))
    names = draw(st.booleans()) if proto_names is None else proto_names
    return make_post(events, proto_names=names)


def json_bodies(
    *, max_events: int = 10, proto_names: bool | None = None, newer_ray: bool = True
) -> st.SearchStrategy[bytes]:
    """Just the body bytes of :func:`publisher_posts`."""
    return publisher_posts(max_events=max_events, proto_names=proto_names, newer_ray=newer_ray).map(
        lambda post: post.body
    )
