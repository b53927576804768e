"""The recorder's synchronous core: a bounded, thread-safe ring with exact accounting.

No I/O and no trio here, so that producers on any thread can use it and tests (including a
hypothesis state machine) can drive it step by step. Counts are in *recorded* events: an entry
that stands for several merged events counts its ``merged_count``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Protocol, final

import attrs

from trio_events.producer._event_base import RayEventBase

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from prometheus_client import Counter

    from trio_events._metrics import Metrics
    from trio_events.producer._client import ExportError

_log = logging.getLogger("trio_events.recorder")


@final
@attrs.frozen
class RecorderStatistics:
    """A snapshot of a recorder's accounting, in recorded events (``merged_count``).

    ``added == exported + dropped + buffered + in_flight`` holds in every snapshot.
    """

    added: int
    exported: int
    dropped: int
    buffered: int
    in_flight: int
    dropped_by_reason: Mapping[str, int]
    export_failures: int
    consecutive_failures: int
    queued_entries: int
    capacity: int


@final
@attrs.frozen
class ExportBatch:
    """What one export sends: merged events in order, and how many recorded events they hold.

    ``dropped_task_attempts`` (task id, attempt number) go in the request's
    ``task_events_metadata``; only the task-event ring (``_task_ring``) reports any.
    """

    events: list[RayEventBase]
    count: int
    dropped_task_attempts: tuple[tuple[bytes, int], ...] = ()


class RecorderRing(Protocol):
    """What RayEventRecorder needs from its synchronous core (EventRing, TaskEventRing)."""

    @property
    def buffered(self) -> int: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def has_metadata(self) -> bool:
        """Whether something must be sent even with no event buffered (dropped attempts)."""
        ...

    def add(self, event: RayEventBase) -> None: ...
    def add_many(self, events: Iterable[RayEventBase]) -> None: ...
    def close(self) -> None: ...
    def take(self, max_events: int | None = None, max_bytes: int | None = None) -> ExportBatch: ...
    def exported(self, batch: ExportBatch) -> None: ...
    def failed(self, batch: ExportBatch, error: ExportError) -> None: ...
    def refused_as_too_big(self, batch: ExportBatch) -> None: ...
    def interrupted(self, batch: ExportBatch) -> None: ...
    def drop_all(self, reason: str) -> int: ...
    def take_unlogged_drops(self) -> dict[str, int]: ...
    def statistics(self) -> RecorderStatistics: ...


# Bytes a serialized RayEvent needs besides its payload: 28-byte event and node ids with their
# tags, a timestamp, three enums and the payload's own tag and length, rounded up.
_BASE_BYTES = 96


def _is_plain(cls: type[RayEventBase]) -> bool:
    """Whether ``cls`` merges exactly as RayEventBase defines it (merge_key and merge)."""
    return (
        cls.SUPPORTS_MERGE
        and cls.merge_key is RayEventBase.merge_key
        and cls.merge is RayEventBase.merge
    )


@final
class EventRing:
    """Holds at most ``capacity`` entries; the oldest go first (see RayEventRecorder).

    Entries are *fresh* (as added; they may merge at the next export) or *sealed* (the merged
    events of a failed export: re-sent unchanged, never merged again). Sealed entries are
    always older than fresh ones, so they sit in front.
    """

    def __init__(self, capacity: int, *, source: str, metrics: Metrics) -> None:
        self._capacity = capacity
        self._source = source
        self._lock = threading.Lock()  # guards everything below; held only briefly
        self._fresh: deque[RayEventBase] = deque()
        self._sealed: deque[RayEventBase] = deque()
        self._accepting = True
        self._added = self._exported = self._buffered = self._in_flight = 0
        self._dropped: dict[str, int] = {}
        self._unlogged_drops: dict[str, int] = {}
        self._export_failures = self._consecutive_failures = 0
        # Per event class, whether it merges as RayEventBase defines it (see take()).
        self._plain_classes: dict[type[RayEventBase], bool] = {}
        self._m_added = metrics.recorder_events_added.labels(Source=source)
        self._m_exported = metrics.recorder_events_exported.labels(Source=source)
        self._m_dropped = metrics.recorder_dropped_events
        self._m_dropped_children: dict[str, Counter] = {}
        self._m_failures = metrics.recorder_export_failures
        # Computed when scraped, so producers never pay for a gauge update.
        metrics.recorder_buffered_events.labels(Source=source).set_function(
            lambda: float(self._buffered + self._in_flight)
        )

    # --- producers ------------------------------------------------------------------------

    def add(self, event: RayEventBase) -> None:
        n = event.merged_count
        with self._lock:
            if self._accepting:
                if len(self._fresh) + len(self._sealed) >= self._capacity:
                    self._evict_locked(1, "buffer_full")
                self._fresh.append(event)
                self._buffered += n
            else:
                self._count_drop_locked("closed", n)
            self._added += n
        self._m_added.inc(n)

    def add_many(self, events: Iterable[RayEventBase]) -> None:
        batch = list(events)
        n = sum(event.merged_count for event in batch)
        with self._lock:
            if self._accepting:
                self._fresh.extend(batch)
                self._buffered += n
                excess = len(self._fresh) + len(self._sealed) - self._capacity
                if excess > 0:
                    self._evict_locked(excess, "buffer_full")
            else:
                self._count_drop_locked("closed", n)
            self._added += n
        self._m_added.inc(n)

    def close(self) -> None:
        """Stop accepting: later adds are counted as dropped with reason ``closed``."""
        with self._lock:
            self._accepting = False

    # --- the exporter ---------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def has_metadata(self) -> bool:
        return False

    def take(self, max_events: int | None = None, max_bytes: int | None = None) -> ExportBatch:
        """What is buffered, merged by ``merge_key`` (first-occurrence order), now in flight.

        At most ``max_events`` merged events and about ``max_bytes`` of request are taken; the
        rest goes back to the front of the ring, in order (unsent merged events may still absorb
        newer ones). A single event larger than ``max_bytes`` could never be sent: it is dropped
        and counted with reason ``oversized``.
        """
        with self._lock:
            if self._in_flight:
                raise RuntimeError("an export is already in flight; settle it before taking more.")
            sealed, self._sealed = self._sealed, deque()
            fresh, self._fresh = self._fresh, deque()
            count, self._buffered = self._buffered, 0
            self._in_flight = count
        # Merging runs outside the lock: producers keep adding into the new, empty deque.
        groups: dict[tuple[object, ...], RayEventBase] = {}
        merged: list[RayEventBase] = []
        done = 0
        plain = self._plain_classes
        try:
            for event in fresh:
                cls = event.__class__
                is_plain = plain.get(cls)
                if is_plain is None:
                    is_plain = plain[cls] = _is_plain(cls)
                # The base class's merge_key, without the property and SUPPORTS_MERGE lookups.
                key = (event.entity_id, cls.EVENT_TYPE) if is_plain else event.merge_key
                head = groups.get(key)
                if head is None:
                    groups[key] = event
                    merged.append(event)
                else:
                    try:
                        if is_plain and plain[head.__class__]:
                            # Equal base-class keys mean equal entity ids and event types, all
                            # that RayEventBase.merge checks: do its two steps, unchecked.
                            head.merge_data(event._payload)
                            head.merged_count += event.merged_count
                        else:
                            head.merge(event)
                    except (TypeError, ValueError) as exc:
                        # merge() validates before it changes anything: a type whose merge_key
                        # and merge() disagree is sent unmerged rather than stalling the export.
                        _log.error("event not merged: event=%r error=%s", event, exc)
                        merged.append(event)
                done += 1
        except BaseException:
            # A bug in an event class: put everything back (nothing is lost), then re-raise.
            with self._lock:
                self._in_flight = 0
                self._buffered += count
                self._fresh.extendleft(reversed([*merged, *list(fresh)[done:]]))
                self._sealed.extendleft(reversed(sealed))
            raise
        candidates = [*sealed, *merged]
        if max_events is None and max_bytes is None:
            return ExportBatch(candidates, count)
        return self._limit(candidates, len(sealed), max_events, max_bytes)

    def _limit(
        self,
        candidates: list[RayEventBase],
        sealed: int,
        max_events: int | None,
        max_bytes: int | None,
    ) -> ExportBatch:
        taken: list[RayEventBase] = []
        size = 0
        oversized = 0
        stop = len(candidates)
        for i, event in enumerate(candidates):
            if max_events is not None and len(taken) >= max_events:
                stop = i
                break
            if max_bytes is not None:
                # An estimate: the payload plus the base fields (id, timestamp, node id, tags).
                estimate = event._payload.ByteSize() + _BASE_BYTES + len(event.session_name)
                if estimate > max_bytes:
                    oversized += event.merged_count
                    continue
                if taken and size + estimate > max_bytes:
                    stop = i
                    break
                size += estimate
            taken.append(event)
        left = candidates[stop:]
        taken_count = sum(e.merged_count for e in taken)
        with self._lock:
            self._in_flight = taken_count
            if oversized:
                self._count_drop_locked("oversized", oversized)
            if left:
                self._buffered += sum(e.merged_count for e in left)
                left_sealed = left[: max(0, sealed - stop)]
                self._sealed.extendleft(reversed(left_sealed))
                self._fresh.extendleft(reversed(left[len(left_sealed) :]))
        return ExportBatch(taken, taken_count)

    def exported(self, batch: ExportBatch) -> None:
        """The aggregator acknowledged ``batch``."""
        with self._lock:
            self._in_flight = 0
            self._exported += batch.count
            self._consecutive_failures = 0
        self._m_exported.inc(batch.count)

    def failed(self, batch: ExportBatch, error: ExportError) -> None:
        """``batch`` failed: keep it (sealed) if ``error`` is retryable, else drop and count it."""
        with self._lock:
            self._export_failures += 1
            self._consecutive_failures += 1
            if error.retryable:
                self._requeue_locked(batch)
            else:
                self._in_flight = 0
                self._count_drop_locked(error.reason, batch.count)
        label = "backpressure" if error.backpressure else error.reason
        self._m_failures.labels(Source=self._source, reason=label).inc()

    def refused_as_too_big(self, batch: ExportBatch) -> None:
        """RESOURCE_EXHAUSTED for a multi-event request: keep it (sealed) to resend smaller.

        Counted as an export failure, but not as a consecutive one: a smaller request is tried
        at once, and the backoff is for an aggregator that refuses even that.
        """
        with self._lock:
            self._export_failures += 1
            self._requeue_locked(batch)
        self._m_failures.labels(Source=self._source, reason="backpressure").inc()

    def interrupted(self, batch: ExportBatch) -> None:
        """The export was cancelled before an answer: it may have arrived, so keep it sealed."""
        with self._lock:
            self._requeue_locked(batch)

    def drop_all(self, reason: str) -> int:
        """Drop everything buffered (at shutdown), count it under ``reason``; how many."""
        with self._lock:
            self._sealed.clear()
            self._fresh.clear()
            left, self._buffered = self._buffered, 0
            if left:
                self._count_drop_locked(reason, left)
        return left

    def take_unlogged_drops(self) -> dict[str, int]:
        """Drops by reason since the last call (so logs can report them once per tick)."""
        with self._lock:
            pending, self._unlogged_drops = self._unlogged_drops, {}
        return pending

    def statistics(self) -> RecorderStatistics:
        with self._lock:
            return RecorderStatistics(
                added=self._added,
                exported=self._exported,
                dropped=sum(self._dropped.values()),
                buffered=self._buffered,
                in_flight=self._in_flight,
                dropped_by_reason=dict(self._dropped),
                export_failures=self._export_failures,
                consecutive_failures=self._consecutive_failures,
                queued_entries=len(self._fresh) + len(self._sealed),
                capacity=self._capacity,
            )

    # --- with the lock held ---------------------------------------------------------------

    def _requeue_locked(self, batch: ExportBatch) -> None:
        # A failed export's events are older than anything added meanwhile, so they go back in
        # front, sealed; if that overflows the ring, the oldest of them go first.
        self._in_flight = 0
        self._sealed.extendleft(reversed(batch.events))
        self._buffered += batch.count
        excess = len(self._sealed) + len(self._fresh) - self._capacity
        if excess > 0:
            self._evict_locked(excess, "export_failed_overflow")

    def _evict_locked(self, entries: int, reason: str) -> None:
        dropped = 0
        for _ in range(entries):
            queue = self._sealed if self._sealed else self._fresh
            dropped += queue.popleft().merged_count
        self._buffered -= dropped
        self._count_drop_locked(reason, dropped)

    def _count_drop_locked(self, reason: str, n: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + n
        self._unlogged_drops[reason] = self._unlogged_drops.get(reason, 0) + n
        child = self._m_dropped_children.get(reason)
        if child is None:
            child = self._m_dropped.labels(Source=self._source, reason=reason)
            self._m_dropped_children[reason] = child
        child.inc(n)
