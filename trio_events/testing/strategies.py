"""Hypothesis strategies for anything that sends or receives Ray 2.60 events.

Needs hypothesis (``pip install trio-events[testing]``). Guarantees, per strategy:

**Always valid** (parse with Ray 2.60's schema, serialize, and convert to JSON; what some
real Ray could send):

- :func:`ray_events` (any of the 17 types, or one), :func:`add_events_requests`,
  :func:`publisher_posts` / :func:`json_bodies` (bodies built by trio-events' converter, equal
  to protobuf's ``MessageToJson`` with Ray's flags), :func:`entity_histories`,
  :func:`entity_events`, and the scalar helpers :func:`ray_ids`, :func:`texts`,
  :func:`timestamps`, :func:`timestamp_parts`, :func:`unknown_fields`.
- Ids have Ray's sizes (:data:`ID_SIZES`); timestamps lie in protobuf's range with 0, 3, 6 or 9
  fractional digits; strings are any Unicode protobuf accepts (controls, NUL, astral planes).
- With ``newer_ray=True`` (the default) values may include what a newer Ray sends and protobuf
  keeps: enum numbers 2.60 does not name (printed as integers in JSON), unknown fields, event
  types above 17. Pass ``newer_ray=False`` for strictly 2.60 values.
- Maps are empty, small, or large (100-300 entries); doubles include NaN and infinities, and
  integers their type's extremes: valid, but not what a healthy cluster usually reports.

**May be hostile** (the ``hostile_*`` strategies, returning :class:`Hostile`): wire-level
invalid UTF-8, unknown fields, truncated messages, oversized fields, garbage; for JSON also
wrong types, a body that is not an array, and deep nesting. Only the ``unknown_fields`` kind is
still valid input.

Every strategy shrinks towards its simplest case: fewer events, unset optional fields, empty
strings, the epoch, the first enum value, a single entity and no retries.
"""

from __future__ import annotations

try:
    import hypothesis as _hypothesis
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "trio_events.testing.strategies needs hypothesis; "
        "install it with `pip install trio-events[testing]`."
    ) from exc

from trio_events.testing._histories import HISTORY_KINDS as HISTORY_KINDS
from trio_events.testing._histories import EntityHistory as EntityHistory
from trio_events.testing._histories import entity_events as entity_events
from trio_events.testing._histories import entity_histories as entity_histories
from trio_events.testing._hostile import JSON_DAMAGE as JSON_DAMAGE
from trio_events.testing._hostile import WIRE_DAMAGE as WIRE_DAMAGE
from trio_events.testing._hostile import Hostile as Hostile
from trio_events.testing._hostile import hostile_add_events_requests as hostile_add_events_requests
from trio_events.testing._hostile import hostile_event_bytes as hostile_event_bytes
from trio_events.testing._hostile import hostile_json_bodies as hostile_json_bodies
from trio_events.testing._messages import EVENT_PAYLOAD_FIELDS as EVENT_PAYLOAD_FIELDS
from trio_events.testing._messages import PublisherPost as PublisherPost
from trio_events.testing._messages import add_events_requests as add_events_requests
from trio_events.testing._messages import json_bodies as json_bodies
from trio_events.testing._messages import make_post as make_post
from trio_events.testing._messages import publisher_posts as publisher_posts
from trio_events.testing._messages import ray_events as ray_events
from trio_events.testing._traits import body_traits as body_traits
from trio_events.testing._values import ID_SIZES as ID_SIZES
from trio_events.testing._values import nanos as nanos
from trio_events.testing._values import ray_ids as ray_ids
from trio_events.testing._values import texts as texts
from trio_events.testing._values import timestamp_parts as timestamp_parts
from trio_events.testing._values import timestamps as timestamps
from trio_events.testing._values import unknown_fields as unknown_fields

del _hypothesis

__all__ = [
    "EVENT_PAYLOAD_FIELDS",
    "HISTORY_KINDS",
    "ID_SIZES",
    "JSON_DAMAGE",
    "WIRE_DAMAGE",
    "EntityHistory",
    "Hostile",
    "PublisherPost",
    "add_events_requests",
    "body_traits",
    "entity_events",
    "entity_histories",
    "hostile_add_events_requests",
    "hostile_event_bytes",
    "hostile_json_bodies",
    "json_bodies",
    "make_post",
    "nanos",
    "publisher_posts",
    "ray_events",
    "ray_ids",
    "texts",
    "timestamp_parts",
    "timestamps",
    "unknown_fields",
]
