"""Filling protobuf messages from ordinary Python values, with errors that say what to pass.

The event constructors accept ids as ``bytes``, enums by name or number, timestamps as aware
``datetime`` objects or integer nanoseconds since the epoch, maps as dicts, repeated fields as
lists and nested messages as dicts (or the message itself). Everything is driven by the
descriptors, so a field added to ``protos/`` is accepted without code changes here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, cast

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

_NS_PER_S = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Timestamp's valid range (0001-01-01 to 9999-12-31), as protobuf's JSON mapping requires.
_MIN_TS_NS = -62135596800 * _NS_PER_S
_MAX_TS_NS = 253402300799 * _NS_PER_S + _NS_PER_S - 1


def timestamp_ns(value: object, *, what: str) -> int:
    """Nanoseconds since the epoch from an ``int`` (ns) or an aware ``datetime``."""
    if isinstance(value, bool):
        raise TypeError(
            f"{what} must be a timezone-aware datetime or integer nanoseconds, got bool."
        )
    if isinstance(value, int):
        ns = value
    elif isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{what} is a naive datetime; pass a timezone-aware one, "
                "e.g. datetime.now(timezone.utc)."
            )
        delta = value - _EPOCH
        ns = (delta.days * 86_400 + delta.seconds) * _NS_PER_S + delta.microseconds * 1_000
    else:
        raise TypeError(
            f"{what} must be a timezone-aware datetime or integer nanoseconds, "
            f"got {type(value).__name__}."
        )
    if not _MIN_TS_NS <= ns <= _MAX_TS_NS:
        raise ValueError(f"{what} is outside the years 0001 to 9999 that a Timestamp can hold.")
    return ns


def set_timestamp(target: Any, ns: int) -> None:
    target.seconds, target.nanos = divmod(ns, _NS_PER_S)


def enum_number(enum: EnumDescriptor, value: object, *, what: str) -> int:
    """An enum value's number from its name or number; anything else is a clear error."""
    if isinstance(value, str):
        found = enum.values_by_name.get(value)
        if found is None:
            valid = ", ".join(v.name for v in enum.values)
            raise ValueError(f"{what} has no value named {value!r}; valid names are: {valid}.")
        return int(found.number)
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in enum.values_by_number:
            valid = ", ".join(f"{v.name}={v.number}" for v in enum.values)
            raise ValueError(f"{what} has no value {value}; valid values are: {valid}.")
        return value
    raise TypeError(f"{what} takes an enum name (str) or number (int), got {type(value).__name__}.")


def _scalar(fd: FieldDescriptor, value: object, what: str) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        return enum_number(fd.enum_type, value, what=what)
    if t == FieldDescriptor.TYPE_BYTES:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        hint = " (use bytes.fromhex() for a hex id)" if isinstance(value, str) else ""
        raise TypeError(f"{what} must be bytes{hint}, got {type(value).__name__}.")
    if t == FieldDescriptor.TYPE_STRING:
        if isinstance(value, str):
            return value
        raise TypeError(f"{what} must be a str, got {type(value).__name__}.")
    if t == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}.")
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"{what} must be a number, got {type(value).__name__}.")
    if t in _INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{what} must be an int, got {type(value).__name__}.")
        lo, hi = _INT_RANGES[t]
        if not lo <= value <= hi:
            raise ValueError(f"{what} must be between {lo} and {hi}, got {value}.")
        return value
    raise TypeError(f"{what} has a field type this library cannot fill ({t}).")  # pragma: no cover


def _is_map(fd: FieldDescriptor) -> bool:
    mt = fd.message_type
    return mt is not None and bool(mt.GetOptions().map_entry)


def _fill_nested(target: Message, value: object, what: str) -> None:
    desc = target.DESCRIPTOR
    if desc.full_name == "google.protobuf.Timestamp":
        if isinstance(value, Message) and value.DESCRIPTOR.full_name == desc.full_name:
            # Field by field: ours lives in trio-events' private descriptor pool, so it is a
            # different class from google.protobuf.timestamp_pb2.Timestamp.
            ts: Any = value
            set_timestamp(target, ts.seconds * _NS_PER_S + ts.nanos)
        else:
            set_timestamp(target, timestamp_ns(value, what=what))
        return
    if isinstance(value, Message):
        if value.DESCRIPTOR is not desc:
            raise TypeError(
                f"{what} takes a {desc.full_name} message or a dict, "
                f"got a {value.DESCRIPTOR.full_name} message."
            )
        target.CopyFrom(value)
        return
    if isinstance(value, Mapping):
        target.SetInParent()  # an empty dict still marks the sub-message as present
        fill_message(target, value, what=what)
        return
    raise TypeError(
        f"{what} takes a {desc.full_name} message or a dict, got {type(value).__name__}."
    )


def set_field(msg: Message, fd: FieldDescriptor, value: object, *, what: str) -> None:
    """Set one field of ``msg`` from a Python value (replacing what was there)."""
    name = fd.name
    if _is_map(fd):
        if not isinstance(value, Mapping):
            raise TypeError(f"{what} must be a dict, got {type(value).__name__}.")
        container: Any = getattr(msg, name)
        container.clear()
        entry = fd.message_type
        assert entry is not None
        key_fd = entry.fields_by_name["key"]
        value_fd = entry.fields_by_name["value"]
        for k, v in value.items():
            key = _scalar(key_fd, k, f"a key of {what}")
            if value_fd.message_type is not None:
                _fill_nested(container[key], v, f"{what}[{k!r}]")
            else:
                container[key] = _scalar(value_fd, v, f"{what}[{k!r}]")
        return
    if fd.is_repeated:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise TypeError(f"{what} must be a list, got {type(value).__name__}.")
        repeated: Any = getattr(msg, name)
        del repeated[:]
        for i, item in enumerate(value):
            if fd.message_type is not None:
                _fill_nested(repeated.add(), item, f"{what}[{i}]")
            else:
                repeated.append(_scalar(fd, item, f"{what}[{i}]"))
        return
    if fd.message_type is not None:
        _fill_nested(getattr(msg, name), value, what)
        return
    setattr(msg, name, _scalar(fd, value, what))


def fill_message(msg: Message, values: Mapping[str, object], *, what: str) -> None:
    """Set several fields of ``msg`` by name; unknown names are an error listing the valid ones."""
    fields = cast("Mapping[str, FieldDescriptor]", msg.DESCRIPTOR.fields_by_name)
    for name, value in values.items():
        fd = fields.get(name)
        if fd is None:
            valid = ", ".join(sorted(fields))
            raise TypeError(f"{what} has no field {name!r}; valid fields are: {valid}.")
        set_field(msg, fd, value, what=f"{what}.{name}")
