"""A publisher: one buffer consumer that filters, converts and delivers batches to one sink.

Ray's ``RayEventPublisher`` on trio, with honest retries and a drain. Each batch is filtered by
event type, converted to the JSON array Ray posts, then published through a :class:`PublishClient`
until it succeeds, fails permanently, or the retry policy gives up; the same body (the same event
ids) is re-sent on every retry, so a sink can de-duplicate. Every event a publisher takes from the
buffer ends as exactly one of: delivered, filtered, dropped (counted by reason in
``trio_events_publisher_dropped_events`` and in Ray's ``publish_failures``), or abandoned at
shutdown (reason ``shutdown_abandoned``). With a durable buffer (the spool) a batch is committed
to the buffer once it is delivered or dropped, and what would be abandoned at shutdown is
instead *retained*: left in the spool, to be delivered after the next start.

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

import orjson
import trio
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from trio_events import pb
from trio_events.agent._convert import JsonConverter
from trio_events.agent._convert_reference import ProtobufReferenceConverter
from trio_events.agent._publisher_config import (
    DEFAULT_EXPOSABLE_EVENT_TYPES,
    PublisherConfig,
    PublisherStatistics,
)
from trio_events.agent._retry import backoff_delays
from trio_events.agent._sink import BatchEncoder, Outcome, PublishClient, PublishOutcome

if TYPE_CHECKING:
    from trio_events._metrics import Metrics
    from trio_events.agent._buffer import EventBatch, EventBuffer

__all__ = [
    "DEFAULT_EXPOSABLE_EVENT_TYPES",
    "PublishClient",
    "PublisherConfig",
    "PublisherStatistics",
    "RayEventPublisher",
]

logger = logging.getLogger("trio_events.publisher")


# Closing the client (httpx's connections) at the end of run(), even when cancelled.
_CLOSE_TIMEOUT: Final = 1.0
_CONVERSION_ERRORS: Final = (DecodeError, json_format.Error, ValueError, orjson.JSONEncodeError)


@final
class RayEventPublisher:
    """Delivers the events of ``buffer`` to ``client``: ``await nursery.start(publisher.run)``.

    The publisher owns ``client`` and closes it when :meth:`run` ends. ``rng`` drives the
    backoff jitter (seed it in tests). With an ``encoder`` the body is what it builds (also for
    a batch whose events were all filtered out) instead of the JSON array.
    """

    def __init__(
        self,
        config: PublisherConfig,
        client: PublishClient,
        buffer: EventBuffer,
        *,
        metrics: Metrics,
        rng: random.Random | None = None,
        encoder: BatchEncoder | None = None,
    ) -> None:
        self._config = config
        self._encoder = encoder
        self._client = client
        self._buffer = buffer
        self._metrics = metrics
        self._rng = rng if rng is not None else random.Random()
        converter = JsonConverter if config.converter == "compiled" else ProtobufReferenceConverter
        self._converter = converter(preserving_proto_field_name=config.preserve_proto_field_name)
        self._state: Literal["new", "running", "finished"] = "new"
        self._finished = trio.Event()
        self._work_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._sleep_scope: trio.CancelScope | None = None
        self._drain_deadline: float | None = None
        self._last_success = 0.0
        self._delivered = self._filtered = self._dropped = self._abandoned = self._retained = 0
        self._in_flight = self._attempts = self._consecutive_failures = 0

    @property
    def name(self) -> str:
        return self._config.name

    def statistics(self) -> PublisherStatistics:
        unread = self._buffer.unread(self.name) if self._state == "running" else 0
        return PublisherStatistics(
            name=self.name,
            delivered=self._delivered,
            filtered=self._filtered,
            dropped=self._dropped,
            abandoned=self._abandoned,
            retained=self._retained,
            in_flight=self._in_flight,
            unread=unread,
            attempts=self._attempts,
            consecutive_failures=self._consecutive_failures,
            draining=self._drain_deadline is not None,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register as a buffer consumer, signal ``started()``, then publish until drained.

        Returns after :meth:`drain` finished (or the buffer was closed and fully read); runs
        until cancelled otherwise. On the way out the in-flight batch and the unread events are
        counted as abandoned, the consumer is unregistered and the client closed.
        """
        if self._state != "new":
            raise RuntimeError("RayEventPublisher.run() can only be called once per publisher.")
        name = self.name
        self._buffer.register_consumer(name)
        self._state = "running"
        clock = trio.lowlevel.current_clock()
        self._last_success = clock.current_time()
        # The metric reports time.monotonic() - f(); express our (maybe virtual) trio clock in
        # those terms, so the gauge grows with trio time, as tests in virtual time expect.
        self._metrics.track_time_since_last_success(
            name, lambda: time.monotonic() - (clock.current_time() - self._last_success)
        )
        self._metrics.consecutive_failures.labels(name).set(0)
        try:
            with trio.CancelScope() as self._work_scope:
                task_status.started()
                await self._loop()
        finally:
            self._work_scope = None
            self._finish()
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                await self._client.aclose()

    async def drain(self, deadline: float) -> PublisherStatistics:
        """Deliver what this publisher has not read yet, until none is left or ``deadline``.

        ``deadline`` is an absolute ``trio.current_time()``. Returns the final statistics once
        :meth:`run` has ended (at once if it is not running). Calling it again can only bring
        the deadline forward.
        """
        if self._state != "running":
            await trio.lowlevel.checkpoint()
            return self.statistics()
        if self._drain_deadline is None or deadline < self._drain_deadline:
            self._drain_deadline = deadline
        if self._work_scope is not None:
            self._work_scope.deadline = min(self._work_scope.deadline, deadline)
        # Stop lingering or sleeping: the loop re-decides with the deadline in mind.
        for scope in (self._wait_scope, self._sleep_scope):
            if scope is not None:
                scope.cancel()
        await self._finished.wait()
        return self.statistics()

    # ---- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while (batch := await self._next_batch()) is not None:
            # No checkpoint since the batch was taken: from here on it is accounted for.
            self._in_flight = len(batch)
            if await self._handle(batch):
                # Settled (delivered, filtered or dropped, all counted): a durable buffer may
                # now forget it. Not when cancelled or abandoned: then a restart re-sends it.
                self._buffer.commit(self.name, batch)

    async def _next_batch(self) -> EventBatch | None:
        """The next batch, or None once drained (or the buffer is closed and read)."""
        while self._drain_deadline is None:
            with trio.CancelScope() as self._wait_scope:
                try:
                    return await self._buffer.wait_for_batch(self.name, self._config.linger)
                except trio.EndOfChannel:
                    return None
                finally:
                    self._wait_scope = None
            # Cancelled by drain(); wait_for_batch lost nothing. Go on without lingering.
        await trio.lowlevel.checkpoint()
        batch = self._buffer.take_nowait(self.name, self._buffer.max_batch_size)
        return batch if batch else None

    async def _handle(self, batch: EventBatch) -> bool:
        """Filter, convert and publish ``batch``; False when it was abandoned at shutdown."""
        blobs = batch.blobs
        exposable = self._config.exposable_event_types
        if exposable is not None:
            blobs = [
                blob for t, blob in zip(batch.event_types, blobs, strict=True) if t in exposable
            ]
            filtered = len(batch) - len(blobs)
            if filtered:
                self._filtered += filtered
                self._in_flight -= filtered
                self._metrics.filtered_events.labels(self.name).inc(filtered)
        if self._encoder is not None:
            # A serialized AddEventsRequest: may carry dropped task attempts and no event.
            body = self._encoder.encode(blobs)
            if body is None:
                return True
            return await self._publish_with_retries(body, self._in_flight)
        if not blobs:
            return True
        body = await self._convert(blobs)
        if body is None:
            return True
        return await self._publish_with_retries(body, self._in_flight)

    async def _convert(self, blobs: list[bytes]) -> bytes | None:
        """The JSON array body; events that cannot be converted are dropped and counted."""
        try:
            return await self._converter.dumps_serialized_cooperatively(
                blobs, chunk_size=self._config.chunk_size
            )
        except _CONVERSION_ERRORS:
            pass  # find the culprits one by one below
        values = []
        for i, blob in enumerate(blobs):
            if i and i % self._config.chunk_size == 0:
                await trio.lowlevel.checkpoint()
            try:
                values.append(self._converter.to_value(pb.RayEvent.FromString(blob)))
            except _CONVERSION_ERRORS as exc:
                logger.error(
                    "Publisher %s dropped an event that cannot be converted to JSON: %s",
                    self.name,
                    exc,
                )
                self._drop(1, "conversion_error")
        return orjson.dumps(values) if values else None

    async def _publish_with_retries(self, body: bytes, count: int) -> bool:
        """Publish until delivered or dropped (True), or abandoned at shutdown (False)."""
        config = self._config
        delays = backoff_delays(
            config.initial_backoff, config.max_backoff, config.jitter, self._rng
        )
        first_attempt = trio.current_time()
        failures = 0
        while True:
            outcome = await self._attempt(body)
            if outcome.ok:
                self._succeeded(count, failures)
                return True
            failures += 1
            if outcome.outcome is Outcome.PERMANENT:
                self._give_up(count, outcome.reason, outcome, "the error is permanent")
                return True
            if config.max_retries >= 0 and failures > config.max_retries:
                self._give_up(
                    count, "retries_exhausted", outcome, f"{config.max_retries} retries failed"
                )
                return True
            delay = next(delays)
            if outcome.retry_after is not None and outcome.retry_after > delay:
                delay = min(outcome.retry_after, config.max_retry_after)
            now = trio.current_time()
            if (
                config.give_up_after is not None
                and now + delay - first_attempt > config.give_up_after
            ):
                self._give_up(
                    count,
                    "give_up_after",
                    outcome,
                    f"still failing after {now - first_attempt:.1f} s",
                )
                return True
            if self._drain_deadline is not None:
                last_call = self._drain_deadline - 2 * config.attempt_timeout
                if now >= last_call:
                    logger.warning(
                        "Publisher %s %s %d events at shutdown: publishing failed (%s) "
                        "with too little of the grace period left to retry.",
                        self.name,
                        "leaves in the spool" if self._buffer.durable else "abandons",
                        count,
                        _describe(outcome),
                    )
                    self._abandon(count)
                    return False
                delay = min(delay, last_call - now)
            logger.log(
                logging.ERROR if outcome.reason.startswith("tls") else logging.WARNING,
                "Publisher %s: publishing %d events failed (%s); retry %d in %.3f s.",
                self.name,
                count,
                _describe(outcome),
                failures,
                delay,
            )
            with trio.CancelScope() as self._sleep_scope:
                await trio.sleep(delay)
            self._sleep_scope = None

    async def _attempt(self, body: bytes) -> PublishOutcome:
        start = trio.current_time()
        outcome = await self._client.publish(body)
        self._attempts += 1
        self._metrics.publish_latency.labels(
            self.name, "success" if outcome.ok else "failure"
        ).observe(trio.current_time() - start)
        if not outcome.ok:
            self._consecutive_failures += 1
            self._metrics.consecutive_failures.labels(self.name).set(self._consecutive_failures)
        return outcome

    # ---- accounting --------------------------------------------------------------------------

    def _succeeded(self, count: int, failures: int) -> None:
        self._in_flight -= count
        self._delivered += count
        self._metrics.published_events.labels(self.name).inc(count)
        self._consecutive_failures = 0
        self._metrics.consecutive_failures.labels(self.name).set(0)
        self._last_success = trio.current_time()
        if failures:
            logger.info(
                "Publisher %s delivered %d events after %d retries.", self.name, count, failures
            )

    def _give_up(self, count: int, reason: str, outcome: PublishOutcome, why: str) -> None:
        logger.error(
            "Publisher %s dropped a batch of %d events (%s): %s.",
            self.name,
            count,
            why,
            _describe(outcome),
        )
        self._drop(count, reason)

    def _drop(self, count: int, reason: str) -> None:
        self._in_flight -= count
        self._dropped += count
        self._metrics.publish_failures.labels(self.name).inc(count)
        self._metrics.publish_dropped_events.labels(self.name, reason).inc(count)

    def _abandon(self, count: int, *, in_flight: bool = True) -> None:
        if count:
            if in_flight:
                self._in_flight -= count
            if self._buffer.durable:  # not committed, so still in the spool for the next start
                self._retained += count
                return
            self._abandoned += count
            self._metrics.publish_dropped_events.labels(self.name, "shutdown_abandoned").inc(count)

    def _finish(self) -> None:
        """run() is ending: count what is left as abandoned and leave the buffer."""
        in_flight = self._in_flight
        unread = self._buffer.unread(self.name)
        self._abandon(in_flight)
        self._abandon(unread, in_flight=False)
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
        self._buffer.unregister_consumer(self.name)
        self._state = "finished"
        self._finished.set()


def _describe(outcome: PublishOutcome) -> str:
    status = f"HTTP {outcome.status}" if outcome.status is not None else outcome.reason
    return f"{status}: {outcome.detail}" if outcome.detail else status
