"""The task-event recorder's synchronous core: Ray's ``RayTaskEventRecorder`` policy, kept honest.

Ray 2.60's core worker does not buffer task events like any other event (ray-reference.md 2.6):

- **Status events** (definition, actor-task definition, lifecycle) sit in a ring of
  ``max_status_events``. When it is full the oldest is evicted and its *task attempt* is marked
  dropped; the attempt is then reported in ``task_events_metadata.dropped_task_attempts`` so that
  the GCS marks it lost instead of showing it stuck in its last known state.
- **Sticky drop**: while an attempt is marked dropped and not yet reported, its new status
  events are dropped on arrival.
- **All or none per attempt**: an export skips (and counts as dropped) the buffered status events
  of an attempt it reports as dropped, so the GCS never sees half an attempt.
- **Metadata-only sends**: dropped attempts are sent even when no event is.
- **Profile events** are kept per attempt and capped per attempt
  (``max_profile_events_per_task``, -1 unlimited) and globally (``max_profile_events``); over a
  cap the *new* one is dropped. Profile drops are counted but never reported as dropped attempts.
- Each export takes at most ``send_batch_size`` status and as many profile events, and at most
  ``dropped_attempt_batch_size`` dropped attempts (-1 unlimited).

What differs from Ray is the recorder's general promise: a failed export is kept (sealed) and
retried, dropped attempts of a failed export are reported again, and every recorded event is at
every moment exported, buffered, in flight, or dropped with a reason (``buffer_full``,
``dropped_attempt``, ``profile_task_cap``, ``profile_global_cap``, ``closed``, ``shutdown``...).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Final, final

import attrs

from trio_events import pb
from trio_events.producer._ring import ExportBatch, RecorderStatistics

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import Counter

    from trio_events._metrics import Metrics
    from trio_events.producer._client import ExportError
    from trio_events.producer._event_base import RayEventBase

_log = logging.getLogger("trio_events.recorder")

TaskAttemptKey = tuple[bytes, int]
_PROFILE: Final = pb.RayEvent.TASK_PROFILE_EVENT
_STATUS_TYPES: Final = frozenset(
    (
        pb.RayEvent.TASK_DEFINITION_EVENT,
        pb.RayEvent.ACTOR_TASK_DEFINITION_EVENT,
        pb.RayEvent.TASK_LIFECYCLE_EVENT,
    )
)


def _cap(name: str, value: int, *, unlimited_ok: bool = False) -> None:
    low = -1 if unlimited_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low or value == 0:
        allowed = "-1 (unlimited) or an integer >= 1" if unlimited_ok else "an integer >= 1"
        raise ValueError(f"TaskEventPolicy.{name} must be {allowed}, got {value!r}.")


@final
@attrs.frozen(kw_only=True)
class TaskEventPolicy:
    """Ray 2.60's task-event limits (``RAY_task_events_*``), with its defaults."""

    max_status_events: int = 100_000  # task_events_max_num_status_events_buffer_on_worker
    max_profile_events: int = 10_000  # task_events_max_num_profile_events_buffer_on_worker
    max_profile_events_per_task: int = 1000  # task_events_max_num_profile_events_per_task
    send_batch_size: int = 10_000  # task_events_send_batch_size
    dropped_attempt_batch_size: int = 10_000  # task_events_dropped_task_attempt_batch_size

    def __attrs_post_init__(self) -> None:
        _cap("max_status_events", self.max_status_events)
        _cap("max_profile_events", self.max_profile_events)
        _cap("send_batch_size", self.send_batch_size)
        _cap("max_profile_events_per_task", self.max_profile_events_per_task, unlimited_ok=True)
        _cap("dropped_attempt_batch_size", self.dropped_attempt_batch_size, unlimited_ok=True)


@final
@attrs.frozen
class TaskEventStatistics:
    """Dropped task attempts: reported to the aggregator, waiting to be, or being reported."""

    attempts_marked_dropped: int
    attempts_reported: int
    attempts_pending: int
    attempts_in_flight: int


def task_attempt_of(event: RayEventBase) -> TaskAttemptKey:
    """(task id, attempt number) of a task event; TypeError for any other event."""
    if event.EVENT_TYPE not in _STATUS_TYPES and event.EVENT_TYPE != _PROFILE:
        raise TypeError(
            f"A task-event recorder takes task events only (task and actor-task definitions, "
            f"task lifecycle and profile events), not a {type(event).__name__}."
        )
    payload = event.payload
    attempt_field = "attempt_number" if event.EVENT_TYPE == _PROFILE else "task_attempt"
    return bytes(getattr(payload, "task_id")), int(getattr(payload, attempt_field))  # noqa: B009


