"""Protobuf's wire format, the two pieces written by hand: a varint and a length-delimited field.

Used where a message is assembled from parts that are already serialized (an event's payload,
a request of buffered events), which is cheaper than parsing them into messages again.
"""

from __future__ import annotations


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(field_number: int, body: bytes) -> bytes:
    """A length-delimited field (wire type 2): its tag, the length of ``body``, ``body``."""
    return varint(field_number << 3 | 2) + varint(len(body)) + body
