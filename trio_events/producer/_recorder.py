"""RayEventRecorder: a bounded ring that merges on export and never loses an event silently.

Ray's recorder (ray-reference.md 2.5) empties its buffer before the RPC, so a failed export loses
its events. Here the events of a failed export go back into the ring, *sealed*, and are retried
with exponential backoff; every event is, at every moment, exported, buffered, in flight, or
dropped with a counted reason (see :meth:`RayEventRecorder.statistics`). The ring and its
accounting live in ``_recorder_ring``; this module is the trio service around it.
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, NoReturn, final

import attrs
import trio

from trio_events import pb
from trio_events._bridge import asyncio_loop
from trio_events._metrics import Metrics
from trio_events.producer._client import (
    AddEventsClient,
    EventAggregatorClient,
    ExportError,
    RetryableExportError,
)
from trio_events.producer._ring import EventRing, ExportBatch, RecorderRing, RecorderStatistics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from types import TracebackType

    from trio_events.producer._event_base import RayEventBase

_log = logging.getLogger("trio_events.recorder")
# Closing a client is local work; the bound only guards against one that misbehaves.
_CLOSE_TIMEOUT = 1.0


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"RecorderConfig.{name} must be a number > 0, got {value!r}.")


@final
@attrs.frozen(kw_only=True)
class RecorderConfig:
    """Settings of one recorder (defaults are Ray 2.60's where Ray has the setting)."""

    max_queued_events: int = 10_000  # RAY_ray_event_recorder_max_queued_events
    report_interval: float = 1.0  # RAY_ray_events_report_interval_ms / 1000
    export_timeout: float = 5.0  # Ray has no deadline at all
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_multiplier: float = 2.0
    #: Fraction of each backoff delay that is randomised away (0 = exact, 1 = "full jitter").
    backoff_jitter: float = 0.2
    shutdown_flush_timeout: float = 5.0  # RAY_task_events_shutdown_flush_timeout_ms / 1000
    enabled: bool = True  # RAY_enable_ray_event
    source: str = "core_worker"  # the metrics' Source label
    #: Largest request in merged events (Ray's task_events_send_batch_size); a request refused
    #: with RESOURCE_EXHAUSTED is halved down to one event, then grows back on success.
    max_events_per_request: int = 10_000
    #: Largest request in bytes, below the agent's 20 MiB (Ray's AGENT_GRPC_MAX_MESSAGE_LENGTH).
    max_request_bytes: int = 16 * 1024 * 1024

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_queued_events, bool) or not (
            isinstance(self.max_queued_events, int) and self.max_queued_events >= 1
        ):
            raise ValueError(
                f"RecorderConfig.max_queued_events must be an integer >= 1, "
                f"got {self.max_queued_events!r}."
            )
        for name in ("max_events_per_request", "max_request_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"RecorderConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("report_interval", "export_timeout", "backoff_initial", "backoff_max"):
            _positive(name, getattr(self, name))
        if self.backoff_max < self.backoff_initial:
            raise ValueError("RecorderConfig.backoff_max must be >= backoff_initial.")
        if not self.backoff_multiplier >= 1:
            raise ValueError("RecorderConfig.backoff_multiplier must be >= 1.")
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError("RecorderConfig.backoff_jitter must be between 0 and 1.")
        if not self.shutdown_flush_timeout >= 0:
            raise ValueError("RecorderConfig.shutdown_flush_timeout must be >= 0.")
        if not (isinstance(self.source, str) and self.source):
            raise ValueError("RecorderConfig.source must be a non-empty string.")


def backoff_delay(config: RecorderConfig, failures: int, rand: Callable[[], float]) -> float:
    """Seconds to wait after the ``failures``-th consecutive failed export (``failures >= 1``).

    ``initial * multiplier**(failures - 1)``, capped at ``backoff_max``, then shortened by up to
    ``backoff_jitter`` of itself (``rand()`` in [0, 1)) so that recorders do not retry in step.
    """
    exponent = min(failures - 1, 64)  # beyond this the cap applies anyway; avoids float overflow
    base = min(config.backoff_max, config.backoff_initial * config.backoff_multiplier**exponent)
    return base * (1.0 - config.backoff_jitter * rand())


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
        """A one-event request refused: backpressure, unless it says the event is too large.

        A single event too large for the aggregator can never be sent: it becomes a
        non-retryable ``oversized`` (dropped and counted) instead of being retried forever.
        """
        text = str(error).lower()
        if "larger than" in text or "limit of" in text:
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
        not retried here. With an :class:`EventAggregatorClient`, call it inside ``run()``'s
        lifetime or your own ``asyncio_loop()``.
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
        async with asyncio_loop():
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