@final
class TaskEventRing:
    """A RecorderRing with Ray's task-event policy (see the module docstring). Thread-safe."""

    def __init__(self, policy: TaskEventPolicy, *, source: str, metrics: Metrics) -> None:
        self._policy = policy
        self._source = source
        self._lock = threading.Lock()
        self._status: deque[RayEventBase] = deque()
        self._sealed: deque[RayEventBase] = deque()  # a failed export's merged events
        self._profile: dict[TaskAttemptKey, list[RayEventBase]] = {}
        self._profile_per_attempt: dict[TaskAttemptKey, int] = {}
        self._profile_count = 0  # recorded profile events buffered (the global cap's measure)
        self._unreported: dict[TaskAttemptKey, None] = {}  # insertion-ordered set
        self._reporting: dict[TaskAttemptKey, None] = {}  # in flight
        self._accepting = True
        self._added = self._exported = self._buffered = self._in_flight = 0
        self._marked = self._reported = 0
        self._dropped: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._export_failures = self._consecutive_failures = 0
        self._m_added = metrics.recorder_events_added.labels(Source=source)
        self._m_exported = metrics.recorder_events_exported.labels(Source=source)
        self._m_dropped = metrics.recorder_dropped_events
        self._m_children: dict[str, Counter] = {}
        self._m_failures = metrics.recorder_export_failures
        metrics.recorder_buffered_events.labels(Source=source).set_function(
            lambda: float(self._buffered + self._in_flight)
        )

    # --- producers ------------------------------------------------------------------------

    def add(self, event: RayEventBase) -> None:
        attempt = task_attempt_of(event)
        with self._lock:
            self._add_locked(event, attempt)
        self._m_added.inc(event.merged_count)

    def add_many(self, events: Iterable[RayEventBase]) -> None:
        batch = [(event, task_attempt_of(event)) for event in events]
        with self._lock:
            for event, attempt in batch:
                self._add_locked(event, attempt)
        self._m_added.inc(sum(event.merged_count for event, _ in batch))

    def _add_locked(self, event: RayEventBase, attempt: TaskAttemptKey) -> None:
        n = event.merged_count
        self._added += n
        if not self._accepting:
            self._count_drop_locked("closed", n)
        elif event.EVENT_TYPE == _PROFILE:
            self._add_profile_locked(event, attempt, n)
        elif attempt in self._unreported or attempt in self._reporting:
            # Sticky drop: this attempt already lost events; the GCS will mark it lost.
            self._count_drop_locked("dropped_attempt", n)
        else:
            if len(self._status) + len(self._sealed) >= self._policy.max_status_events:
                self._evict_status_locked()
            self._status.append(event)
            self._buffered += n

    def _add_profile_locked(self, event: RayEventBase, attempt: TaskAttemptKey, n: int) -> None:
        per_task = self._policy.max_profile_events_per_task
        held = self._profile_per_attempt.get(attempt, 0)
        if per_task >= 0 and held + n > per_task:
            self._count_drop_locked("profile_task_cap", n)
        elif self._profile_count + n > self._policy.max_profile_events:
            self._count_drop_locked("profile_global_cap", n)
        else:
            self._profile.setdefault(attempt, []).append(event)
            self._profile_per_attempt[attempt] = held + n
            self._profile_count += n
            self._buffered += n

    def _evict_status_locked(self) -> None:
        queue = self._sealed if self._sealed else self._status
        victim = queue.popleft()
        self._buffered -= victim.merged_count
        self._count_drop_locked("buffer_full", victim.merged_count)
        if victim.EVENT_TYPE != _PROFILE:
            self._mark_dropped_locked(task_attempt_of(victim))

    def _mark_dropped_locked(self, attempt: TaskAttemptKey) -> None:
        if attempt not in self._unreported and attempt not in self._reporting:
            self._unreported[attempt] = None
            self._marked += 1
            if self._marked % 100_000 == 1:
                _log.warning(
                    "task events dropped: ring full, task attempt %s/%d reported as dropped "
                    "(attempts marked so far: %d)",
                    attempt[0].hex(),
                    attempt[1],
                    self._marked,
                )

    def close(self) -> None:
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
        return bool(self._unreported)

    def take(self, max_events: int | None = None, max_bytes: int | None = None) -> ExportBatch:
        """Dropped attempts, then status events, then profile events, merged; now in flight.

        ``max_bytes`` is not applied: Ray's task batches are bounded by count only, and
        ``send_batch_size`` keeps a request far below the aggregator's limit for real events.
        """
        del max_bytes
        policy = self._policy
        with self._lock:
            if self._in_flight or self._reporting:
                raise RuntimeError("an export is already in flight; settle it before taking more.")
            attempts = self._take_attempts_locked(policy.dropped_attempt_batch_size)
            lost = set(attempts) | self._unreported.keys()
            status_budget = policy.send_batch_size
            if max_events is not None:
                status_budget = min(status_budget, max_events)
            sealed: list[RayEventBase] = []
            status: list[RayEventBase] = []
            for queue, out in ((self._sealed, sealed), (self._status, status)):
                while queue and len(sealed) + len(status) < status_budget:
                    event = queue.popleft()
                    if event.EVENT_TYPE != _PROFILE and task_attempt_of(event) in lost:
                        # All or none: this attempt is reported lost, so none of it is sent.
                        self._buffered -= event.merged_count
                        self._count_drop_locked("dropped_attempt", event.merged_count)
                    else:
                        out.append(event)
            profile = self._take_profile_locked(policy.send_batch_size)
            count = sum(e.merged_count for e in (*sealed, *status, *profile))
            self._buffered -= count
            self._in_flight = count
            self._reporting = dict.fromkeys(attempts)
        # Merging runs outside the lock; sealed events are re-sent unchanged.
        return ExportBatch([*sealed, *_merge(status), *_merge(profile)], count, tuple(attempts))

    def _take_attempts_locked(self, limit: int) -> list[TaskAttemptKey]:
        attempts: list[TaskAttemptKey] = []
        for attempt in self._unreported:
            if 0 <= limit <= len(attempts):
                break
            attempts.append(attempt)
        for attempt in attempts:
            del self._unreported[attempt]
        return attempts

    def _take_profile_locked(self, limit: int) -> list[RayEventBase]:
        taken: list[RayEventBase] = []
        for attempt in list(self._profile):
            events = self._profile[attempt]
            room = limit - len(taken)
            if room <= 0:
                break
            taken.extend(events[:room])
            moved = sum(e.merged_count for e in events[:room])
            self._profile_count -= moved
            del events[:room]
            if events:
                self._profile_per_attempt[attempt] -= moved
            else:
                del self._profile[attempt]
                # The per-task cap counts what is buffered, as Ray's map of vectors does.
                del self._profile_per_attempt[attempt]
        return taken

    def exported(self, batch: ExportBatch) -> None:
        with self._lock:
            self._in_flight = 0
            self._reporting = {}
            self._exported += batch.count
            self._reported += len(batch.dropped_task_attempts)
            self._consecutive_failures = 0
        self._m_exported.inc(batch.count)

    def failed(self, batch: ExportBatch, error: ExportError) -> None:
        with self._lock:
            self._export_failures += 1
            self._consecutive_failures += 1
            if error.retryable:
                self._requeue_locked(batch)
            else:
                self._in_flight = 0
                self._reporting = {}
                self._count_drop_locked(error.reason, batch.count)
        label = "backpressure" if error.backpressure else error.reason
        self._m_failures.labels(Source=self._source, reason=label).inc()

    def refused_as_too_big(self, batch: ExportBatch) -> None:
        with self._lock:
            self._export_failures += 1
            self._requeue_locked(batch)
        self._m_failures.labels(Source=self._source, reason="backpressure").inc()

    def interrupted(self, batch: ExportBatch) -> None:
        with self._lock:
            self._requeue_locked(batch)

    def _requeue_locked(self, batch: ExportBatch) -> None:
        # The attempts go back in front, still to be reported; the events go back sealed.
        self._in_flight = 0
        self._reporting = {}
        pending = dict.fromkeys(batch.dropped_task_attempts)
        pending.update(self._unreported)
        self._unreported = pending
        self._sealed.extendleft(reversed(batch.events))
        self._buffered += batch.count
        while len(self._status) + len(self._sealed) > self._policy.max_status_events:
            self._evict_status_locked()

    def drop_all(self, reason: str) -> int:
        with self._lock:
            self._sealed.clear()
            self._status.clear()
            self._profile.clear()
            self._profile_per_attempt.clear()
            self._profile_count = 0
            left, self._buffered = self._buffered, 0
            if left:
                self._count_drop_locked(reason, left)
        return left

    def take_unlogged_drops(self) -> dict[str, int]:
        with self._lock:
            pending, self._unlogged = self._unlogged, {}
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
                queued_entries=len(self._status)
                + len(self._sealed)
                + sum(map(len, self._profile.values())),
                capacity=self._policy.max_status_events,
            )

    def task_statistics(self) -> TaskEventStatistics:
        with self._lock:
            return TaskEventStatistics(
                attempts_marked_dropped=self._marked,
                attempts_reported=self._reported,
                attempts_pending=len(self._unreported),
                attempts_in_flight=len(self._reporting),
            )

    def _count_drop_locked(self, reason: str, n: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + n
        self._unlogged[reason] = self._unlogged.get(reason, 0) + n
        child = self._m_children.get(reason)
        if child is None:
            child = self._m_children[reason] = self._m_dropped.labels(
                Source=self._source, reason=reason
            )
        child.inc(n)


def _merge(events: list[RayEventBase]) -> list[RayEventBase]:
    """Group by merge key, first-occurrence order, each group folded into its first event."""
    heads: dict[tuple[object, ...], RayEventBase] = {}
    merged: list[RayEventBase] = []
    for event in events:
        key = event.merge_key
        head = heads.get(key)
        if head is None:
            heads[key] = event
            merged.append(event)
        else:
            head.merge(event)
    return merged
