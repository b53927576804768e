"""Delivering one batch: conversion to bodies within the byte bound, retries, bisection.

:class:`Delivery` is the part of a publisher (_publisher.py) that turns a batch taken from the
buffer into requests and settles every event of it, with the publisher's counters:

* **Bodies within ``max_batch_bytes``.** A converted body larger than the bound is split in
  halves (converted again) until each part fits; a single event larger than the bound goes
  alone, and is dropped as ``too_large`` if the sink refuses it with 413.
* **Retries** as Ray's publisher does them (backoff with jitter, ``Retry-After`` honoured up to
  ``max_retry_after``), with ``max_retries`` and ``give_up_after`` as limits. The same body is
  re-sent, so the same event ids.
* **Isolation by bisection.** A permanent refusal (4xx other than 408/429, 413 included) of a
  part of more than one event splits it in halves, delivered one after the other, until the
  refused events are alone: those are dropped, counted by reason (``http_400``...,
  ``too_large``) and written to the dead-letter file if there is one. A part failing with a 5xx
  other than 503/504 ``split_after_failures`` times is split the same way; a single event that
  keeps failing so is dropped (``isolated_5xx``) only when the sink is shown to work: another
  request got through since its batch first failed, or, failing that, the sink accepts an
  empty array ``[]`` posted as a probe (so a lone poison event cannot wedge a publisher with
  one request in flight). A sink that is down (nothing gets through, the probe fails too)
  therefore loses nothing: the parts of a batch are posted one after the other, so splitting
  costs a few requests per level, never a storm, and the batch is delivered, in parts, once
  the sink is back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Protocol, final

import attrs
import orjson
import trio
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from trio_events import pb
from trio_events.agent._dead_letter import split_events
from trio_events.agent._retry import backoff_delays
from trio_events.agent._sink import Outcome, PublishClient, PublishOutcome

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from trio_events._metrics import Metrics
    from trio_events.agent._buffer import EventBatch
    from trio_events.agent._convert import JsonConverter
    from trio_events.agent._convert_reference import ProtobufReferenceConverter
    from trio_events.agent._dead_letter import DeadLetterFile
    from trio_events.agent._publisher_config import PublisherConfig
    from trio_events.agent._sink import BatchEncoder
    from trio_events.agent._window import AdaptiveWindow

__all__ = ["BatchConverter", "Delivery", "Taken"]

logger = logging.getLogger("trio_events.agent.delivery")

_CONVERSION_ERRORS: Final = (DecodeError, json_format.Error, ValueError, orjson.JSONEncodeError)
_BACK_PRESSURE: Final = frozenset({408, 429, 503})


class BatchConverter(Protocol):
    """Serialized ``RayEvent`` messages in, the JSON array body Ray posts out (one call per
    batch). Raises on a batch with an event it cannot convert; the publisher then finds the
    culprits one by one with its own in-process converter."""

    async def dumps_serialized_cooperatively(self, blobs: Sequence[bytes]) -> bytes: ...


@attrs.define(eq=False)
class Taken:
    """A batch taken from the buffer, until every event of it is settled."""

    batch: EventBatch
    pending: int  #: events not yet delivered, filtered or dropped
    pieces: list[tuple[list[bytes], bytes]] = attrs.Factory(list)  #: (events, body) to post


@final
class Delivery:
    """A publisher's delivery of batches and its counters (see the module docstring)."""

    def __init__(
        self,
        config: PublisherConfig,
        client: PublishClient,
        metrics: Metrics,
        window: AdaptiveWindow,
        rng: random.Random,
        converter: BatchConverter | None,
        fallback: JsonConverter | ProtobufReferenceConverter,
        encoder: BatchEncoder | None,
        dead_letter: DeadLetterFile | None,
        *,
        durable: bool,
        on_settled: Callable[[Taken], None],
    ) -> None:
        self._config = config
        self._name = config.name
        self._client = client
        self._metrics = metrics
        self._window = window
        self._rng = rng
        self._converter = converter
        self._fallback = fallback
        self._encoder = encoder
        self._dead_letter = dead_letter
        self._durable = durable
        self._on_settled = on_settled
        self._sleep_scopes: set[trio.CancelScope] = set()
        self.drain_deadline: float | None = None
        self.last_success = 0.0
        self.delivered = self.filtered = self.dropped = self.abandoned = self.retained = 0
        self.in_flight = self.attempts = self.consecutive_failures = self.splits = 0
        self.successes = 0  # successful requests, the evidence that lets a 5xx part be split

    # ---- preparing a batch -------------------------------------------------------------------

    def take(self, batch: EventBatch) -> Taken:
        self.in_flight += len(batch)
        return Taken(batch, len(batch))

    async def prepare(self, taken: Taken) -> None:
        """Filter ``taken`` by event type and convert it into bodies within the byte bound."""
        batch = taken.batch
        blobs = batch.blobs
        exposable = self._config.exposable_event_types
        if exposable is not None:
            blobs = [
                blob for t, blob in zip(batch.event_types, blobs, strict=True) if t in exposable
            ]
            filtered = len(batch) - len(blobs)
            if filtered:
                self.filtered += filtered
                self._metrics.filtered_events.labels(self._name).inc(filtered)
                self._settle(taken, filtered)
        if self._encoder is not None:
            # A serialized AddEventsRequest, which may carry dropped task attempts and no event.
            body = self._encoder.encode(blobs)
            if body is not None:
                taken.pieces = [(blobs, body)]
            elif blobs:
                self._drop(taken, len(blobs), "unencodable")
            await trio.lowlevel.checkpoint()
        elif blobs:
            taken.pieces = await self._bodies(taken, blobs)
        else:
            await trio.lowlevel.checkpoint()

    async def _bodies(self, taken: Taken, blobs: list[bytes]) -> list[tuple[list[bytes], bytes]]:
        """``blobs`` converted, split until each body fits ``max_batch_bytes`` (a single larger
        event goes alone); events that cannot be converted are dropped and counted."""
        try:
            if self._converter is not None:
                body = await self._converter.dumps_serialized_cooperatively(blobs)
            else:
                body = await self._fallback.dumps_serialized_cooperatively(
                    blobs, chunk_size=self._config.chunk_size
                )
        except _CONVERSION_ERRORS:
            blobs, body = await self._convert_one_by_one(taken, blobs)
            if not blobs:
                return []
        if len(body) > self._config.max_batch_bytes and len(blobs) > 1:
            mid = len(blobs) // 2
            return await self._bodies(taken, blobs[:mid]) + await self._bodies(taken, blobs[mid:])
        return [(blobs, body)]

    async def _convert_one_by_one(
        self, taken: Taken, blobs: list[bytes]
    ) -> tuple[list[bytes], bytes]:
        kept: list[bytes] = []
        values = []
        for i, blob in enumerate(blobs):
            if i and i % self._config.chunk_size == 0:
                await trio.lowlevel.checkpoint()
            try:
                values.append(self._fallback.to_value(pb.RayEvent.FromString(blob)))
            except _CONVERSION_ERRORS as exc:
                logger.error(
                    "Publisher %s dropped an event that cannot be converted to JSON: %s",
                    self._name,
                    exc,
                )
                self._drop(taken, 1, "conversion_error")
                continue
            kept.append(blob)
        return kept, orjson.dumps(values)

    # ---- delivering it -----------------------------------------------------------------------

    async def deliver(self, taken: Taken) -> None:
        """Publish every piece of ``taken`` in order; stops early only when abandoning."""
        pieces, taken.pieces = taken.pieces, []
        for blobs, body in pieces:
            if not await self._publish(taken, blobs, body, since=None):
                return

    async def _publish(
        self, taken: Taken, blobs: list[bytes], body: bytes, *, since: int | None
    ) -> bool:
        """Publish until delivered, split or dropped (True), or abandoned at shutdown (False).

        ``since``: the count of successful requests when this part's batch first failed (for
        the evidence that others get through).
        """
        config = self._config
        delays = backoff_delays(
            config.initial_backoff, config.max_backoff, config.jitter, self._rng
        )
        first_attempt = trio.current_time()
        failures = 0
        count = len(blobs)
        while True:
            outcome = await self._attempt(body)
            if outcome.ok:
                self._succeeded(taken, count, failures)
                return True
            failures += 1
            if since is None:
                since = self.successes
            splittable = self._encoder is None  # Ray retries a task-event request whole
            if outcome.outcome is Outcome.PERMANENT:
                if count > 1 and splittable:
                    return await self._split(taken, blobs, outcome, since=since)
                reason = "too_large" if outcome.status == 413 else outcome.reason
                await self._give_up(taken, body, count, reason, outcome, "the sink refused it")
                return True
            status = outcome.status
            if (
                status is not None
                and status >= 500
                and status not in _BACK_PRESSURE
                and status != 504
                and failures >= config.split_after_failures
                and splittable
            ):
                if count > 1:
                    return await self._split(taken, blobs, outcome, since=since)
                if self.successes > since or (
                    failures % config.split_after_failures == 0 and await self._probe()
                ):
                    why = f"it failed {failures} times while other requests got through"
                    await self._give_up(taken, body, 1, "isolated_5xx", outcome, why)
                    return True
            if config.max_retries >= 0 and failures > config.max_retries:
                why = f"{config.max_retries} retries failed"
                await self._give_up(taken, body, count, "retries_exhausted", outcome, why)
                return True
            delay = next(delays)
            if outcome.retry_after is not None and outcome.retry_after > delay:
                delay = min(outcome.retry_after, config.max_retry_after)
            now = trio.current_time()
            if (
                config.give_up_after is not None
                and now + delay - first_attempt > config.give_up_after
            ):
                why = f"still failing after {now - first_attempt:.1f} s"
                await self._give_up(taken, body, count, "give_up_after", outcome, why)
                return True
            last_chance = ""
            if self.drain_deadline is not None:
                last_call = self.drain_deadline - 2 * config.attempt_timeout
                if now >= last_call:
                    logger.warning(
                        "Publisher %s %s %d events at shutdown: publishing failed (%s) "
                        "with too little of the grace period left to retry.",
                        self._name,
                        "leaves in the spool" if self._durable else "abandons",
                        count,
                        describe(outcome),
                    )
                    return False  # still in flight: run() counts it when it ends
                if delay >= last_call - now:
                    delay = last_call - now
                    # Say it: after this retry the grace period has no room for another one.
                    then = "left in the spool" if self._durable else "abandoned"
                    last_chance = f", the last before the shutdown deadline ({then} if it fails)"
            logger.log(
                logging.ERROR if outcome.reason.startswith("tls") else logging.WARNING,
                "Publisher %s: publishing %d events failed (%s); retry %d in %.3f s%s.",
                self._name,
                count,
                describe(outcome),
                failures,
                delay,
                last_chance,
            )
            with trio.CancelScope() as scope:
                self._sleep_scopes.add(scope)
                try:
                    await trio.sleep(delay)
                finally:
                    self._sleep_scopes.discard(scope)

    async def _split(
        self,
        taken: Taken,
        blobs: list[bytes],
        outcome: PublishOutcome,
        *,
        since: int,
    ) -> bool:
        self.splits += 1
        mid = len(blobs) // 2
        logger.warning(
            "Publisher %s: the sink refused a batch of %d events (%s); splitting it into %d and "
            "%d to deliver the good events and drop only the refused ones.",
            self._name,
            len(blobs),
            describe(outcome),
            mid,
            len(blobs) - mid,
        )
        for half in (blobs[:mid], blobs[mid:]):
            for part, body in await self._bodies(taken, half):
                if not await self._publish(taken, part, body, since=since):
                    return False
        return True

    async def _probe(self) -> bool:
        """Whether the sink accepts an empty batch: it works, whatever else it refuses."""
        outcome = await self._attempt(b"[]")
        if outcome.ok:
            self.successes += 1
        return outcome.ok

    async def _attempt(self, body: bytes) -> PublishOutcome:
        start = trio.current_time()
        outcome = await self._client.publish(body)
        now = trio.current_time()
        self.attempts += 1
        self._metrics.publish_latency.labels(
            self._name, "success" if outcome.ok else "failure"
        ).observe(now - start)
        back_pressure = outcome.status in _BACK_PRESSURE or outcome.reason == "timeout"
        rtt = now - start if outcome.ok or back_pressure else None
        self._window.record(rtt, now, back_pressure=back_pressure)
        if not outcome.ok:
            self.consecutive_failures += 1
            self._metrics.consecutive_failures.labels(self._name).set(self.consecutive_failures)
        return outcome

    def start_drain(self, deadline: float) -> None:
        """Bring the deadline forward and wake sleeping retries to re-decide with it."""
        if self.drain_deadline is None or deadline < self.drain_deadline:
            self.drain_deadline = deadline
        for scope in self._sleep_scopes:
            scope.cancel()

    # ---- accounting --------------------------------------------------------------------------

    def _settle(self, taken: Taken, count: int) -> None:
        taken.pending -= count
        self.in_flight -= count
        # count 0: a request of dropped task attempts only, after its events were settled.
        if taken.pending == 0 and count:
            self._on_settled(taken)

    def _succeeded(self, taken: Taken, count: int, failures: int) -> None:
        self.delivered += count
        self.successes += 1
        self._metrics.published_events.labels(self._name).inc(count)
        self.consecutive_failures = 0
        self._metrics.consecutive_failures.labels(self._name).set(0)
        self.last_success = trio.current_time()
        if failures:
            logger.info(
                "Publisher %s delivered %d events after %d retries.", self._name, count, failures
            )
        self._settle(taken, count)

    async def _give_up(
        self,
        taken: Taken,
        body: bytes,
        count: int,
        reason: str,
        outcome: PublishOutcome,
        why: str,
    ) -> None:
        logger.error(
            "Publisher %s dropped %d events (%s): %s.", self._name, count, why, describe(outcome)
        )
        self._drop(taken, count, reason)
        if self._dead_letter is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(self._config.attempt_timeout):
                await self._dead_letter.write(
                    self._name, reason, outcome.status, outcome.detail, split_events(body)
                )

    def _drop(self, taken: Taken, count: int, reason: str) -> None:
        self.dropped += count
        self._metrics.publish_failures.labels(self._name).inc(count)
        self._metrics.publish_dropped_events.labels(self._name, reason).inc(count)
        self._settle(taken, count)

    def abandon(self, count: int, *, in_flight: bool = True) -> None:
        """run() ends with ``count`` events unsettled: abandoned, or retained by a spool."""
        if not count:
            return
        if in_flight:
            self.in_flight -= count
        if self._durable:  # not committed, so still in the spool for the next start
            self.retained += count
            return
        self.abandoned += count
        self._metrics.publish_dropped_events.labels(self._name, "shutdown_abandoned").inc(count)


def describe(outcome: PublishOutcome) -> str:
    status = f"HTTP {outcome.status}" if outcome.status is not None else outcome.reason
    return f"{status}: {outcome.detail}" if outcome.detail else status
