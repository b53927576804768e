"""Which event types a publisher exposes (Ray's ``..._AGENT_EXPOSABLE_EVENT_TYPES`` setting)."""

from __future__ import annotations

from trio_events import pb

#: Ray 2.60's default for the HTTP publisher (``publisher/configs.py``), verbatim: the trailing
#: comma is Ray's and parses to nothing. TASK_PROFILE_EVENT and the placement-group and
#: submission-job types are not exposed unless asked for.
DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES = (
    "TASK_DEFINITION_EVENT,TASK_LIFECYCLE_EVENT,ACTOR_TASK_DEFINITION_EVENT,"
    "DRIVER_JOB_DEFINITION_EVENT,DRIVER_JOB_LIFECYCLE_EVENT,ACTOR_DEFINITION_EVENT,"
    "ACTOR_LIFECYCLE_EVENT,NODE_DEFINITION_EVENT,NODE_LIFECYCLE_EVENT,"
    "WORKER_DEFINITION_EVENT,WORKER_LIFECYCLE_EVENT,PLATFORM_EVENT,"
)


def parse_exposable_event_types(value: str) -> frozenset[int] | None:
    """Parse a comma-separated list of ``RayEvent.EventType`` names into their numbers.

    ``"ALL"`` (any case, Ray 2.60) returns None, meaning every type including ones newer than our
    schema. Otherwise items are stripped and empty ones dropped; names match exactly, as in Ray,
    and an empty list exposes nothing. Unlike Ray, which silently ignores a misspelt name, an
    unknown name is a ValueError, so a typo cannot hide a whole event type.
    """
    if value.strip().upper() == "ALL":
        return None
    names = [item.strip() for item in value.split(",")]
    names = [name for name in names if name]
    unknown = sorted({name for name in names if name not in pb.EVENT_TYPES_BY_NAME})
    if unknown:
        valid = ", ".join(pb.EVENT_TYPE_NAMES[n] for n in sorted(pb.EVENT_TYPE_NAMES))
        raise ValueError(
            f"Unknown event type name(s) {', '.join(unknown)}: expected ALL or a comma-separated "
            f"list of {valid}."
        )
    return frozenset(pb.EVENT_TYPES_BY_NAME[name] for name in names)
