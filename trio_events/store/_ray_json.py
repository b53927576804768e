"""Reading Ray's exported event JSON, in either key style, without the protobuf classes.

An HTTP sink receives what ``MessageToJson`` made of each ``RayEvent``: lowerCamelCase keys by
default, the proto field names when the exporter sets ``preserving_proto_field_name``. Every
accessor here takes the proto (snake_case) name and looks for both spellings, so the collector,
the store and the queries never care which style a sender used.

Nothing here raises on odd input: a value of the wrong JSON type reads as absent. The raw JSON is
always kept by the store, so leniency loses nothing; strictness lives in the one place that must
reject a body (the store's row builder, for ``eventId`` and ``eventType``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Final, final

import attrs

JsonObject = Mapping[str, object]


@functools.cache
def camel(snake: str) -> str:
    """The lowerCamelCase JSON name protobuf gives the proto field name ``snake``."""
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def field(obj: JsonObject, snake: str) -> object:
    """The value of field ``snake`` in either key style, or None when absent."""
    value = obj.get(camel(snake))
    return obj.get(snake) if value is None else value


def text(obj: JsonObject, snake: str) -> str:
    value = field(obj, snake)
    return value if isinstance(value, str) else ""


def integer(obj: JsonObject, snake: str) -> int | None:
    """An integer field; 64-bit integers arrive as JSON strings, 32-bit ones as numbers."""
    value = field(obj, snake)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def child(obj: JsonObject, snake: str) -> JsonObject | None:
    value = field(obj, snake)
    return value if isinstance(value, Mapping) else None


def children(obj: JsonObject, snake: str) -> list[JsonObject]:
    value = field(obj, snake)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def decode_b64(value: str, *, unpadded: bool = False) -> bytes | None:
    """Bytes of a base64 field (standard alphabet as protobuf writes it, or URL-safe), else None.

    ``unpadded=True`` also takes base64 without its ``=`` padding, as protobuf's JSON parser
    does (for event ids; a user's typed id is not guessed at that hard).
    """
    if unpadded and len(value) % 4:
        value += "=" * (-len(value) % 4)
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(value, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def id_hex(value: object) -> str:
    """An ID field shown as Ray shows IDs (hex); a value that is not base64 is kept as it is."""
    if not isinstance(value, str) or not value:
        return ""
    raw = decode_b64(value)
    return value if raw is None else raw.hex()


_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def id_candidates(user_text: str) -> tuple[str, ...]:
    """The stored forms an ID typed by a user may have: as hex, as base64 decoded to hex, as is.

    Trying every reading instead of guessing keeps input unambiguous in practice: a real Ray ID
    read the wrong way does not collide with another entity's ID.
    """
    candidates: list[str] = []
    if _HEX.match(user_text):
        candidates.append(user_text.lower())
    raw = decode_b64(user_text)
    if raw:
        candidates.append(raw.hex())
    candidates.append(user_text)
    return tuple(dict.fromkeys(candidates))


_TIMESTAMP: Final = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$"
)


@functools.lru_cache(maxsize=4096)
def _epoch_seconds(date_time: str) -> int | None:
    # Cached: the events of one batch mostly share their second, and datetime is the slow part.
    try:
        moment = datetime.datetime.fromisoformat(date_time).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    return int(moment.timestamp())


def timestamp_ns(value: object) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp as protobuf writes it, else None."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value)
    if match is None:
        return None
    date_time, fraction, sign, off_h, off_m = match.groups()
    seconds = _epoch_seconds(date_time)
    if seconds is None:
        return None
    if sign is not None:
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


@final
@attrs.frozen
class PayloadSpec:
    """Where one event type keeps its payload and how that payload names its entity."""

    payload: str
    kind: str
    id_field: str
    attempt_field: str | None = None
    name_fields: tuple[str, ...] = ()
    # Submission IDs are strings in the schema; every other entity ID is bytes (base64).
    id_is_bytes: bool = True


_TASK = "task"
_PG = "placement_group"
_SUBMISSION = "submission_job"
_NODE_NAMES = ("node_name", "hostname", "node_ip_address")
PAYLOADS: Final[Mapping[str, PayloadSpec]] = {
    "TASK_DEFINITION_EVENT": PayloadSpec(
        "task_definition_event", _TASK, "task_id", "task_attempt", name_fields=("task_name",)
    ),
    "TASK_LIFECYCLE_EVENT": PayloadSpec("task_lifecycle_event", _TASK, "task_id", "task_attempt"),
    "ACTOR_TASK_DEFINITION_EVENT": PayloadSpec(
        "actor_task_definition_event", _TASK, "task_id", "task_attempt", ("actor_task_name",)
    ),
    "TASK_PROFILE_EVENT": PayloadSpec("task_profile_events", _TASK, "task_id", "attempt_number"),
    "DRIVER_JOB_DEFINITION_EVENT": PayloadSpec(
        "driver_job_definition_event", "job", "job_id", name_fields=("entrypoint",)
    ),
    "DRIVER_JOB_LIFECYCLE_EVENT": PayloadSpec("driver_job_lifecycle_event", "job", "job_id"),
    "NODE_DEFINITION_EVENT": PayloadSpec(
        "node_definition_event", "node", "node_id", name_fields=_NODE_NAMES
    ),
    "NODE_LIFECYCLE_EVENT": PayloadSpec("node_lifecycle_event", "node", "node_id"),
    "ACTOR_DEFINITION_EVENT": PayloadSpec(
        "actor_definition_event", "actor", "actor_id", name_fields=("name", "class_name")
    ),
    "ACTOR_LIFECYCLE_EVENT": PayloadSpec("actor_lifecycle_event", "actor", "actor_id"),
    "PLACEMENT_GROUP_DEFINITION_EVENT": PayloadSpec(
        "placement_group_definition_event", _PG, "placement_group_id", name_fields=("name",)
    ),
    "PLACEMENT_GROUP_LIFECYCLE_EVENT": PayloadSpec(
        "placement_group_lifecycle_event", _PG, "placement_group_id"
    ),
    "SUBMISSION_JOB_DEFINITION_EVENT": PayloadSpec(
        "submission_job_definition_event",
        _SUBMISSION,
        "submission_id",
        name_fields=("entrypoint",),
        id_is_bytes=False,
    ),
    "SUBMISSION_JOB_LIFECYCLE_EVENT": PayloadSpec(
        "submission_job_lifecycle_event", _SUBMISSION, "submission_id", id_is_bytes=False
    ),
    "WORKER_DEFINITION_EVENT": PayloadSpec("worker_definition_event", "worker", "worker_id"),
    "WORKER_LIFECYCLE_EVENT": PayloadSpec("worker_lifecycle_event", "worker", "worker_id"),
}

ENTITY_KINDS: Final[tuple[str, ...]] = tuple(dict.fromkeys(s.kind for s in PAYLOADS.values()))


@final
@attrs.frozen
class Entity:
    """The entity one event is about, as derived from its payload."""

    kind: str
    id: str  # hex for byte IDs, the string itself for submission IDs
    attempt: int | None
    name: str
    payload: JsonObject
    spec: PayloadSpec


def entity_of(event: JsonObject, event_type: str) -> Entity | None:
    """The entity of ``event``: from the payload its type names, else the first payload present.

    ``RayEvent`` has no ``oneof`` (one payload is *expected*), so an event whose type is unknown
    to us (a newer Ray) or does not match its payload is still attributed when it can be.
    """
    spec = PAYLOADS.get(event_type)
    specs: Sequence[PayloadSpec] = [spec] if spec is not None else []
    for candidate in [*specs, *PAYLOADS.values()]:
        payload = child(event, candidate.payload)
        if payload is None:
            continue
        raw_id = field(payload, candidate.id_field)
        entity_id = id_hex(raw_id) if candidate.id_is_bytes else text(payload, candidate.id_field)
        attempt = None
        if candidate.attempt_field is not None:
            attempt = integer(payload, candidate.attempt_field) or 0
        name = next((t for t in (text(payload, f) for f in candidate.name_fields) if t), "")
        return Entity(candidate.kind, entity_id, attempt, name, payload, candidate)
    return None


def error_info(payload: JsonObject) -> tuple[str, str]:
    """(error type, error message) of a task lifecycle payload's ``ray_error_info``, or blanks."""
    info = child(payload, "ray_error_info")
    if info is None:
        return "", ""
    return text(info, "error_type"), text(info, "error_message")
