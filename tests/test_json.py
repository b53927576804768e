"""The fast JSON converter against its oracle, protobuf's own ``json_format``.

The oracle is exactly what Ray's HTTP publisher does per event: ``json.loads(MessageToJson(m,
always_print_fields_with_no_presence=True, preserving_proto_field_name=flag))``. Messages are
generated from descriptors, so every field kind of every Ray event payload is exercised, plus two
synthetic schemas for what Ray's schema lacks (other map key types, 32-bit floats, zigzag and
fixed-width integers, well-known types, recursion, custom JSON names, keyword field names, proto2
with extensions and closed enums).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import TYPE_CHECKING, Any
from unittest import mock

import orjson
import pytest
import trio
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_events import pb
from trio_events.agent._convert import JsonConverter, chunked
from trio_events.agent._convert_reference import protobuf_reference_dumps
from trio_events.testing import strategies
from trio_events.testing.strategies import nanos, timestamps, unknown_fields

if TYPE_CHECKING:
    from google.protobuf.message import Message

FLAGS = (False, True)
CONVERTERS = {flag: JsonConverter(preserving_proto_field_name=flag) for flag in FLAGS}
PROPERTY = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TS_MIN = -62135596800  # 0001-01-01T00:00:00Z
TS_MAX = 253402300799  # 9999-12-31T23:59:59Z
PAYLOAD_FIELDS = [
    f.name
    for f in pb.RayEvent.DESCRIPTOR.fields
    if f.message_type is not None and f.message_type.full_name != "google.protobuf.Timestamp"
]


# -- the oracle and the comparison ------------------------------------------------------------


def protobuf_outcome(message: Message, flag: bool) -> tuple[str, Any]:
    try:
        text = json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, preserving_proto_field_name=flag
        )
    except Exception as e:
        return ("raises", (type(e), str(e)))
    return ("value", json.loads(text))


def our_outcome(message: Message, flag: bool) -> tuple[str, Any]:
    try:
        value = CONVERTERS[flag].to_value(message)
    except Exception as e:
        return ("raises", (type(e), str(e)))
    # Also through the encoder: orjson must write what json.loads reads back identically.
    encoded = json.loads(CONVERTERS[flag].dumps([message]))
    assert same(encoded, [value]), (encoded, value)
    return ("value", value)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells bool from int from float, -0.0 from 0.0, and NaN equal NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        # protobuf itself returns an OrderedDict for Any; the JSON value is the same.
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def assert_matches_protobuf(message: Message) -> None:
    for flag in FLAGS:
        expected = protobuf_outcome(message, flag)
        actual = our_outcome(message, flag)
        assert expected[0] == actual[0], (flag, expected, actual)
        if expected[0] == "raises":
            assert expected[1] == actual[1]
        else:
            assert same(actual[1], expected[1]), (flag, actual[1], expected[1])


# -- synthetic schemas -------------------------------------------------------------------------

F = descriptor_pb2.FieldDescriptorProto


def _entry(name: str, key_type: int, value_type: int, value_type_name: str = "") -> Any:
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=key_type, label=F.LABEL_OPTIONAL, json_name="key")
    value = entry.field.add(name="value", number=2, type=value_type, label=F.LABEL_OPTIONAL)
    value.json_name = "value"
    if value_type_name:
        value.type_name = value_type_name
    return entry


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _all_kinds_file() -> descriptor_pb2.FileDescriptorProto:
    """A proto3 message with every field kind, map key type and well-known type."""
    file = descriptor_pb2.FileDescriptorProto(
        name="trio_events_tests/all_kinds.proto",
        package="trio_events_tests",
        syntax="proto3",
        dependency=[
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/any.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/field_mask.proto",
        ],
    )
    msg = file.message_type.add(name="AllKinds")
    color = msg.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "RED", "BLUE"]):
        color.value.add(name=name, number=number)
    me = ".trio_events_tests.AllKinds"
    color_name = f"{me}.Color"
    numbers = iter(range(1, 1000))

    def add(name: str, type_: int, label: int = F.LABEL_OPTIONAL, type_name: str = "", **kw: Any):
        field = msg.field.add(
            name=name, number=next(numbers), type=type_, label=label, json_name=_camel(name), **kw
        )
        if type_name:
            field.type_name = type_name
        return field

    scalars = {
        "i32": F.TYPE_INT32,
        "i64": F.TYPE_INT64,
        "u32": F.TYPE_UINT32,
        "u64": F.TYPE_UINT64,
        "s32": F.TYPE_SINT32,
        "s64": F.TYPE_SINT64,
        "fx32": F.TYPE_FIXED32,
        "fx64": F.TYPE_FIXED64,
        "sfx32": F.TYPE_SFIXED32,
        "sfx64": F.TYPE_SFIXED64,
        "flag": F.TYPE_BOOL,
        "text": F.TYPE_STRING,
        "blob": F.TYPE_BYTES,
        "dbl": F.TYPE_DOUBLE,
        "flt": F.TYPE_FLOAT,
    }
    for name, type_ in scalars.items():
        add(name, type_)
        add(f"rep_{name}", type_, F.LABEL_REPEATED)
    add("color", F.TYPE_ENUM, type_name=color_name)
    add("rep_color", F.TYPE_ENUM, F.LABEL_REPEATED, type_name=color_name)
    add("child", F.TYPE_MESSAGE, type_name=me)
    add("rep_child", F.TYPE_MESSAGE, F.LABEL_REPEATED, type_name=me)
    wkts = {
        "ts": ".google.protobuf.Timestamp",
        "dur": ".google.protobuf.Duration",
        "struct": ".google.protobuf.Struct",
        "value": ".google.protobuf.Value",
        "list_value": ".google.protobuf.ListValue",
        "any": ".google.protobuf.Any",
        "w_i64": ".google.protobuf.Int64Value",
        "w_str": ".google.protobuf.StringValue",
        "w_bytes": ".google.protobuf.BytesValue",
        "w_dbl": ".google.protobuf.DoubleValue",
        "mask": ".google.protobuf.FieldMask",
    }
    for name, type_name in wkts.items():
        add(name, F.TYPE_MESSAGE, type_name=type_name)
    add("rep_ts", F.TYPE_MESSAGE, F.LABEL_REPEATED, type_name=".google.protobuf.Timestamp")
    maps = {
        "m_str_dbl": (F.TYPE_STRING, F.TYPE_DOUBLE, ""),
        "m_str_str": (F.TYPE_STRING, F.TYPE_STRING, ""),
        "m_str_bytes": (F.TYPE_STRING, F.TYPE_BYTES, ""),
        "m_str_flt": (F.TYPE_STRING, F.TYPE_FLOAT, ""),
        "m_str_ts": (F.TYPE_STRING, F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        "m_i32_str": (F.TYPE_INT32, F.TYPE_STRING, ""),
        "m_i64_child": (F.TYPE_INT64, F.TYPE_MESSAGE, me),
        "m_u64_i64": (F.TYPE_UINT64, F.TYPE_INT64, ""),
        "m_s32_bool": (F.TYPE_SINT32, F.TYPE_BOOL, ""),
        "m_bool_color": (F.TYPE_BOOL, F.TYPE_ENUM, color_name),
        "m_fx64_dbl": (F.TYPE_FIXED64, F.TYPE_DOUBLE, ""),
    }
    for name, (key_type, value_type, value_type_name) in maps.items():
        entry_name = _camel(name)[:1].upper() + _camel(name)[1:] + "Entry"
        msg.nested_type.append(_entry(entry_name, key_type, value_type, value_type_name))
        add(name, F.TYPE_MESSAGE, F.LABEL_REPEATED, type_name=f"{me}.{entry_name}")
    # A real oneof, then proto3 optional fields with their synthetic oneofs (which come last).
    msg.oneof_decl.add(name="choice")
    add("one_text", F.TYPE_STRING, oneof_index=0)
    add("one_child", F.TYPE_MESSAGE, type_name=me, oneof_index=0)
    add("one_i64", F.TYPE_INT64, oneof_index=0)
    add("one_color", F.TYPE_ENUM, type_name=color_name, oneof_index=0)
    add("one_ts", F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp", oneof_index=0)
    optionals = {
        "opt_i64": (F.TYPE_INT64, ""),
        "opt_text": (F.TYPE_STRING, ""),
        "opt_color": (F.TYPE_ENUM, color_name),
        "opt_dbl": (F.TYPE_DOUBLE, ""),
        "opt_blob": (F.TYPE_BYTES, ""),
    }
    for name, (type_, type_name) in optionals.items():
        msg.oneof_decl.add(name=f"_{name}")
        add(name, type_, type_name=type_name, oneof_index=len(msg.oneof_decl) - 1)
        msg.field[-1].proto3_optional = True
    # Python keywords as field names, and a custom json_name.
    add("from", F.TYPE_INT32)
    add("class", F.TYPE_MESSAGE, type_name=me)
    msg.field.add(
        name="custom", number=next(numbers), type=F.TYPE_STRING, label=F.LABEL_OPTIONAL
    ).json_name = "renamedInJson"
    return file


def _proto2_file() -> descriptor_pb2.FileDescriptorProto:
    """proto2: explicit presence everywhere, closed enums, extensions (printed as "[name]")."""
    file = descriptor_pb2.FileDescriptorProto(
        name="trio_events_tests/legacy.proto", package="trio_events_tests", syntax="proto2"
    )
    msg = file.message_type.add(name="Legacy")
    mood = msg.enum_type.add(name="Mood")
    mood.value.add(name="HAPPY", number=1)
    mood.value.add(name="SAD", number=2)
    me = ".trio_events_tests.Legacy"
    msg.field.add(name="count", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    msg.field.add(
        name="mood",
        number=2,
        type=F.TYPE_ENUM,
        label=F.LABEL_OPTIONAL,
        type_name=f"{me}.Mood",
        default_value="SAD",
    )
    msg.field.add(
        name="moods", number=3, type=F.TYPE_ENUM, label=F.LABEL_REPEATED, type_name=f"{me}.Mood"
    )
    msg.field.add(
        name="name", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, default_value="x"
    )
    msg.field.add(name="child", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL)
    msg.field[-1].type_name = me
    msg.field.add(name="big", number=6, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    msg.extension_range.add(start=100, end=200)
    for name, number, type_, label, type_name in [
        ("ext_i64", 100, F.TYPE_INT64, F.LABEL_OPTIONAL, ""),
        ("ext_child", 101, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, me),
        ("ext_names", 102, F.TYPE_STRING, F.LABEL_REPEATED, ""),
        ("ext_mood", 103, F.TYPE_ENUM, F.LABEL_OPTIONAL, f"{me}.Mood"),
        ("ext_blob", 104, F.TYPE_BYTES, F.LABEL_OPTIONAL, ""),
    ]:
        ext = file.extension.add(name=name, number=number, type=type_, label=label, extendee=me)
        if type_name:
            ext.type_name = type_name
    return file


def _load(file: descriptor_pb2.FileDescriptorProto) -> Any:
    assert field_mask_pb2  # imported for its side effect: the dependency must be in the pool
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(file.name)
    except KeyError:
        return pool.AddSerializedFile(file.SerializeToString())


ALL_KINDS_FILE = _load(_all_kinds_file())
LEGACY_FILE = _load(_proto2_file())
AllKinds = message_factory.GetMessageClass(ALL_KINDS_FILE.message_types_by_name["AllKinds"])
Legacy = message_factory.GetMessageClass(LEGACY_FILE.message_types_by_name["Legacy"])
LEGACY_EXTENSIONS = list(LEGACY_FILE.extensions_by_name.values())


# -- strategies built from descriptors ---------------------------------------------------------

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
SPECIAL_DOUBLES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324, 2.5e-310]
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # upb strings are valid UTF-8


@functools.cache
def ints(type_: int) -> st.SearchStrategy[int]:
    lo, hi = INT_RANGES[type_]
    return st.one_of(
        st.sampled_from([lo, hi, 0, -1 if lo else 1, 2**53 + 1 if hi > 2**53 else 7]),
        st.integers(lo, hi),
    )


def durations() -> st.SearchStrategy[Message]:
    def build(seconds: int, frac: int) -> Message:
        return duration_pb2.Duration(seconds=seconds, nanos=frac if seconds >= 0 else -frac)

    return st.builds(build, st.integers(-315576000000, 315576000000), nanos())


@functools.cache
def scalar_values(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    type_ = field.type
    if type_ in INT_RANGES:
        return ints(type_)
    if type_ == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if type_ == FieldDescriptor.TYPE_STRING:
        return TEXT
    if type_ == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=30)
    if type_ == FieldDescriptor.TYPE_DOUBLE:
        return st.one_of(st.sampled_from(SPECIAL_DOUBLES), st.floats())
    if type_ == FieldDescriptor.TYPE_FLOAT:
        return st.one_of(st.sampled_from([math.nan, math.inf, -0.0, 0.1]), st.floats(width=32))
    if type_ == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = st.sampled_from([v.number for v in field.enum_type.values])
        if field.enum_type.is_closed:
            return known
        # Open enums keep numbers a newer schema added; protobuf prints them as integers.
        return st.one_of(known, ints(FieldDescriptor.TYPE_INT32))
    raise AssertionError(f"unhandled field type {type_}")


def set_field(
    container: Any, key: Any, field: FieldDescriptor, draw: Any, depth: int, shape: Shape
) -> None:
    """Gives ``field`` a random non-empty value; ``container[key]`` or ``getattr`` style."""
    get = container.__getitem__ if key is not None else None
    name = field.name

    def target() -> Any:
        return get(key) if get else getattr(container, name)

    def store(value: Any) -> None:
        if get:
            container[key] = value
        else:
            setattr(container, name, value)

    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        mapping = target()
        for map_key in draw(map_keys(key_field)):
            if value_field.message_type is not None:
                sub = draw(messages(value_field.message_type, depth + 1, shape))
                mapping[map_key].CopyFrom(sub)
            else:
                mapping[map_key] = draw(scalar_values(value_field))
        return
    if field.is_repeated:
        values = target()
        if field.message_type is not None:
            for item in draw(message_lists(field.message_type, depth + 1, shape)):
                values.add().CopyFrom(item)
        else:
            values.extend(draw(scalar_lists(field)))
        return
    if field.message_type is not None:
        sub = target()
        sub.SetInParent()
        sub.CopyFrom(draw(messages(field.message_type, depth + 1, shape)))
        return
    store(draw(scalar_values(field)))


@dataclasses.dataclass(frozen=True)
class Shape:
    """How big generated messages get.

    The default reaches Ray's deepest path (RayEvent, lifecycle event, RayErrorInfo,
    ActorDeathCause, ActorDiedErrorContext, NodeDeathInfo). The self-recursive synthetic types
    grow exponentially with depth, so they use a shallow shape with fewer fields set deeper down.
    """

    max_depth: int = 6
    #: A field at depth d is set with probability 1 / (1 + max(1, d * decay)).
    decay: int = 0

    @functools.cache  # noqa: B019 - a handful of module-level instances
    def coin(self, depth: int) -> st.SearchStrategy[bool]:
        return st.integers(0, max(1, depth * self.decay)).map(lambda n: n == 0)


RAY_SHAPE = Shape()
SYNTHETIC_SHAPE = Shape(max_depth=2, decay=4)


@st.composite
def _any_messages(draw: Any, depth: int, shape: Shape) -> Message:
    packed = any_pb2.Any()
    choice = draw(st.sampled_from(["empty", "ray", "all_kinds", "bad_url"]))
    if choice == "ray":
        packed.Pack(draw(messages(pb.TaskAttempt.DESCRIPTOR, depth + 1, shape)))
    elif choice == "all_kinds":
        packed.Pack(draw(messages(AllKinds.DESCRIPTOR, depth + 1, shape)))
    elif choice == "bad_url":
        packed.type_url = "type.googleapis.com/no.such.Type"
        packed.value = draw(st.binary(max_size=4))
    return packed


@st.composite
def _messages(draw: Any, descriptor: Descriptor, depth: int, shape: Shape) -> Message:
    full_name = descriptor.full_name
    if full_name == "google.protobuf.Timestamp":
        # The Timestamp class of the descriptor's own pool (ours is trio-events' private pool).
        drawn = draw(timestamps())
        special: Message = message_factory.GetMessageClass(descriptor).FromString(
            drawn.SerializeToString()
        )
        return special
    if full_name == "google.protobuf.Duration":
        special = draw(durations())
        return special
    if full_name == "google.protobuf.Any":
        special = draw(_any_messages(depth, shape))
        return special
    message = message_factory.GetMessageClass(descriptor)()
    if depth >= shape.max_depth:
        return message
    oneof_members: set[str] = set()
    for oneof in descriptor.oneofs:
        if len(oneof.fields) > 1:
            oneof_members |= {f.name for f in oneof.fields}
            chosen = draw(st.sampled_from([None, *oneof.fields]))
            if chosen is not None:
                set_field(message, None, chosen, draw, depth, shape)
    for field in descriptor.fields:
        if field.name not in oneof_members and draw(shape.coin(depth)):
            set_field(message, None, field, draw, depth, shape)
    if descriptor.full_name == Legacy.DESCRIPTOR.full_name:
        for ext in LEGACY_EXTENSIONS:
            if draw(st.booleans()):
                set_field(message.Extensions, ext, ext, draw, depth, shape)
    return message


@functools.cache
def messages(
    descriptor: Descriptor, depth: int = 0, shape: Shape = RAY_SHAPE
) -> st.SearchStrategy[Message]:
    """Random messages of any type: each field independently set or not, recursively.

    Strategies are cached: building them afresh for every draw makes hypothesis re-validate
    them, which dominated the run time.
    """
    return _messages(descriptor, depth, shape)


@functools.cache
def message_lists(descriptor: Descriptor, depth: int, shape: Shape) -> st.SearchStrategy[Any]:
    return st.lists(messages(descriptor, depth, shape), max_size=3)


@functools.cache
def scalar_lists(field: FieldDescriptor) -> st.SearchStrategy[list[Any]]:
    return st.lists(scalar_values(field), max_size=4)


@functools.cache
def map_keys(field: FieldDescriptor) -> st.SearchStrategy[list[Any]]:
    return st.lists(scalar_values(field), max_size=3, unique=True)


def ray_events(event_type: int | None = None) -> st.SearchStrategy[pb.RayEvent]:
    """The public strategy, with extra payloads (the schema allows them; Ray never sends them)."""
    return strategies.ray_events(event_type, several_payloads=True)


PAYLOAD_TYPES = {name: number for number, name in strategies.EVENT_PAYLOAD_FIELDS.items()}


# -- properties --------------------------------------------------------------------------------


@PROPERTY
@given(ray_events())
def test_ray_events_match_protobuf(event: pb.RayEvent) -> None:
    assert_matches_protobuf(event)
    # Equality alone would also hold if everything silently went through protobuf's slow
    # converter; valid Ray events must not.
    with mock.patch.object(JsonConverter, "_protobuf_value", side_effect=AssertionError):
        for converter in CONVERTERS.values():
            converter.to_dict(event)
            converter.dumps([event])
            converter.dumps_serialized([event.SerializeToString()])


@pytest.mark.parametrize("payload", PAYLOAD_FIELDS)
@settings(PROPERTY, max_examples=40)
@given(data=st.data())
def test_every_payload_type_matches_protobuf(payload: str, data: st.DataObject) -> None:
    # The property above samples payloads at random; this guarantees each one is exercised,
    # alone at the top level and inside a RayEvent.
    event = data.draw(ray_events(PAYLOAD_TYPES[payload]))
    assert_matches_protobuf(getattr(event, payload))
    assert_matches_protobuf(event)


@settings(PROPERTY, max_examples=300)
@given(messages(AllKinds.DESCRIPTOR, shape=SYNTHETIC_SHAPE))
def test_every_field_kind_matches_protobuf(message: Message) -> None:
    assert_matches_protobuf(message)


@settings(PROPERTY, max_examples=200)
@given(
    messages(Legacy.DESCRIPTOR, shape=Shape(max_depth=3)), st.one_of(st.just(b""), unknown_fields())
)
def test_proto2_with_extensions_matches_protobuf(message: Message, unknown: bytes) -> None:
    message.MergeFromString(unknown)
    assert_matches_protobuf(message)


@settings(PROPERTY, max_examples=200)
@given(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from(["top", "nested", "repeated", "map"]),
)
def test_any_timestamp_including_invalid_behaves_like_protobuf(
    seconds: int, nanos: int, where: str
) -> None:
    # Out-of-range values make protobuf raise; ours must raise the same, wherever they sit.
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    if where == "top":
        assert_matches_protobuf(ts)
        return
    message: Any = AllKinds()
    if where == "nested":
        message.ts.CopyFrom(ts)
    elif where == "repeated":
        message.rep_ts.add().CopyFrom(ts)
    else:
        message.m_str_ts["k"].CopyFrom(ts)
    assert_matches_protobuf(message)


@settings(PROPERTY, max_examples=100)
@given(st.lists(ray_events(), min_size=0, max_size=5))
def test_dumps_serialized_equals_dumps_of_parsed_events(events: list[pb.RayEvent]) -> None:
    blobs = [e.SerializeToString() for e in events]
    parsed = [pb.RayEvent.FromString(b) for b in blobs]
    for converter in CONVERTERS.values():
        body = converter.dumps_serialized(blobs)
        assert body == converter.dumps(parsed)
        assert same(json.loads(body), [converter.to_dict(e) for e in events])


# -- examples ----------------------------------------------------------------------------------


def reference_example_event() -> pb.RayEvent:
    """ray-reference.md 3.7: a TASK_LIFECYCLE_EVENT with one transition."""
    event = pb.RayEvent(
        event_id=b"\x01" * 28,
        source_type=pb.RayEvent.CORE_WORKER,
        event_type=pb.RayEvent.TASK_LIFECYCLE_EVENT,
        severity=pb.RayEvent.INFO,
        session_name="s",
    )
    event.timestamp.FromJsonString("2025-06-30T16:50:30.130457542Z")
    event.task_lifecycle_event.task_id = b"t"
    transition = event.task_lifecycle_event.state_transitions.add(state=8)  # RUNNING
    transition.timestamp.seconds = 1
    return event


def test_reference_example_camel_case() -> None:
    expected = json.loads(
        '{"eventId": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==", "sourceType": "CORE_WORKER", '
        '"eventType": "TASK_LIFECYCLE_EVENT", "timestamp": "2025-06-30T16:50:30.130457542Z", '
        '"severity": "INFO", "sessionName": "s", "taskLifecycleEvent": {"taskId": "dA==", '
        '"stateTransitions": [{"state": "RUNNING", "timestamp": "1970-01-01T00:00:01Z"}], '
        '"taskAttempt": 0, "nodeId": "", "workerId": "", "workerPid": 0, "jobId": ""}, '
        '"message": "", "nodeId": ""}'
    )
    event = reference_example_event()
    assert same(CONVERTERS[False].to_dict(event), expected)
    assert same(orjson.loads(CONVERTERS[False].dumps([event])), [expected])


def test_reference_example_proto_names_int64_as_string() -> None:
    expected = json.loads(
        '{"event_type": "DRIVER_JOB_DEFINITION_EVENT", "driver_job_definition_event": '
        '{"driver_pid": "59360", "job_id": "", "driver_node_id": "", "entrypoint": ""}, '
        '"event_id": "", "source_type": "SOURCE_TYPE_UNSPECIFIED", "severity": '
        '"EVENT_SEVERITY_UNSPECIFIED", "message": "", "session_name": "", "node_id": ""}'
    )
    event = pb.RayEvent(event_type=pb.RayEvent.DRIVER_JOB_DEFINITION_EVENT)
    event.driver_job_definition_event.driver_pid = 59360
    assert same(CONVERTERS[True].to_dict(event), expected)


def test_post_body_for_two_events_is_a_json_array_of_two_objects() -> None:
    first = reference_example_event()
    second = pb.RayEvent(event_type=pb.RayEvent.NODE_DEFINITION_EVENT, message="ünïcødé ✓")
    second.node_definition_event.labels["ray.io/node-id"] = "abc"
    body = CONVERTERS[False].dumps([first, second])
    assert body.startswith(b"[{")
    assert body.endswith(b"}]")
    parsed = json.loads(body)
    assert isinstance(parsed, list)
    assert len(parsed) == 2
    assert all(isinstance(item, dict) for item in parsed)
    assert parsed[1]["message"] == "ünïcødé ✓"
    reference = json.loads(protobuf_reference_dumps([first, second]))
    assert same(parsed, reference)


def test_dumps_serialized_equals_dumps_of_parsed_messages() -> None:
    events = [
        reference_example_event(),
        pb.RayEvent(event_type=pb.RayEvent.WORKER_DEFINITION_EVENT),
    ]
    events[1].worker_definition_event.pid = 4242
    blobs = [e.SerializeToString() for e in events]
    parsed = [pb.RayEvent.FromString(b) for b in blobs]
    for converter in CONVERTERS.values():
        assert converter.dumps_serialized(blobs) == converter.dumps(parsed)


def test_empty_batch() -> None:
    assert CONVERTERS[False].dumps([]) == b"[]"
    assert CONVERTERS[False].dumps_serialized([]) == b"[]"
    assert protobuf_reference_dumps([]) == b"[]"


def test_protobuf_reference_dumps_is_rays_body() -> None:
    events = [reference_example_event(), pb.RayEvent(session_name="x")]
    for flag in FLAGS:
        body = protobuf_reference_dumps(events, preserving_proto_field_name=flag)
        expected = [
            json.loads(
                json_format.MessageToJson(
                    e, always_print_fields_with_no_presence=True, preserving_proto_field_name=flag
                )
            )
            for e in events
        ]
        assert body == json.dumps(expected).encode()


def test_non_finite_doubles_are_protobufs_strings_not_null() -> None:
    # orjson would write NaN and infinities as null; protobuf writes these strings.
    event = pb.RayEvent()
    resources = event.submission_job_definition_event.entrypoint_resources
    resources.num_cpus = math.nan
    resources.num_gpus = -math.inf
    resources.custom_resources["x"] = math.inf
    body = json.loads(CONVERTERS[False].dumps([event]))[0]
    got = body["submissionJobDefinitionEvent"]["entrypointResources"]
    assert got["numCpus"] == "NaN"
    assert got["numGpus"] == "-Infinity"
    assert got["customResources"] == {"x": "Infinity"}
    assert_matches_protobuf(event)


def test_unknown_enum_number_prints_as_integer() -> None:
    event = pb.RayEvent(
        event_type=pb.RayEvent.EventType.ValueType(999),
        severity=pb.RayEvent.Severity.ValueType(-5),
    )
    assert CONVERTERS[False].to_dict(event)["eventType"] == 999
    assert CONVERTERS[False].to_dict(event)["severity"] == -5
    assert_matches_protobuf(event)


def test_several_payloads_all_appear() -> None:
    event = pb.RayEvent()
    event.task_definition_event.task_name = "f"
    event.actor_lifecycle_event.actor_id = b"\x00"
    event.platform_event.SetInParent()
    got = CONVERTERS[False].to_dict(event)
    assert {"taskDefinitionEvent", "actorLifecycleEvent", "platformEvent"} <= got.keys()
    assert_matches_protobuf(event)


def test_unset_optional_and_submessages_are_absent_set_ones_present() -> None:
    absent = pb.TaskDefinitionEvent()
    got = CONVERTERS[True].to_dict(absent)
    assert not {"call_site", "task_func", "fallback_strategy"} & got.keys()
    assert got["required_resources"] == {}
    assert got["ref_ids"] == {}
    present = pb.TaskDefinitionEvent(call_site="")
    present.task_func.SetInParent()
    got = CONVERTERS[True].to_dict(present)
    assert got["call_site"] == ""
    assert got["task_func"] == {}
    assert_matches_protobuf(present)


@pytest.mark.parametrize(
    ("nanos", "suffix"),
    [(0, "Z"), (5_000_000, ".005Z"), (5_000, ".000005Z"), (5, ".000000005Z"), (10_000, ".000010Z")],
)
def test_timestamp_fraction_digits(nanos: int, suffix: str) -> None:
    ts = timestamp_pb2.Timestamp(seconds=TS_MIN, nanos=nanos)
    assert CONVERTERS[False].to_value(ts) == "0001-01-01T00:00:00" + suffix
    assert_matches_protobuf(ts)


def test_out_of_range_timestamp_raises_what_protobuf_raises() -> None:
    event = pb.RayEvent()
    event.timestamp.seconds = TS_MAX + 1
    with pytest.raises(json_format.SerializeToJsonError, match="Timestamp is not valid"):
        CONVERTERS[False].to_dict(event)
    with pytest.raises(json_format.SerializeToJsonError):
        CONVERTERS[False].dumps([pb.RayEvent(), event])
    with pytest.raises(json_format.SerializeToJsonError):
        CONVERTERS[False].dumps_serialized([event.SerializeToString()])
    assert_matches_protobuf(event)


def test_to_dict_refuses_messages_whose_json_is_not_an_object() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1)
    with pytest.raises(TypeError, match="to_value"):
        CONVERTERS[False].to_dict(ts)
    assert CONVERTERS[False].to_value(ts) == "1970-01-01T00:00:01Z"
    assert CONVERTERS[False].to_value(wrappers_pb2.Int64Value(value=5)) == "5"
    value = struct_pb2.Value(string_value="x")
    assert CONVERTERS[False].to_value(value) == "x"


def test_extensions_use_bracketed_full_names() -> None:
    message = json_format.ParseDict({"count": 1}, Legacy())
    ext = LEGACY_FILE.extensions_by_name["ext_i64"]
    message.Extensions[ext] = 7
    got = CONVERTERS[False].to_dict(message)
    assert got == {"count": 1, "moods": [], "[trio_events_tests.ext_i64]": "7"}
    assert_matches_protobuf(message)


def test_generated_source_is_inspectable() -> None:
    source = CONVERTERS[False].source_of(pb.TaskLifecycleEvent.DESCRIPTOR)
    assert source.startswith("def ")
    assert "'stateTransitions'" in source


async def test_cooperative_dumps_equals_dumps_serialized() -> None:
    events = [reference_example_event() for _ in range(7)]
    blobs = [e.SerializeToString() for e in events]
    converter = CONVERTERS[False]
    body = await converter.dumps_serialized_cooperatively(blobs, chunk_size=3)
    assert body == converter.dumps_serialized(blobs)
    assert await converter.dumps_serialized_cooperatively([]) == b"[]"


async def test_cooperative_dumps_checkpoints_between_chunks() -> None:
    blobs = [reference_example_event().SerializeToString()] * 10
    with trio.CancelScope() as scope:
        scope.cancel()
        await CONVERTERS[False].dumps_serialized_cooperatively(blobs, chunk_size=4)
    assert scope.cancelled_caught


def test_chunked() -> None:
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
    assert list(chunked(iter("ab"), 1)) == [["a"], ["b"]]
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 0))
