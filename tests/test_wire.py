"""Slicing events out of an AddEventsRequest: the same messages the parsed request holds."""

from __future__ import annotations

import binascii

from hyperframe.frame import DataFrame
from hypothesis import given
from hypothesis import strategies as st

from trio_events import pb
from trio_events.agent._grpc_server import _short_data_repr
from trio_events.agent._wire import event_slices


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


events = st.builds(
    pb.RayEvent,
    event_id=st.binary(max_size=40),
    event_type=st.integers(0, 20),
    message=st.text(max_size=20000),  # lengths whose varint takes 1, 2 and 3 bytes
    severity=st.integers(0, 5),
)
# Fields the scanner must skip: varint, fixed64, fixed32 and length-delimited unknown fields.
unknown = st.sampled_from(
    [b"\x98\x06\x01", b"\xa1\x06" + bytes(8), b"\xad\x06" + bytes(4), field(99, b"xyz")]
)


@given(st.lists(st.lists(events, max_size=5), min_size=1, max_size=3), unknown, st.booleans())
def test_slices_parse_to_the_events_of_the_parsed_request(groups, extra, metadata) -> None:
    # events_data may occur several times (protobuf merges them) and carry other fields.
    request = b""
    for group in groups:
        data = b"".join(field(1, e.SerializeToString()) for e in group)
        if metadata:
            data += field(2, pb.TaskEventsMetadata().SerializeToString()) + extra
        request += field(1, data) + extra
    parsed = pb.AddEventsRequest.FromString(request).events_data.events
    slices = event_slices(request, len(parsed))
    assert slices is not None
    assert [pb.RayEvent.FromString(s) for s in slices] == list(parsed)


def test_a_count_other_than_the_parsed_one_falls_back() -> None:
    request = field(1, field(1, pb.RayEvent(message="a").SerializeToString()))
    assert event_slices(request, 1) == [pb.RayEvent(message="a").SerializeToString()]
    assert event_slices(request, 2) is None


def test_groups_and_truncated_input_fall_back() -> None:
    event = pb.RayEvent(message="a").SerializeToString()
    group = b"\x9b\x06\x9c\x06"  # an empty group, field 99: valid protobuf, not handled
    assert event_slices(field(1, field(1, event)) + group, 1) is None
    assert event_slices(field(1, field(1, event))[:-1], 1) is None
    assert event_slices(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 0) is None


def test_the_short_frame_repr_is_hyperframes_text() -> None:
    def hyperframe_text(data: bytes) -> str:  # hyperframe 6.1's _raw_data_repr
        if not data:
            return "None"
        r = binascii.hexlify(data).decode("ascii")
        if len(r) > 20:
            r = r[:20] + "..."
        return "<hex:" + r + ">"

    for size in (0, 1, 9, 10, 11, 16384):
        data = bytes(range(256)) * 64
        assert _short_data_repr(data[:size]) == hyperframe_text(data[:size])
    # and h2's repr(frame) uses it (the agent's module replaced hyperframe's function)
    assert repr(DataFrame(1, data=b"\x01" * 16384)).endswith("<hex:01010101010101010101...>")
