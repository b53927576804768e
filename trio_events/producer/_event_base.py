"""The event model's base class, the counterpart of Ray's ``RayEventInterface``/``RayEvent<T>``.

An event holds its payload message (the nested proto, like Ray's ``data_``) and the base fields.
Unlike Ray, the 28-byte ``event_id`` is minted when the event is *created*, so an export that is
retried carries the same ids and a sink can de-duplicate.

Merging is in place: ``a.merge(b)`` folds ``b`` into ``a``; ``a`` keeps its own id, timestamp,
severity, message, session name and source type (Ray keeps the first event of a group), and the
payload is combined by the subclass's :meth:`RayEventBase.merge_data`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, ClassVar, Self

from trio_events import pb
from trio_events._protowire import length_delimited
from trio_events.producer._coerce import enum_number, fill_message, set_timestamp, timestamp_ns

if TYPE_CHECKING:
    from collections.abc import Mapping

    from google.protobuf.message import Message

_SEVERITY = pb.RayEvent.DESCRIPTOR.enum_types_by_name["Severity"]
_SOURCE_TYPE = pb.RayEvent.DESCRIPTOR.enum_types_by_name["SourceType"]
EVENT_ID_BYTES = 28  # Ray's UniqueID size
_RAY_EVENT_FIELDS = pb.RayEvent.DESCRIPTOR.fields_by_number


class RayEventBase:
    """One recordable event: base fields plus one payload message.

    Subclasses set the class attributes below; see ``docs/events.md`` ("Creating new event
    types") for a complete example of a user-defined type.
    """

    __slots__ = (
        "_payload",
        "event_id",
        "merged_count",
        "message",
        "session_name",
        "severity",
        "source_type",
        "timestamp_ns",
    )

    #: ``RayEvent.EventType`` number of this class (a new number for a user-defined type).
    EVENT_TYPE: ClassVar[int]
    #: The payload message class, e.g. ``pb.ActorLifecycleEvent``.
    PAYLOAD_TYPE: ClassVar[type[Message]]
    #: Field number of the payload in ``RayEvent`` (e.g. 17 for ``actor_lifecycle_event``). A
    #: number ``RayEvent`` does not define is written as a length-delimited unknown field, which
    #: aggregators pass through unchanged.
    PAYLOAD_FIELD_NUMBER: ClassVar[int]
    #: ``RayEvent.SourceType`` used when the caller does not give one.
    DEFAULT_SOURCE_TYPE: ClassVar[int] = pb.RayEvent.CORE_WORKER
    #: Payload fields the constructor insists on (the entity id, usually).
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: False for events that must never be grouped (Ray's ``PythonRayEvent``).
    SUPPORTS_MERGE: ClassVar[bool] = True

    event_id: bytes
    timestamp_ns: int
    severity: int
    message: str
    session_name: str
    source_type: int
    merged_count: int
    _payload: Message

    def __init__(
        self,
        *,
        timestamp: object = None,
        severity: int | str = "INFO",
        message: str = "",
        session_name: str = "",
        source_type: int | str | None = None,
        **fields: object,
    ) -> None:
        payload = self.PAYLOAD_TYPE()
        what = type(self).__name__
        self._init_base(timestamp, severity, message, session_name, source_type)
        self._fill_payload(payload, fields, what)
        missing = [name for name in self.REQUIRED_FIELDS if name not in fields]
        if missing:
            raise TypeError(f"{what} needs {', '.join(missing)}.")
        self._payload = payload

    def _init_base(
        self,
        timestamp: object,
        severity: int | str,
        message: str,
        session_name: str,
        source_type: int | str | None,
    ) -> None:
        what = type(self).__name__
        self.event_id = os.urandom(EVENT_ID_BYTES)
        self.timestamp_ns = (
            time.time_ns()
            if timestamp is None
            else timestamp_ns(timestamp, what=f"{what} timestamp")
        )
        self.severity = enum_number(_SEVERITY, severity, what=f"{what} severity")
        self.source_type = enum_number(
            _SOURCE_TYPE,
            self.DEFAULT_SOURCE_TYPE if source_type is None else source_type,
            what=f"{what} source_type",
        )
        if not isinstance(message, str) or not isinstance(session_name, str):
            raise TypeError(f"{what} message and session_name must be str.")
        self.message = message
        self.session_name = session_name
        self.merged_count = 1

    def _fill_payload(self, payload: Message, fields: Mapping[str, object], what: str) -> None:
        fill_message(payload, fields, what=what)

    @classmethod
    def from_payload(
        cls,
        payload: Message,
        *,
        timestamp_ns: int | None = None,
        severity: int = pb.RayEvent.INFO,
        message: str = "",
        session_name: str = "",
        source_type: int | None = None,
        event_id: bytes | None = None,
    ) -> Self:
        """Wrap an already-built payload message (taking ownership), skipping value coercion.

        The fast path for producers that build protobuf messages themselves.
        """
        if payload.DESCRIPTOR is not cls.PAYLOAD_TYPE.DESCRIPTOR:
            raise TypeError(
                f"{cls.__name__}.from_payload takes a {cls.PAYLOAD_TYPE.DESCRIPTOR.full_name}, "
                f"got a {payload.DESCRIPTOR.full_name}."
            )
        self = cls.__new__(cls)
        self.event_id = os.urandom(EVENT_ID_BYTES) if event_id is None else event_id
        self.timestamp_ns = time.time_ns() if timestamp_ns is None else timestamp_ns
        self.severity = severity
        self.message = message
        self.session_name = session_name
        self.source_type = cls.DEFAULT_SOURCE_TYPE if source_type is None else source_type
        self.merged_count = 1
        self._payload = payload
        return self

    # --- identity -------------------------------------------------------------------------

    @property
    def payload(self) -> Message:
        """The payload message (owned by the event; copy it before keeping it elsewhere)."""
        return self._payload

    @property
    def entity_id(self) -> bytes:
        """Identifies the entity this event is about; events merge only within one entity."""
        raise NotImplementedError

    @property
    def merge_key(self) -> tuple[object, ...]:
        """Events with equal keys are merged before export (Ray: entity id and event type)."""
        if not self.SUPPORTS_MERGE:
            return (self.event_id,)
        return (self.entity_id, self.EVENT_TYPE)

    # --- merge ----------------------------------------------------------------------------

    def merge(self, other: RayEventBase) -> None:
        """Fold ``other`` (a later event of the same entity and type) into this one, in place."""
        if not self.SUPPORTS_MERGE or not other.SUPPORTS_MERGE:
            raise TypeError(f"{type(self).__name__} events are never merged.")
        if other.EVENT_TYPE != self.EVENT_TYPE or other.entity_id != self.entity_id:
            raise ValueError(
                f"cannot merge a {type(other).__name__} of entity {other.entity_id.hex()} into a "
                f"{type(self).__name__} of entity {self.entity_id.hex()}; only events with the "
                "same entity id and type merge."
            )
        self.merge_data(other._payload)
        self.merged_count += other.merged_count

    def merge_data(self, other: Message) -> None:
        """Combine ``other``'s payload into ours. Default: keep the first (definition events)."""

    # --- serialize ------------------------------------------------------------------------

    def serialize_into(self, target: pb.RayEvent) -> None:
        """Fill an empty ``RayEvent`` (e.g. one just added to a request) with this event."""
        event: Any = target  # enum fields are typed as NewTypes; ours are plain ints
        event.event_id = self.event_id
        event.source_type = self.source_type
        event.event_type = self.EVENT_TYPE
        set_timestamp(event.timestamp, self.timestamp_ns)
        event.severity = self.severity
        event.message = self.message
        event.session_name = self.session_name
        if self.PAYLOAD_FIELD_NUMBER in _RAY_EVENT_FIELDS:
            name = _RAY_EVENT_FIELDS[self.PAYLOAD_FIELD_NUMBER].name
            getattr(event, name).CopyFrom(self._payload)
        else:
            event.MergeFromString(_length_delimited(self.PAYLOAD_FIELD_NUMBER, self._payload))

    def serialize(self) -> pb.RayEvent:
        """This event as Ray's wire message (a new message; the event is unchanged)."""
        event = pb.RayEvent()
        self.serialize_into(event)
        return event

    def copy(self) -> Self:
        """A deep copy (same event id): merging into the copy leaves this event untouched."""
        twin = type(self).__new__(type(self))
        for slot in RayEventBase.__slots__:
            setattr(twin, slot, getattr(self, slot))
        twin._payload = type(self._payload)()
        twin._payload.CopyFrom(self._payload)
        return twin

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} entity={self.entity_id.hex()} id={self.event_id.hex()[:12]}… "
            f"merged={self.merged_count}>"
        )


def _length_delimited(field_number: int, payload: Message) -> bytes:
    return length_delimited(field_number, payload.SerializeToString())
