"""A publisher's settings, its statistics, and what it needs from a destination client."""

from __future__ import annotations

import math
from typing import Final, Literal, final

import attrs

from trio_events.agent._convert import DEFAULT_CHUNK_SIZE
from trio_events.agent._filtering import (
    DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES,
    parse_exposable_event_types,
)

__all__ = [
    "DEFAULT_EXPOSABLE_EVENT_TYPES",
    "PublisherConfig",
    "PublisherStatistics",
]


def _default_exposable_event_types() -> frozenset[int]:
    types = parse_exposable_event_types(DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES)
    assert types is not None  # only "ALL" parses to None
    return types


#: Ray 2.60's HTTP default: everything but TASK_PROFILE_EVENT, placement groups, submission jobs.
DEFAULT_EXPOSABLE_EVENT_TYPES: Final = _default_exposable_event_types()


def _check(config: PublisherConfig) -> None:
    if not config.name:
        raise ValueError("A publisher needs a non-empty name (its buffer consumer name).")
    non_negative = ("linger", "initial_backoff", "max_backoff", "max_retry_after")
    for name in non_negative:
        value = getattr(config, name)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"PublisherConfig.{name} must be a number >= 0, got {value!r}.")
    if not 0 <= config.jitter <= 1:
        raise ValueError(f"PublisherConfig.jitter must be between 0 and 1, got {config.jitter!r}.")
    if isinstance(config.max_retries, bool) or config.max_retries < -1:
        raise ValueError(
            f"PublisherConfig.max_retries must be -1 (unlimited) or >= 0, got "
            f"{config.max_retries!r}."
        )
    if config.give_up_after is not None and not config.give_up_after > 0:
        raise ValueError(
            f"PublisherConfig.give_up_after must be None (never) or > 0 seconds, got "
            f"{config.give_up_after!r}."
        )
    if not config.attempt_timeout > 0:
        raise ValueError(
            f"PublisherConfig.attempt_timeout must be > 0 seconds, got {config.attempt_timeout!r}."
        )
    if config.chunk_size < 1:
        raise ValueError(f"PublisherConfig.chunk_size must be >= 1, got {config.chunk_size!r}.")
    if config.converter not in ("compiled", "protobuf"):
        raise ValueError(
            f"PublisherConfig.converter must be 'compiled' or 'protobuf', got {config.converter!r}."
        )


@final
@attrs.frozen
class PublisherConfig:
    """How one publisher reads, converts and retries (Ray's names and 2.60 defaults).

    ``exposable_event_types`` is a set of ``RayEvent.EventType`` numbers, or None for all types
    (``ALL``). ``linger`` is Ray's MAX_BUFFER_SEND_INTERVAL. ``max_retries`` -1 retries forever
    (Ray's default); ``give_up_after`` additionally drops a batch still failing after that many
    seconds. A ``Retry-After`` longer than the backoff is honoured, up to ``max_retry_after``.
    ``attempt_timeout`` should be the client's timeout: when a drain has less than twice that
    left, each batch gets a single attempt. ``converter`` is for benchmarks only: ``"protobuf"``
    converts with protobuf's ``MessageToJson`` exactly as Ray does (same JSON value, about ten
    times slower), the reference the compiled converter is measured against.
    """

    name: str = "http_service"
    exposable_event_types: frozenset[int] | None = DEFAULT_EXPOSABLE_EVENT_TYPES
    preserve_proto_field_name: bool = False
    linger: float = 0.1
    max_retries: int = -1
    give_up_after: float | None = None
    initial_backoff: float = 0.01
    max_backoff: float = 5.0
    jitter: float = 0.1
    max_retry_after: float = 300.0
    attempt_timeout: float = 3.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    converter: Literal["compiled", "protobuf"] = "compiled"

    def __attrs_post_init__(self) -> None:
        _check(self)


@final
@attrs.frozen
class PublisherStatistics:
    """Event counts of one publisher since it started (see the module docstring)."""

    name: str
    delivered: int  #: accepted by the sink
    filtered: int  #: not exposed to this sink, never sent
    dropped: int  #: given up on: permanent error, retries exhausted, unconvertible
    abandoned: int  #: unread or in flight when run() ended
    in_flight: int  #: taken from the buffer, not yet resolved
    unread: int  #: still in the buffer for this publisher
    attempts: int  #: publish attempts made
    consecutive_failures: int  #: failed attempts since the last success
    draining: bool
    #: with a durable buffer: unread or in flight when run() ended, kept for the next start
    retained: int = 0
    #: ``trio.current_time()`` of the last success (of the start, before the first one); a
    #: moment, not a count, so it takes no part in comparing statistics
    last_success: float = attrs.field(default=0.0, eq=False)

    def summary(self) -> str:
        """The supervisor's final line for this publisher."""
        line = f"delivered={self.delivered} dropped={self.dropped} abandoned={self.abandoned}"
        return f"{line} retained={self.retained}" if self.retained else line
