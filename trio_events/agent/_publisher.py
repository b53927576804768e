"""A publisher: one buffer consumer that filters, converts and delivers batches to one sink.

Ray's ``RayEventPublisher`` on trio, with a window of requests in flight, honest retries,
isolation of refused events, and a drain. The pipeline (docs/publishing.md, "Delivery"):

1. a *receiver* task takes batches from the consumer handle (bounded by events and by bytes),
   filters them by event type and converts them to the JSON array Ray posts, one batch ahead of
   the requests in flight, so conversion overlaps the network;
2. a *dispatcher* starts one delivery task per converted batch as soon as the window
   (_window.py: AIMD in the manner of Vector's adaptive request concurrency, at most
   ``max_in_flight``) has a slot; a batch holds its slot until it is settled, so with one slot
   batches are delivered strictly in order;
3. each delivery (_delivery.py) publishes the batch until it succeeds, is dropped, or is
   abandoned at shutdown; the same body (the same event ids) is re-sent on every retry, so a
   sink can de-duplicate. Refused batches are bisected to drop only the refused events.

Every event a publisher takes from the buffer ends as exactly one of: delivered, filtered,
dropped (counted by reason in ``trio_events_publisher_dropped_events`` and in Ray's
``publish_failures``), or abandoned at shutdown (reason ``shutdown_abandoned``). A batch is
committed to its consumer once all its events are settled; the committed position advances over
the contiguous prefix of settled batches. With a durable buffer (the spool) what would be
abandoned is *retained*: left in the spool, to be delivered after the next start, along with
the settled batches past the committed position (counted as ``redeliverable``).

Shutdown: :meth:`RayEventPublisher.drain` asks a running publisher to deliver what it has not read
yet, without lingering, until nothing is left or the deadline passes. While at least twice
``attempt_timeout`` remains, failures are retried as usual (backoff shortened so as not to sleep
into the end); after that each batch gets one attempt. At the deadline what is in flight or unread
is abandoned and counted, and :meth:`~RayEventPublisher.run` returns. If ``run()`` is cancelled
instead, the same accounting happens: nothing is lost without being counted.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Final, Literal, final

import trio

from trio_events.agent._convert import JsonConverter
from trio_events.agent._convert_reference import ProtobufReferenceConverter
from trio_events.agent._dead_letter import DeadLetterFile
from trio_events.agent._delivery import BatchConverter, Delivery, Taken
from trio_events.agent._publisher_config import (
    DEFAULT_EXPOSABLE_EVENT_TYPES,
    PublisherConfig,
    PublisherStatistics,
)
from trio_events.agent._sink import BatchEncoder, PublishClient
from trio_events.agent._window import AdaptiveWindow

if TYPE_CHECKING:
    from trio_events._metrics import Metrics
    from trio_events.agent._buffer import EventBatch, EventBuffer, EventConsumer

__all__ = [
    "DEFAULT_EXPOSABLE_EVENT_TYPES",
    "BatchConverter",
    "PublishClient",
    "PublisherConfig",
    "PublisherStatistics",
    "RayEventPublisher",
]

logger = logging.getLogger("trio_events.agent.publisher")

# Closing the client (httpx's connections) at the end of run(), even when cancelled.
_CLOSE_TIMEOUT: Final = 1.0
#: Protobuf bytes taken per batch, against max_batch_bytes of JSON: Ray's JSON (camelCase
#: names, base64 ids) is about twice the serialized size. A body that still comes out larger
#: is split before it is sent (_delivery.py), so this only keeps splits rare.
_JSON_EXPANSION: Final = 2


@final
class RayEventPublisher:
    """Delivers the events of ``buffer`` to ``client``: ``await nursery.start(publisher.run)``.

    The publisher owns ``client`` and closes it when :meth:`run` ends. ``rng`` drives the
    backoff jitter (seed it in tests). ``converter`` turns a list of serialized events into the
    JSON array body (``async dumps_serialized_cooperatively(blobs) -> bytes``); by default the
    compiled converter in this process, or a worker-process pool shared by publishers with the
    same JSON settings. With an ``encoder`` the body is what it builds instead of the JSON array
    (a serialized ``AddEventsRequest`` for the GCS and the dashboard head), also for a batch whose
    events were all filtered out; such a batch is never split.
    """

    def __init__(
        self,
        config: PublisherConfig,
        client: PublishClient,
        buffer: EventBuffer,
        *,
        metrics: Metrics,
        rng: random.Random | None = None,
        converter: BatchConverter | None = None,
        encoder: BatchEncoder | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._buffer = buffer
        self._metrics = metrics
        kind = JsonConverter if config.converter == "compiled" else ProtobufReferenceConverter
        fallback = kind(preserving_proto_field_name=config.preserve_proto_field_name)
        self._window = AdaptiveWindow(config.max_in_flight, adaptive=config.adaptive_in_flight)
        self._dead_letter = (
            DeadLetterFile(config.dead_letter, config.dead_letter_max_bytes)
            if config.dead_letter is not None
            else None
        )
        self._delivery = Delivery(
            config,
            client,
            metrics,
            self._window,
            rng if rng is not None else random.Random(),
            converter,
            fallback,
            encoder,
            self._dead_letter,
            durable=buffer.durable,
            on_settled=self._settled,
        )
        self._state: Literal["new", "running", "finished"] = "new"
        self._finished = trio.Event()
        self._consumer: EventConsumer | None = None
        self._work_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._taken: dict[int, Taken] = {}  # batches not committed, in the order taken
        self._redeliverable = 0

    @property
    def name(self) -> str:
        return self._config.name

    def statistics(self) -> PublisherStatistics:
        consumer = self._consumer
        unread = consumer.statistics().unread if consumer is not None and not consumer.closed else 0
        d = self._delivery
        window = self._window.statistics()
        return PublisherStatistics(
            name=self.name,
            delivered=d.delivered,
            filtered=d.filtered,
            dropped=d.dropped,
            abandoned=d.abandoned,
            retained=d.retained,
            in_flight=d.in_flight,
            unread=unread,
            attempts=d.attempts,
            consecutive_failures=d.consecutive_failures,
            draining=d.drain_deadline is not None,
            last_success=d.last_success,
            redeliverable=self._redeliverable,
            in_flight_limit=window.limit,
            batches_in_flight=window.in_flight,
            splits=d.splits,
            dead_lettered=self._dead_letter.written if self._dead_letter is not None else 0,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open a buffer consumer, signal ``started()``, then publish until drained.

        Returns after :meth:`drain` finished (or the buffer was closed and fully read); runs
        until cancelled otherwise. On the way out what is in flight and the unread events are
        counted as abandoned (or retained by a durable buffer), the consumer is closed and the
        client closed.
        """
        if self._state != "new":
            raise RuntimeError("RayEventPublisher.run() can only be called once per publisher.")
        config = self._config
        if self._dead_letter is not None:
            await self._dead_letter.open()
        self._consumer = self._buffer.open_consumer(
            self.name,
            linger=config.linger,
            max_batch_bytes=max(1, config.max_batch_bytes // _JSON_EXPANSION),
        )
        self._state = "running"
        clock = trio.lowlevel.current_clock()
        d = self._delivery
        d.last_success = clock.current_time()
        # The metric reports time.monotonic() - f(); express our (maybe virtual) trio clock in
        # those terms, so the gauge grows with trio time, as tests in virtual time expect.
        self._metrics.track_time_since_last_success(
            self.name, lambda: time.monotonic() - (clock.current_time() - d.last_success)
        )
        self._metrics.consecutive_failures.labels(self.name).set(0)
        try:
            with trio.CancelScope() as self._work_scope:
                task_status.started()
                await self._pipeline()
        finally:
            self._work_scope = None
            self._finish()
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                await self._client.aclose()
                if self._dead_letter is not None:
                    await self._dead_letter.aclose()

    async def drain(self, deadline: float) -> PublisherStatistics:
        """Deliver what this publisher has not read yet, until none is left or ``deadline``.

        ``deadline`` is an absolute ``trio.current_time()``. Returns the final statistics once
        :meth:`run` has ended (at once if it is not running). Calling it again can only bring
        the deadline forward.
        """
        if self._state != "running":
            await trio.lowlevel.checkpoint()
            return self.statistics()
        self._delivery.start_drain(deadline)
        if self._work_scope is not None:
            self._work_scope.deadline = min(self._work_scope.deadline, deadline)
        if self._wait_scope is not None:  # stop lingering: the receiver re-decides
            self._wait_scope.cancel()
        await self._finished.wait()
        return self.statistics()

    # ---- the pipeline ------------------------------------------------------------------------

    async def _pipeline(self) -> None:
        send, receive = trio.open_memory_channel[Taken](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_and_convert, send)
            async with receive:
                while True:
                    # A slot first, then the next converted batch: conversion runs one batch
                    # ahead of the requests in flight, no further.
                    await self._window.acquire()
                    try:
                        taken = await receive.receive()
                    except trio.EndOfChannel:
                        self._window.release()
                        break
                    except BaseException:
                        self._window.release()
                        raise
                    nursery.start_soon(self._deliver, taken)

    async def _receive_and_convert(self, send: trio.MemorySendChannel[Taken]) -> None:
        async with send:
            while (batch := await self._next_batch()) is not None:
                # No checkpoint since the batch was taken: from here on it is accounted for.
                taken = self._delivery.take(batch)
                self._taken[batch.first_sequence] = taken
                await self._delivery.prepare(taken)
                if not taken.pieces:  # filtered out, or nothing convertible
                    continue
                await send.send(taken)

    async def _next_batch(self) -> EventBatch | None:
        """The next batch, or None once drained (or the buffer is closed and read)."""
        consumer = self._consumer
        assert consumer is not None
        while self._delivery.drain_deadline is None:
            with trio.CancelScope() as self._wait_scope:
                try:
                    return await consumer.receive()
                except trio.EndOfChannel:
                    return None
                finally:
                    self._wait_scope = None
            # Cancelled by drain(); receive() lost nothing. Go on without lingering.
        await trio.lowlevel.checkpoint()
        try:
            return consumer.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None

    async def _deliver(self, taken: Taken) -> None:
        try:
            await self._delivery.deliver(taken)
        finally:
            self._window.release()

    def _settled(self, taken: Taken) -> None:
        """Every event of ``taken`` is delivered, filtered or dropped: commit it."""
        assert self._consumer is not None
        self._consumer.commit(taken.batch)
        # Forget the settled prefix; what stays after an unsettled batch is redeliverable.
        for first, t in list(self._taken.items()):
            if t.pending:
                break
            del self._taken[first]

    def _finish(self) -> None:
        """run() is ending: count what is left as abandoned and leave the buffer."""
        consumer = self._consumer
        assert consumer is not None
        d = self._delivery
        in_flight = d.in_flight
        unread = consumer.statistics().unread
        d.abandon(in_flight)
        d.abandon(unread, in_flight=False)
        if self._buffer.durable:
            self._redeliverable = sum(len(t.batch) for t in self._taken.values() if not t.pending)
        if in_flight or unread:
            logger.warning(
                "Publisher %s stopped with %d events in flight and %d unread; they are %s.",
                self.name,
                in_flight,
                unread,
                "left in the spool for the next start"
                if self._buffer.durable
                else "abandoned (counted as shutdown_abandoned)",
            )
        if self._redeliverable:
            logger.warning(
                "Publisher %s: %d events were delivered past the committed position (a batch "
                "before them was still in flight); a restart sends them again.",
                self.name,
                self._redeliverable,
            )
        consumer.close()
        self._state = "finished"
        self._finished.set()
