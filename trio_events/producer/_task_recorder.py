"""TaskEventRecorder: the recorder of a process that runs tasks, with Ray's task-event policy.

The same service as :class:`~trio_events.producer.RayEventRecorder` (periodic export, deadline,
retry with backoff, ordered shutdown) around a :class:`TaskEventRing` instead of the generic
ring: dropped task attempts are reported in ``task_events_metadata``, drops are sticky and
all-or-none per attempt, metadata is sent even without events, and profile events are capped
per attempt and globally (``_task_ring.py`` has the details and the differences from Ray).
"""

from __future__ import annotations

import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn, final

import trio

from trio_events._metrics import Metrics
from trio_events.producer._client import EventAggregatorClient
from trio_events.producer._recorder import RayEventRecorder, RecorderConfig
from trio_events.producer._task_ring import TaskEventPolicy, TaskEventRing, TaskEventStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from trio_events.producer._client import AddEventsClient
    from trio_events.producer._event_base import RayEventBase
    from trio_events.producer._ring import RecorderStatistics


@final
class TaskEventRecorder:
    """Records task events (definitions, lifecycle, profile) and exports them with Ray's policy.

    **Overflow policy.** :meth:`add` never blocks. Status events live in a ring of
    ``policy.max_status_events``; when it is full the oldest is evicted and its task attempt is
    reported as dropped, and the attempt's later and still-buffered status events are dropped
    too, so the aggregator sees each attempt whole or marked lost. Profile events over their
    per-attempt or global cap are refused (the newest goes). Every drop is counted by reason in
    :meth:`statistics`; dropped attempts in :meth:`task_statistics`. Only task events are
    accepted: anything else is a TypeError.
    """

    def __init__(
        self,
        config: RecorderConfig,
        client: AddEventsClient,
        *,
        node_id: bytes,
        policy: TaskEventPolicy | None = None,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        metrics = Metrics() if metrics is None else metrics
        self._enabled = config.enabled
        self._ring = TaskEventRing(
            TaskEventPolicy() if policy is None else policy, source=config.source, metrics=metrics
        )
        self._recorder = RayEventRecorder(
            config, client, node_id=node_id, metrics=metrics, rand=rand, ring=self._ring
        )

    def add(self, event: RayEventBase) -> None:
        """Record one task event; never blocks (see the overflow policy). Any thread."""
        if self._enabled:
            self._ring.add(event)

    def add_many(self, events: Iterable[RayEventBase]) -> None:
        """Record several task events in order, taking the lock once. Any thread."""
        if self._enabled:
            self._ring.add_many(events)

    def statistics(self) -> RecorderStatistics:
        """Events: ``added == exported + dropped + buffered + in_flight`` in every snapshot."""
        return self._ring.statistics()

    def task_statistics(self) -> TaskEventStatistics:
        """Dropped task attempts: marked, reported, pending and in flight."""
        return self._ring.task_statistics()

    async def flush(self) -> bool:
        """Export what is buffered now, dropped attempts included; True if nothing failed."""
        return await self._recorder.flush()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """As :meth:`RayEventRecorder.run`: export until cancelled, then flush and close."""
        await self._recorder.run(task_status=task_status)

    async def __aenter__(self) -> TaskEventRecorder:
        await self._recorder.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._recorder.__aexit__(exc_type, exc, tb)


@asynccontextmanager
async def open_task_recorder(
    config: RecorderConfig,
    *,
    target: str,
    node_id: bytes,
    policy: TaskEventPolicy | None = None,
    metrics: Metrics | None = None,
    token: str | None = None,
) -> AsyncIterator[TaskEventRecorder]:
    """A running task-event recorder exporting to the aggregator at ``target`` (``HOST:PORT``)."""
    client = EventAggregatorClient(target, token=token)
    recorder = TaskEventRecorder(config, client, node_id=node_id, policy=policy, metrics=metrics)
    async with recorder:
        yield recorder
