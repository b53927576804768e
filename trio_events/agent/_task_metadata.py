"""Dropped task attempts received with AddEvents, kept for one publisher that forwards them.

Ray 2.60's ``TaskEventsMetadataBuffer``, entry for entry: attempts accumulate in a current
``TaskEventsMetadata`` of at most ``attempts_per_entry`` (100); a full entry is queued, and the
queue holds at most ``max_entries - 1`` (999) of them, dropping the oldest entry (counted) when
it overflows. :meth:`TaskMetadataStore.take` returns one entry per call: the oldest queued one,
else the current one (possibly empty). Reads are destructive, so each publisher that forwards
attempts (GCS, dashboard head) has its own store.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

from trio_events import pb

if TYPE_CHECKING:
    from trio_events._metrics import Metrics


@final
class TaskMetadataStore:
    """Ray's TaskEventsMetadataBuffer (see the module docstring); synchronous, one event loop.

    With ``metrics`` the attempts are counted in ``trio_events_task_metadata_attempts{consumer,
    outcome=received|sent|dropped}`` and, for Ray's two publisher names, in Ray's
    ``ray_aggregator_agent_<consumer>_task_metadata_buffer_dropped_attempts``.
    """

    def __init__(
        self,
        max_entries: int = 1000,
        attempts_per_entry: int = 100,
        *,
        metrics: Metrics | None = None,
        consumer: str = "",
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("attempts_per_entry", attempts_per_entry),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"TaskMetadataStore {name} must be an integer >= 1, got {value!r}."
                )
        self._max_queued = max(max_entries - 1, 1)  # -1: the current entry counts too (Ray)
        self._per_entry = attempts_per_entry
        self._queue: deque[pb.TaskEventsMetadata] = deque()
        self._current = pb.TaskEventsMetadata()
        self._received = self._dropped = self._taken = 0
        self._m_received = self._m_sent = self._m_dropped = self._m_ray_dropped = None
        if metrics is not None:
            attempts = metrics.task_metadata_attempts
            self._m_received = attempts.labels(consumer, "received")
            self._m_sent = attempts.labels(consumer, "sent")
            self._m_dropped = attempts.labels(consumer, "dropped")
            self._m_ray_dropped = metrics.task_metadata_dropped.get(consumer)

    def add(self, metadata: pb.TaskEventsMetadata) -> None:
        """Merge the dropped attempts of one AddEvents request."""
        dropped = 0
        for attempt in metadata.dropped_task_attempts:
            if len(self._current.dropped_task_attempts) >= self._per_entry:
                if len(self._queue) >= self._max_queued:
                    dropped += len(self._queue.popleft().dropped_task_attempts)
                self._queue.append(self._current)
                self._current = pb.TaskEventsMetadata()
            self._current.dropped_task_attempts.append(attempt)
        received = len(metadata.dropped_task_attempts)
        self._received += received
        self._dropped += dropped
        if self._m_received is not None and received:
            self._m_received.inc(received)
        if self._m_dropped is not None and dropped:
            self._m_dropped.inc(dropped)
            if self._m_ray_dropped is not None:
                self._m_ray_dropped.inc(dropped)

    def take(self) -> pb.TaskEventsMetadata:
        """The oldest full entry, else the current one (which then starts afresh)."""
        if self._queue:
            entry = self._queue.popleft()
        else:
            entry, self._current = self._current, pb.TaskEventsMetadata()
        taken = len(entry.dropped_task_attempts)
        self._taken += taken
        if self._m_sent is not None and taken:
            self._m_sent.inc(taken)
        return entry

    def __len__(self) -> int:
        """Attempts held (queued and current)."""
        return len(self._current.dropped_task_attempts) + sum(
            len(entry.dropped_task_attempts) for entry in self._queue
        )

    @property
    def received_attempts(self) -> int:
        return self._received

    @property
    def dropped_attempts(self) -> int:
        """Attempts dropped because the queue overflowed (Ray's
        ``aggregator_agent_<publisher>_task_metadata_buffer_dropped_attempts_total``)."""
        return self._dropped

    @property
    def taken_attempts(self) -> int:
        """Attempts handed to the publisher for sending."""
        return self._taken
