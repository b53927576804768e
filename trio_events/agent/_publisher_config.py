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
    "DEFAULT_MAX_BATCH_BYTES",
    "PublisherConfig",
    "PublisherStatistics",
]


def _default_exposable_event_types() -> frozenset[int]:
    types = parse_exposable_event_types(DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES)
    assert types is not None  # only "ALL" parses to None
    return types


#: Ray 2.60's HTTP default: everything but TASK_PROFILE_EVENT, placement groups, submission jobs.
DEFAULT_EXPOSABLE_EVENT_TYPES: Final = _default_exposable_event_types()

#: Default bound of one request body: under the 1 MiB that nginx (``client_max_body_size``) and
#: the Kubernetes ingress-nginx controller (``proxy-body-size``) accept by default, the smallest
#: limit common in front of HTTP receivers (docs/publishing.md has the table).
DEFAULT_MAX_BATCH_BYTES: Final = 1_000_000
#: A body bound smaller than this would split ordinary events; it is refused as a mistake.
MIN_BATCH_BYTES: Final = 1024


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
    for name in ("max_in_flight", "split_after_failures"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"PublisherConfig.{name} must be an int >= 1, got {value!r}.")
    if isinstance(config.max_batch_bytes, bool) or config.max_batch_bytes < MIN_BATCH_BYTES:
        raise ValueError(
            f"PublisherConfig.max_batch_bytes must be >= {MIN_BATCH_BYTES}, got "
            f"{config.max_batch_bytes!r}."
        )
    if config.dead_letter_max_bytes < 1:
        raise ValueError(
            f"PublisherConfig.dead_letter_max_bytes must be >= 1, got "
            f"{config.dead_letter_max_bytes!r}."
        )
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
    seconds. A ``Retry-After`` longer than the backoff is honoured, up to ``max_retry_after``
    (30 s: a sink cannot stall a publisher for longer per retry).

    Delivery (docs/publishing.md): up to ``max_in_flight`` batches in flight, the number adapted
    to the sink's round-trip time when ``adaptive_in_flight`` (1 keeps strict order); each
    request body at most ``max_batch_bytes`` (a single larger event goes alone). A batch the
    sink refuses permanently (4xx but 408 and 429, 413 included), or that fails with a 5xx
    other than 503/504 ``split_after_failures`` times while other batches get through, is
    bisected to deliver its good events and drop only the refused ones; ``dead_letter`` names
    an optional JSON-lines file that keeps those (bounded by ``dead_letter_max_bytes``).
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
    max_retry_after: float = 30.0
    attempt_timeout: float = 3.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    converter: Literal["compiled", "protobuf"] = "compiled"
    max_in_flight: int = 16
    adaptive_in_flight: bool = True
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    split_after_failures: int = 3
    dead_letter: str | None = None
    dead_letter_max_bytes: int = 100 * 1024 * 1024

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
    in_flight: int  #: taken from the buffer, not yet resolved (converting, queued or posting)
    unread: int  #: still in the buffer for this publisher
    attempts: int  #: publish attempts made
    consecutive_failures: int  #: failed attempts since the last success
    draining: bool
    #: with a durable buffer: unread or in flight when run() ended, kept for the next start
    retained: int = 0
    #: ``trio.current_time()`` of the last success (of the start, before the first one); a
    #: moment, not a count, so it takes no part in comparing statistics
    last_success: float = attrs.field(default=0.0, eq=False)
    #: with a durable buffer: settled when run() ended but past the committed position (a batch
    #: before them was still in flight), so a restart sends them again
    redeliverable: int = 0
    in_flight_limit: int = 1  #: batches allowed in flight now (adaptive)
    batches_in_flight: int = 0  #: batches dispatched and not settled
    splits: int = 0  #: batches (or parts) bisected to isolate refused events
    dead_lettered: int = 0  #: dropped events written to the dead-letter file

    def summary(self) -> str:
        """The supervisor's final line for this publisher."""
        line = f"delivered={self.delivered} dropped={self.dropped} abandoned={self.abandoned}"
        return f"{line} retained={self.retained}" if self.retained else line
