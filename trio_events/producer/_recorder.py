"""RayEventRecorder: a bounded ring that merges on export and never loses an event silently.

Ray's recorder (ray-reference.md 2.5) empties its buffer before the RPC, so a failed export loses
its events. Here the events of a failed export go back into the ring, *sealed*, and are retried
with exponential backoff; every event is always exported, buffered, in flight, or dropped with
a counted reason (:meth:`RayEventRecorder.statistics`). This is the trio service around the ring
(``_ring``), configured by ``_recorder_config``.
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, NoReturn, final

import trio

from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.producer._client import (
    AddEventsClient,
    EventAggregatorClient,
    ExportError,
    RetryableExportError,
)
from trio_events.producer._recorder_config import RecorderConfig as RecorderConfig  # re-export
from trio_events.producer._recorder_config import backoff_delay
from trio_events.producer._ring import EventRing, ExportBatch, RecorderRing, RecorderStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from trio_events.producer._event_base import RayEventBase

_log = logging.getLogger("trio_events.producer.recorder")
# Closing a client is local work; the bound only guards against one that misbehaves.
_CLOSE_TIMEOUT = 1.0


@final
class RayEventRecorder:
    """Buffers events, merges those of one entity, and exports them to an aggregator.

    **Overflow policy: drop the oldest.** :meth:`add` never blocks and never raises because the
    ring is full: it runs on hot paths, including worker threads, that must not wait for the
    network. The ring holds at most ``max_queued_events`` entries; when it is full each new event
    evicts the oldest one, because for lifecycle data the newest state is the most valuable (this
    is also Ray's choice). Every drop is counted in ``ray_event_recorder_dropped_events`` with a
    reason, in recorded events, so :meth:`statistics` always balances: ``buffer_full`` (evicted
    by a newer event), ``export_failed_overflow`` (a failed export's events went back ahead of
    newer ones and did not all fit), the reason of a non-retryable export error (e.g.
    ``rejected``), ``shutdown`` (not flushed within ``shutdown_flush_timeout``) and ``closed``
    (added after shutdown began).

    **Export.** Every ``report_interval`` :meth:`run` takes everything buffered, merges events
    with the same ``merge_key`` into the first of them (first-occurrence order is kept), stamps
    the recorder's ``node_id`` and sends one request with a deadline; one export is in flight at
    a time. A retryable failure (including RESOURCE_EXHAUSTED backpressure) puts the merged
    events back *sealed* and retries after an exponential backoff: a sealed event is re-sent
    byte for byte with the same event id (the failed attempt may have been delivered, so sinks
    can de-duplicate by id) and never absorbs newer events of its entity.

    The recorder takes ownership of added events (merging changes them in place) and of the
    client, which :meth:`run` closes on its way out.
    """

    def __init__(
        self,
        config: RecorderConfig,
        client: AddEventsClient,
        *,
        node_id: bytes,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
        ring: RecorderRing | None = None,
    ) -> None:
        """``ring`` replaces the generic ring with another policy (TaskEventRecorder's)."""
        if not isinstance(node_id, bytes):
            raise TypeError(
                f"node_id must be bytes (a 28-byte NodeID), got {type(node_id).__name__}."
            )
        metrics = Metrics() if metrics is None else metrics
        self._config = config
        self._client = client
        self._node_id = node_id
        self._rand = rand
        self._ring: RecorderRing = (
            EventRing(config.max_queued_events, source=config.source, metrics=metrics)
            if ring is None
            else ring
        )
        self._m_latency = metrics.recorder_export_latency
        self._export_lock = trio.Lock()
        # Adaptive request size: halved on backpressure, doubled back on success.
        self._request_events = config.max_events_per_request
        self._started = False
        self._stack: AsyncExitStack | None = None

    def add(self, event: RayEventBase) -> None:
        """Record one event; never blocks (see the overflow policy). Safe from any thread."""
        if self._config.enabled:
            self._ring.add(event)

    def add_many(self, events: Iterable[RayEventBase]) -> None:
        """Record several events in order, taking the lock once. Safe from any thread."""
        if self._config.enabled:
            self._ring.add_many(events)

    def statistics(self) -> RecorderStatistics:
        """A consistent snapshot of the accounting (safe from any thread)."""
        return self._ring.statistics()

    # --- export -----------------------------------------------------------------------------

    def _build_request(self, batch: ExportBatch) -> pb.AddEventsRequest:
        request = pb.AddEventsRequest()
        messages = request.events_data.events
        node_id = self._node_id
        for event in batch.events:
            message = messages.add()
            event.serialize_into(message)
            message.node_id = node_id  # the recorder stamps it, overriding the event (Ray #59242)
        if batch.dropped_task_attempts:
            dropped = request.events_data.task_events_metadata.dropped_task_attempts
            for task_id, attempt in batch.dropped_task_attempts:
                dropped.add(task_id=task_id, attempt_number=attempt)
        return request

    async def _export_once(self, *, deadline: float = math.inf) -> tuple[ExportError | None, int]:
        """Export what is buffered now, in requests within the size limits.

        Returns the error that stopped it (None if every request succeeded) and the number of
        recorded events in the request that failed (or in all requests, on success). Events
        added while it runs wait for the next export, so a busy producer cannot keep it going.
        """
        async with self._export_lock:
            budget = self._ring.buffered
            sent = 0
            # Dropped task attempts are reported even when no event is buffered (Ray's
            # metadata-only send), once per export.
            metadata = self._ring.has_metadata
            while sent < budget or metadata:
                metadata = False
                batch = self._ring.take(self._request_events, self._config.max_request_bytes)
                if not batch.events and not batch.dropped_task_attempts:
                    break
                error = await self._send(batch, deadline)
                if error is not None:
                    if error.backpressure and len(batch.events) > 1:
                        # _shrink halved the request size; try the smaller request at once. At
                        # most log2(max_events_per_request) times before a real backoff.
                        continue
                    return error, batch.count
                sent += batch.count
                self._request_events = min(
                    self._config.max_events_per_request, self._request_events * 2
                )
            return None, sent

    async def _send(self, batch: ExportBatch, deadline: float) -> ExportError | None:
        """One AddEvents RPC for ``batch``, settled in the ring; the error, if any.

        The RPC is shielded from cancellation but never outlives ``export_timeout`` (nor
        ``deadline``): cancelling an RPC that the aggregator may already have processed would
        only make the events be sent twice.
        """
        started = trio.current_time()
        timeout = max(0.0, min(self._config.export_timeout, deadline - started))
        error: ExportError | None = None
        try:
            request = self._build_request(batch)
            # Our own deadline too: a client that ignores ``timeout`` must not stall us.
            with trio.CancelScope(shield=True), trio.fail_after(timeout):
                await self._client.add_events(request, timeout=timeout)
        except trio.TooSlowError:
            error = RetryableExportError(
                f"AddEvents did not complete within export_timeout={timeout}s.",
                reason="deadline",
            )
        except ExportError as exc:
            error = exc
        except BaseException:
            # Cancelled (shutdown), or a bug in the client or an event class. The request may
            # have arrived, so its events go back sealed, still counted; the exception carries on.
            self._ring.interrupted(batch)
            _log.info("export interrupted: events=%d kept=sealed", batch.count)
            raise
        outcome = "success" if error is None else "failure"
        self._m_latency.labels(Source=self._config.source, Outcome=outcome).observe(
            trio.current_time() - started
        )
        if error is None:
            self._ring.exported(batch)
            return None
        if error.backpressure and len(batch.events) > 1:
            # The aggregator is full, or this request is too big for it: either way a smaller
            # request stands a better chance. Halve it; the caller retries at once.
            self._request_events = max(1, len(batch.events) // 2)
            self._ring.refused_as_too_big(batch)
            return error
        if error.backpressure:
            error = self._single_event_refused(error)
        self._ring.failed(batch, error)
        return error

    def _single_event_refused(self, error: ExportError) -> ExportError:
        """A one-event request refused: backpressure, unless it was refused for its size.

        A single event too large for the aggregator can never be sent: it becomes a
        non-retryable ``oversized`` (dropped and counted) instead of being retried forever.
        """
        if error.too_large:
            return ExportError(
                f"The aggregator refuses this event as too large: {error}", reason="oversized"
            )
        return error

    def _retry_delay(self, error: ExportError, count: int) -> float:
        """The backoff before the next attempt (logged with the failure)."""
        delay = backoff_delay(self._config, self._ring.consecutive_failures, self._rand)
        self._log_failure(error, count, f"{delay:.3f}")
        return delay

    def _log_failure(self, error: ExportError, count: int, retry_in: str) -> None:
        if error.retryable:
            _log.warning(
                "export failed: reason=%s events=%d kept=true retry_in_s=%s failures=%d error=%s",
                "backpressure" if error.backpressure else error.reason,
                count,
                retry_in,
                self._ring.consecutive_failures,
                error,
            )
        else:
            _log.error(
                "export rejected: reason=%s events=%d dropped=true error=%s",
                error.reason,
                count,
                error,
            )

    def _log_drops(self) -> None:
        for reason, n in self._ring.take_unlogged_drops().items():
            _log.warning("dropped events: reason=%s events=%d", reason, n)

    async def flush(self) -> bool:
        """Export what is buffered now (after any export in flight); True if nothing failed.

        A failure is handled as in :meth:`run` (events kept sealed, or dropped and counted) but
        not retried here. Call it from any task while the recorder runs (inside
        :func:`open_recorder` or ``async with recorder``), or with a client you opened yourself.
        """
        error, count = await self._export_once()
        if error is not None:
            self._log_failure(error, count, "next_tick")
        return error is None

    # --- the service ------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Export every ``report_interval`` until cancelled, then flush and close the client.

        On cancellation an export already in flight is allowed to finish (it is bounded by
        ``export_timeout``), so that a delivered batch is not sent again; then the final flush
        runs, shielded from the cancellation but bounded by ``shutdown_flush_timeout``. What it
        cannot deliver is dropped with reason ``shutdown`` and logged with its number.
        """
        if self._started:
            raise RuntimeError(
                "RayEventRecorder.run() was already started; a recorder exports from exactly one "
                "task, so create a new recorder instead of starting this one again."
            )
        self._started = True
        if not self._config.enabled:
            _log.info("recorder disabled: events are ignored source=%s", self._config.source)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                    await self._client.aclose()
        async with self._client_lifetime():
            try:
                _log.info(
                    "recorder started: source=%s capacity=%d interval_s=%s",
                    self._config.source,
                    self._config.max_queued_events,
                    self._config.report_interval,
                )
                task_status.started()
                await self._export_loop()
            finally:
                with trio.CancelScope(shield=True):
                    await self._shutdown()

    def _client_lifetime(self) -> AbstractAsyncContextManager[object]:
        """The client's own lifetime, if it has one, entered for the whole of :meth:`run`.

        :class:`EventAggregatorClient` holds its asyncio loop from entry to exit, so that
        :meth:`flush` works from any task while the recorder runs.
        """
        client = self._client
        if isinstance(client, AbstractAsyncContextManager):
            return client
        return nullcontext()

    async def _export_loop(self) -> NoReturn:
        interval = self._config.report_interval
        next_tick = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_tick)
            tick = trio.current_time()
            self._log_drops()
            error, count = await self._export_once()
            if error is None:
                # Fixed rate from the start of the tick; an export slower than the interval only
                # delays the next one (there is never more than one in flight).
                next_tick = tick + interval
            else:
                next_tick = trio.current_time() + self._retry_delay(error, count)

    async def _shutdown(self) -> None:
        """Runs shielded, so every step is bounded by a timeout."""
        timeout = self._config.shutdown_flush_timeout
        self._ring.close()
        waiting = self._ring.buffered
        _log.info("recorder stopping: flushing events=%d timeout_s=%s", waiting, timeout)
        deadline = trio.current_time() + timeout
        try:
            with trio.move_on_at(deadline):
                while (
                    self._ring.buffered or self._ring.has_metadata
                ) and trio.current_time() < deadline:
                    error, count = await self._export_once(deadline=deadline)
                    if error is not None:
                        await trio.sleep(self._retry_delay(error, count))
        finally:
            # Also when the flush raised (a bug in the client): nothing is left uncounted.
            left = self._ring.drop_all("shutdown")
            self._log_drops()
            if left:
                _log.error("recorder stopped: not exported=%d dropped=true reason=shutdown", left)
            else:
                _log.info("recorder stopped: all events exported")
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await self._client.aclose()

    async def __aenter__(self) -> RayEventRecorder:
        """Start :meth:`run` in a private nursery; leaving the block flushes and stops it."""
        stack = AsyncExitStack()
        await stack.enter_async_context(self._running())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None, "__aexit__ without __aenter__"
        return await stack.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery is an implementation detail: surface a lone exception as itself.
            if len(group.exceptions) != 1:
                raise
            _raise_preserving_context(group.exceptions[0])


def _raise_preserving_context(exc: BaseException) -> NoReturn:
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@asynccontextmanager
async def open_recorder(
    config: RecorderConfig,
    *,
    target: str,
    node_id: bytes,
    metrics: Metrics | None = None,
    token: str | None = None,
) -> AsyncIterator[RayEventRecorder]:
    """A running recorder exporting to the aggregator at ``target`` (``HOST:PORT``).

    Leaving the block flushes what is buffered (within ``shutdown_flush_timeout``) and closes
    the connection::

        async with open_recorder(RecorderConfig(), target="127.0.0.1:50051", node_id=nid) as rec:
            rec.add(RayTaskLifecycleEvent(task_id=tid, task_attempt=0, state="RUNNING"))
    """
    client = EventAggregatorClient(target, token=token)
    recorder = RayEventRecorder(config, client, node_id=node_id, metrics=metrics)
    async with recorder:
        yield recorder
