"""The kinds of event the concrete types in ``_events.py`` are built from.

- :class:`_SingleIdEvent`: the entity is one payload field (actor, job, node, worker ...).
- :class:`_LifecycleEvent`: a list of state transitions that merging appends to; constructors
  take one transition as keywords or several as ``transitions=[...]``.
- :class:`_TaskAttemptEvent`: the entity is the task attempt (task id + attempt number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from google.protobuf.message import Message

from trio_events.producer._coerce import fill_message
from trio_events.producer._event_base import RayEventBase

_ATTEMPT_BYTES = 4  # fixed width, so task id + attempt is unambiguous for any task id length


def _task_entity(task_id: bytes, attempt: int) -> bytes:
    return task_id + attempt.to_bytes(_ATTEMPT_BYTES, "big", signed=True)


class _SingleIdEvent(RayEventBase):
    """An event whose entity id is one payload field (actor, job, node, worker, ...)."""

    __slots__ = ()
    ENTITY_FIELD: ClassVar[str]

    @property
    def entity_id(self) -> bytes:
        value = getattr(self._payload, self.ENTITY_FIELD)
        return value.encode() if isinstance(value, str) else bytes(value)


class _LifecycleEvent(_SingleIdEvent):
    """Lifecycle events: a list of state transitions that merging appends to."""

    __slots__ = ()
    TRANSITIONS_FIELD: ClassVar[str] = "state_transitions"
    #: Keyword aliases for transition fields whose names the base fields already use.
    TRANSITION_ALIASES: ClassVar[Mapping[str, str]] = {}

    def _fill_payload(self, payload: Message, fields: Mapping[str, object], what: str) -> None:
        top_level = payload.DESCRIPTOR.fields_by_name
        repeated: Any = getattr(payload, self.TRANSITIONS_FIELD)
        transition_type = top_level[self.TRANSITIONS_FIELD].message_type
        assert transition_type is not None
        own: dict[str, object] = {}
        one: dict[str, object] = {}
        transitions: object = None
        for name, value in fields.items():
            if name == "transitions":
                transitions = value
            elif name in top_level and name != self.TRANSITIONS_FIELD:
                own[name] = value
            elif name in self.TRANSITION_ALIASES:
                one[self.TRANSITION_ALIASES[name]] = value
            elif name in transition_type.fields_by_name and name != "timestamp":
                one[name] = value
            else:
                valid = sorted(
                    {*top_level, *transition_type.fields_by_name, *self.TRANSITION_ALIASES}
                    - {self.TRANSITIONS_FIELD, "timestamp", "message"}
                    | {"transitions"}
                )
                raise TypeError(
                    f"{what} has no field {name!r}; valid fields are: {', '.join(valid)}."
                )
        fill_message(payload, own, what=what)
        if one and transitions is not None:
            raise TypeError(f"{what} takes either transitions=[...] or one transition's fields.")
        items: list[object] = [one] if one else []
        if transitions is not None:
            if isinstance(transitions, str | bytes | Mapping) or not hasattr(
                transitions, "__iter__"
            ):
                raise TypeError(f"{what}.transitions must be a list of dicts or messages.")
            items = list(transitions)
        for i, item in enumerate(items):
            target = repeated.add()
            if isinstance(item, Message):
                target.CopyFrom(item)
                continue
            if not isinstance(item, Mapping):
                raise TypeError(f"{what}.transitions[{i}] must be a dict or a message.")
            values = dict(item)
            values.setdefault("timestamp", self.timestamp_ns)
            fill_message(target, values, what=f"{what}.transitions[{i}]")

    def merge_data(self, other: Message) -> None:
        getattr(self._payload, self.TRANSITIONS_FIELD).extend(
            getattr(other, self.TRANSITIONS_FIELD)
        )


class _TaskAttemptEvent(RayEventBase):
    """Task events: the entity is the task attempt (task id + attempt number)."""

    __slots__ = ()
    REQUIRED_FIELDS = ("task_id",)
    ATTEMPT_FIELD: ClassVar[str] = "task_attempt"

    @property
    def entity_id(self) -> bytes:
        p: Any = self._payload
        return _task_entity(p.task_id, getattr(p, self.ATTEMPT_FIELD))
