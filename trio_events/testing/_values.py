"""Scalar strategies shared by every message strategy: ids, text, timestamps, numbers, enums.

Each strategy lists its simplest choice first, so hypothesis shrinks towards it: empty text,
the epoch, zero, the first known enum value.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from trio_events._protowire import varint

if TYPE_CHECKING:
    from google.protobuf.descriptor import EnumDescriptor

#: Sizes of Ray's binary ids (``src/ray/common/id.h``): TaskID 24, JobID 4, ActorID 16,
#: PlacementGroupID 18, and 28 for NodeID, WorkerID, ObjectID and the event id (UniqueID).
ID_SIZES: Final[dict[str, int]] = {
    "task": 24,
    "job": 4,
    "actor": 16,
    "placement_group": 18,
    "node": 28,
    "worker": 28,
    "object": 28,
    "event": 28,
}

#: google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_MIN_SECONDS: Final = -62_135_596_800
TIMESTAMP_MAX_SECONDS: Final = 253_402_300_799
#: 2025-06-30T16:50:30Z, a time at which Ray 2.60-era clusters ran.
REALISTIC_SECONDS: Final = 1_751_302_230

_INT_RANGES: Final = {
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
_SPECIAL_DOUBLES: Final = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]


def id_size(field_name: str) -> int:
    """The size of the Ray id a bytes field named ``field_name`` holds (28 when unsure)."""
    for kind in ("placement_group", "task", "job", "actor", "node", "worker", "event"):
        if kind in field_name:
            return ID_SIZES[kind]
    return 28


@functools.cache
def ray_ids(kind: str) -> st.SearchStrategy[bytes]:
    """Binary ids of ``kind`` (a key of :data:`ID_SIZES`) with Ray's size; sometimes Ray's Nil
    id (all 0xff) or all zeros."""
    size = ID_SIZES[kind]
    return st.one_of(
        st.binary(min_size=size, max_size=size),
        st.sampled_from([b"\xff" * size, b"\0" * size]),
    )


@functools.cache
def texts(max_size: int = 16) -> st.SearchStrategy[str]:
    """Any Unicode a protobuf string can carry: control characters, astral planes, combining
    marks, NUL; never a lone surrogate (protobuf refuses to serialize one)."""
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


@functools.cache
def nanos() -> st.SearchStrategy[int]:
    """Fractions of a second at each precision RFC 3339 output distinguishes: 0, 3, 6, 9 digits."""
    return st.one_of(
        st.just(0),
        st.integers(0, 999).map(lambda n: n * 1_000_000),
        st.integers(0, 999_999).map(lambda n: n * 1_000),
        st.integers(0, 999_999_999),
    )


@functools.cache
def timestamp_parts() -> st.SearchStrategy[tuple[int, int]]:
    """``(seconds, nanos)``: the epoch, realistic times, and the far past and future that
    protobuf's Timestamp allows (years 1 and 9999)."""
    seconds = st.one_of(
        st.sampled_from([0, REALISTIC_SECONDS, TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS, -1]),
        st.integers(REALISTIC_SECONDS - 10**8, REALISTIC_SECONDS + 10**8),
        st.integers(TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS),
    )
    return st.tuples(seconds, nanos())


@functools.cache
def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """google.protobuf.Timestamp messages (protobuf's default pool) drawn from
    :func:`timestamp_parts`."""
    return timestamp_parts().map(lambda p: timestamp_pb2.Timestamp(seconds=p[0], nanos=p[1]))


@functools.cache
def integers_of(field_type: int) -> st.SearchStrategy[int]:
    """Small realistic values first, then each type's extremes, then anything in range."""
    lo, hi = _INT_RANGES[field_type]
    edges = sorted({lo, hi, 0, 1, -1 if lo else 2, 2**53 + 1 if hi > 2**53 else 7})
    return st.one_of(st.integers(max(lo, 0), 1000), st.sampled_from(edges), st.integers(lo, hi))


@functools.cache
def doubles(width: int = 64) -> st.SearchStrategy[float]:
    """Realistic finite values first (resources, sizes), then NaN, infinities and extremes."""
    finite = st.floats(0, 1e6, width=width)  # type: ignore[arg-type]
    special = [v for v in _SPECIAL_DOUBLES if width == 64 or abs(v) < 1e38 or math.isnan(v)]
    return st.one_of(finite, st.sampled_from(special), st.floats(width=width))  # type: ignore[arg-type]


@functools.cache
def enum_numbers(enum: EnumDescriptor, *, newer_ray: bool) -> st.SearchStrategy[int]:
    """Numbers of ``enum``'s values; with ``newer_ray`` also numbers a later schema could add
    (proto3 enums are open: protobuf keeps them and prints them as integers in JSON)."""
    known = st.sampled_from([v.number for v in enum.values])
    if not newer_ray or enum.is_closed:
        return known
    top = max(v.number for v in enum.values)
    return st.one_of(known, st.integers(top + 1, top + 1000))


@functools.cache
def scalar_values(field: FieldDescriptor, *, newer_ray: bool) -> st.SearchStrategy[Any]:
    """A value for a scalar (non-message) field, by its type and, for bytes ids, its name."""
    kind = field.type
    if kind in _INT_RANGES:
        return integers_of(kind)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return texts()
    if kind == FieldDescriptor.TYPE_BYTES:
        if field.name.endswith("_id") or field.name.endswith("_ids"):
            size = id_size(field.name)
            return st.binary(min_size=size, max_size=size)
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return doubles()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return doubles(32)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return enum_numbers(field.enum_type, newer_ray=newer_ray)
    raise TypeError(f"Field {field.full_name} has a type ({kind}) Ray's schema does not use.")


def wire_field(number: int, wire_type: int, data: bytes) -> bytes:
    """One field in protobuf's wire format: tag, then the payload of ``wire_type``."""
    tag = varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + varint(int.from_bytes(data[:8] or b"\0", "little"))
    if wire_type == 1:
        return tag + data[:8].ljust(8, b"\0")
    if wire_type == 2:
        return tag + varint(len(data)) + data
    return tag + data[:4].ljust(4, b"\0")


@functools.cache
def unknown_fields() -> st.SearchStrategy[bytes]:
    """Wire bytes of fields no 2.60 message defines (numbers 1000-2000, every wire type), as a
    newer Ray would send them; appending them to a serialized message keeps it valid."""
    field = st.tuples(st.integers(1000, 2000), st.sampled_from([0, 1, 2, 5]), st.binary(max_size=9))
    return st.lists(field, min_size=1, max_size=3).map(
        lambda fields: b"".join(wire_field(*f) for f in fields)
    )
