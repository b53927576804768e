"""A user-defined event type, the way docs/events.md describes it."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from trio_events import pb
from trio_events.producer._event_base import RayEventBase


def _compile_my_new_event() -> Any:
    """What `protoc` would produce for a user's events_my_new_event.proto (built in-process)."""
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(
        name="events_my_new_event.proto", package="mycompany.events", syntax="proto3"
    )
    msg = file.message_type.add(name="MyNewEvent")
    msg.field.add(name="entity_id", number=1, type=9, label=1)  # string
    msg.field.add(name="retries", number=2, type=5, label=1)  # int32
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("mycompany.events.MyNewEvent")
    )


MyNewEventProto = _compile_my_new_event()


class RayMyNewEvent(RayEventBase):
    __slots__ = ()
    EVENT_TYPE = 100
    PAYLOAD_TYPE = MyNewEventProto
    PAYLOAD_FIELD_NUMBER = 100
    REQUIRED_FIELDS = ("entity_id",)

    @property
    def entity_id(self) -> bytes:
        return str(self.payload.entity_id).encode()  # type: ignore[attr-defined]

    def merge_data(self, other: Any) -> None:
        self.payload.retries += other.retries  # type: ignore[attr-defined]


def test_custom_event_merges_and_rides_the_wire_as_an_unknown_field() -> None:
    a = RayMyNewEvent(entity_id="job-7", retries=1)
    b = RayMyNewEvent(entity_id="job-7", retries=2)
    assert a.merge_key == b.merge_key
    a.merge(b)
    wire = pb.RayEvent.FromString(a.serialize().SerializeToString())
    assert wire.event_type == 100
    assert wire.event_id == a.event_id
    # An aggregator that does not know field 100 keeps it byte for byte when re-serializing...
    raw = wire.SerializeToString()
    assert pb.RayEvent.FromString(raw).SerializeToString() == raw
    # ...and a consumer that knows the message can read it back.
    payload = _read_length_delimited(raw, 100)
    decoded = MyNewEventProto.FromString(payload)
    assert (decoded.entity_id, decoded.retries) == ("job-7", 3)


def _read_length_delimited(raw: bytes, field_number: int) -> bytes:
    from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]

    pos = 0
    while pos < len(raw):
        key, pos = _DecodeVarint(raw, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _DecodeVarint(raw, pos)
        elif wire_type == 2:
            size, pos = _DecodeVarint(raw, pos)
            if number == field_number:
                return raw[pos : pos + size]
            pos += size
        else:  # pragma: no cover - RayEvent has no fixed-width fields at the top level
            raise AssertionError(wire_type)
    raise AssertionError("field not found")
