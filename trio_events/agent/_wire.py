"""The serialized events of an ``AddEventsRequest``, sliced from the request without re-encoding.

The agent parses each request once (to validate it and read the event types) and buffers every
event serialized. Re-serializing each parsed event cost twice as much as parsing the whole
request (``SerializeToString`` per event was about a quarter of the ingest CPU); the bytes are
already in the request, so :func:`event_slices` walks the two outer levels of the wire format
(``AddEventsRequest.events_data`` = 1, ``RayEventsData.events`` = 1) and copies each event's
bytes out. Parsing a slice gives the same message as the parsed request holds: same fields,
unknown fields included.

Anything unusual — a group, a malformed length, a count that differs from the parsed
request's — makes it answer None, and the caller re-serializes as before.
"""

from __future__ import annotations

from typing import Final

__all__ = ["event_slices"]

_EVENTS_DATA: Final = (1 << 3) | 2  # AddEventsRequest.events_data, length-delimited
_EVENTS: Final = (1 << 3) | 2  # RayEventsData.events, length-delimited


class _Unusual(Exception):
    """Input the scanner does not handle; the caller falls back to re-serializing."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Unusual


def _skip(data: bytes, tag: int, pos: int, end: int) -> int:
    """The position after the value of a field with ``tag`` (other than the ones we want)."""
    wire_type = tag & 7
    if wire_type == 0:
        _, pos = _varint(data, pos)
    elif wire_type == 1:
        pos += 8
    elif wire_type == 2:
        length, pos = _varint(data, pos)
        pos += length
    elif wire_type == 5:
        pos += 4
    else:  # groups (3, 4) and invalid wire types
        raise _Unusual
    if pos > end:
        raise _Unusual
    return pos


def _events_in(data: bytes, pos: int, end: int, out: list[bytes]) -> None:
    """Appends the ``events`` of the ``RayEventsData`` in ``data[pos:end]`` to ``out``."""
    append = out.append
    while pos < end:
        if data[pos] == _EVENTS:  # one-byte tag; lengths below 16 KiB take two bytes
            first = data[pos + 1]
            if first < 0x80:
                start = pos + 2
                pos = start + first
            else:
                second = data[pos + 2]
                if second < 0x80:
                    start = pos + 3
                    pos = start + ((first & 0x7F) | (second << 7))
                else:
                    length, start = _varint(data, pos + 1)
                    pos = start + length
            if pos > end:
                raise _Unusual
            append(data[start:pos])
        else:
            tag, pos = _varint(data, pos)
            pos = _skip(data, tag, pos, end)
    if pos != end:
        raise _Unusual


def event_slices(request: bytes, expected: int) -> list[bytes] | None:
    """The serialized events of the serialized ``AddEventsRequest`` ``request``, in order.

    ``expected`` is how many events the parsed request holds; None (re-serialize instead) when
    the scan finds another number or anything it does not handle. ``request`` must already
    have parsed successfully.
    """
    out: list[bytes] = []
    pos, end = 0, len(request)
    try:
        while pos < end:
            tag, pos = _varint(request, pos)
            if tag == _EVENTS_DATA:
                # Several occurrences of events_data merge, their events concatenated: so do we.
                length, pos = _varint(request, pos)
                stop = pos + length
                if stop > end:
                    return None
                _events_in(request, pos, stop, out)
                pos = stop
            else:
                pos = _skip(request, tag, pos, end)
    except (_Unusual, IndexError):
        return None
    if pos != end or len(out) != expected:
        return None
    return out
