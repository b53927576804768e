"""Hostile inputs: what a buggy, newer or malicious sender may put on the wire.

Each strategy yields a :class:`Hostile` value: the bytes and the kind of damage, so a test can
assert per kind (e.g. "truncated requests are refused, unknown fields pass through"). Every one
starts from a valid message of :mod:`trio_events.testing._messages` and damages it once, so
shrinking finds the smallest valid message whose damage still breaks the receiver.
"""

from __future__ import annotations

from typing import Final, final

import attrs
import orjson
from hypothesis import strategies as st

from trio_events.testing._messages import publisher_posts, ray_events
from trio_events.testing._values import unknown_fields, wire_field

#: The kinds of damage :func:`hostile_event_bytes` and :func:`hostile_add_events_requests` do.
WIRE_DAMAGE: Final = ("invalid_utf8", "unknown_fields", "truncated", "oversized", "garbage")
#: The kinds of damage :func:`hostile_json_bodies` does.
JSON_DAMAGE: Final = (
    "invalid_utf8",
    "unknown_fields",
    "truncated",
    "oversized",
    "wrong_types",
    "not_an_array",
    "deep_nesting",
)
_MARK: Final = "\u2603" * 4  # 12 bytes of UTF-8 no generated event contains at this spot


@final
@attrs.frozen
class Hostile:
    """``data`` damaged by ``kind`` (one of :data:`WIRE_DAMAGE` or :data:`JSON_DAMAGE`).

    ``unknown_fields`` damage keeps the input valid (a newer Ray's extra fields); every other
    kind makes it invalid or larger than any sane limit.
    """

    kind: str
    data: bytes


@st.composite
def _invalid_utf8(draw: st.DrawFn, size: int) -> bytes:
    """``size`` bytes that are not UTF-8: a lone continuation byte, an overlong form, 0xff."""
    bad = draw(st.sampled_from([b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8"]))
    return (bad + draw(st.binary(min_size=size, max_size=size)))[:size]


@st.composite
def _damaged_message(draw: st.DrawFn, kind: str, oversized_bytes: int, *, request: bool) -> Hostile:
    event = draw(ray_events())
    if kind == "invalid_utf8":
        event.message = _MARK
    if kind == "oversized":
        event.message = "x" * draw(st.integers(oversized_bytes, oversized_bytes + 1024))
    data = event.SerializeToString()
    if kind == "invalid_utf8":
        mark = _MARK.encode()
        data = data.replace(mark, draw(_invalid_utf8(len(mark))), 1)
    elif kind == "unknown_fields":
        data += draw(unknown_fields())
    if request:
        # AddEventsRequest{events_data(1): RayEventsData{events(1): <event>}}, built on the wire
        # so that the damaged event is carried as it is.
        data = wire_field(1, 2, wire_field(1, 2, data))
        if kind == "unknown_fields":
            data += draw(unknown_fields())
    if kind == "truncated":
        data = data[: draw(st.integers(1, max(1, len(data) - 1)))]
    elif kind == "garbage":
        data = draw(st.binary(min_size=1, max_size=64))
    return Hostile(kind, data)


def _kinds(kinds: tuple[str, ...] | None, known: tuple[str, ...]) -> st.SearchStrategy[str]:
    chosen = known if kinds is None else tuple(kinds)
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise ValueError(f"kinds must be some of {', '.join(known)}; got {list(chosen)}.")
    return st.sampled_from(chosen)


def hostile_event_bytes(
    *, kinds: tuple[str, ...] | None = None, oversized_bytes: int = 2**20
) -> st.SearchStrategy[Hostile]:
    """A serialized ``RayEvent`` with one kind of :data:`WIRE_DAMAGE`: a string field holding
    invalid UTF-8 (protobuf refuses to parse it), unknown fields (valid), cut short, a string of
    at least ``oversized_bytes``, or random bytes. ``kinds`` limits the damage to those kinds."""
    return _kinds(kinds, WIRE_DAMAGE).flatmap(
        lambda kind: _damaged_message(kind, oversized_bytes, request=False)
    )


def hostile_add_events_requests(
    *, kinds: tuple[str, ...] | None = None, oversized_bytes: int = 2**20
) -> st.SearchStrategy[Hostile]:
    """A serialized ``AddEventsRequest`` whose event has one kind of :data:`WIRE_DAMAGE` (or
    whose request bytes are cut short or replaced by garbage)."""
    return _kinds(kinds, WIRE_DAMAGE).flatmap(
        lambda kind: _damaged_message(kind, oversized_bytes, request=True)
    )


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def _damaged_json(draw: st.DrawFn, kind: str, oversized_bytes: int) -> Hostile:
    post = draw(publisher_posts(max_events=3))
    events = orjson.loads(post.body)
    if kind == "invalid_utf8":
        events[0]["message"] = _MARK
        mark = orjson.dumps(_MARK)[1:-1]
        return Hostile(kind, orjson.dumps(events).replace(mark, draw(_invalid_utf8(len(mark)))))
    if kind == "unknown_fields":
        events[0][draw(st.sampled_from(["newerRayField", "extra", "x"]))] = {"nested": [1, 2]}
    elif kind == "truncated":
        return Hostile(kind, post.body[: draw(st.integers(1, len(post.body) - 1))])
    elif kind == "oversized":
        events[0]["message"] = "x" * draw(st.integers(oversized_bytes, oversized_bytes + 1024))
    elif kind == "wrong_types":
        key = draw(st.sampled_from(sorted(events[0])))
        events[0][key] = draw(st.sampled_from([None, 17, -1.5, "", [], {}, True]))
    elif kind == "not_an_array":
        value = draw(st.sampled_from([events[0], None, 0, "events", {"events": events}]))
        return Hostile(kind, orjson.dumps(value))
    elif kind == "deep_nesting":
        return Hostile(kind, _nest(draw(st.integers(2000, 100_000))))
    return Hostile(kind, orjson.dumps(events))


def hostile_json_bodies(
    *, kinds: tuple[str, ...] | None = None, oversized_bytes: int = 2**20
) -> st.SearchStrategy[Hostile]:
    """A POST body that Ray's publisher would never send, with one kind of :data:`JSON_DAMAGE`;
    ``unknown_fields`` stays valid JSON of valid events plus keys a newer Ray might add."""
    return _kinds(kinds, JSON_DAMAGE).flatmap(lambda kind: _damaged_json(kind, oversized_bytes))
