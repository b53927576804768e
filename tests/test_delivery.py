"""The delivery engine: a window of batches in flight, byte-bounded bodies, bisection of refused
batches, the dead-letter file, and the spool's cursor with requests in flight.

All in virtual time (``autojump_clock``) against a scripted in-process sink with hooks: each
request's answer and latency are decided from the events it holds.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import TYPE_CHECKING

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.agent._buffer import MultiConsumerEventBuffer
from trio_events.agent._publisher import PublisherConfig, RayEventPublisher
from trio_events.agent._retry import classify_status
from trio_events.agent._sink import Outcome, PublishOutcome
from trio_events.agent._spool import SpoolConfig, SpoolEventBuffer
from trio_events.agent._window import AdaptiveWindow

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from trio_events.agent._buffer import EventBuffer

LIFECYCLE = pb.RayEvent.TASK_LIFECYCLE_EVENT
Answer = tuple[int, float]  # (HTTP status, or 0 for a timeout; seconds before answering)


def event(i: int, padding: int = 0) -> bytes:
    return pb.RayEvent(
        event_id=i.to_bytes(4, "big"), event_type=LIFECYCLE, message=f"{i}" + " " * padding
    ).SerializeToString()


def fill(buffer: EventBuffer, n: int, start: int = 0, padding: int = 0) -> None:
    buffer.add_many_nowait([LIFECYCLE] * n, [event(i, padding) for i in range(start, start + n)])


class Sink:
    """A PublishClient that answers each request as ``answer(ids)`` says, recording it all."""

    def __init__(self, answer: Callable[[list[int]], Answer] | None = None) -> None:
        self.answer = answer or (lambda ids: (200, 0.0))
        self.posted: list[list[int]] = []  # the ids of each request, in the order posted
        self.completed: list[list[int]] = []  # of the 2xx ones, in the order answered
        self.delivered: Counter[int] = Counter()
        self.bodies: list[bytes] = []
        self.concurrent = self.max_concurrent = 0
        self.closed = False

    async def publish(self, body: bytes) -> PublishOutcome:
        ids = [int(e["message"]) for e in orjson.loads(body)]
        self.posted.append(ids)
        self.bodies.append(body)
        status, latency = self.answer(ids)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await trio.sleep(latency)
        finally:
            self.concurrent -= 1
        if status == 0:
            return PublishOutcome(Outcome.RETRYABLE, "timeout")
        if status < 300:
            self.completed.append(ids)
            self.delivered.update(ids)
            return PublishOutcome(Outcome.SUCCESS, f"http_{status}", status=status)
        return PublishOutcome(classify_status(status), f"http_{status}", status=status)

    async def aclose(self) -> None:
        self.closed = True


def publisher(
    buffer: EventBuffer, sink: Sink, metrics: Metrics | None = None, **config: object
) -> RayEventPublisher:
    settings_ = {"name": "p", "jitter": 0.0, "exposable_event_types": None, **config}
    return RayEventPublisher(
        PublisherConfig(**settings_),  # type: ignore[arg-type]
        sink,
        buffer,
        metrics=metrics or Metrics(),
        rng=random.Random(0),
    )


def dropped(metrics: Metrics, reason: str) -> float:
    labels = {"consumer": "p", "reason": reason}
    return metrics.value("trio_events_publisher_dropped_events_total", labels)


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(3600):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


# ---- the window: out of order, a failure between successes, cancellation, drain ---------------


async def test_batches_complete_out_of_order_and_the_committed_position_waits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(1000, 5)
    fill(buffer, 20)
    sink = Sink(lambda ids: (200, 10.0 if 0 in ids else 1.0))  # the first batch is slow
    pub = publisher(buffer, sink, max_in_flight=4, adaptive_in_flight=False)
    await nursery.start(pub.run)
    await until(lambda: len(sink.completed) == 3)
    assert sorted(sink.completed) == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    consumer = buffer.statistics().consumers["p"]
    # Batches 1-3 are committed, but batch 0 (5 events) holds the committed position.
    assert (consumer.committed, consumer.uncommitted) == (0, 5)
    assert pub.statistics().delivered == 15
    await until(lambda: pub.statistics().delivered == 20)
    consumer = buffer.statistics().consumers["p"]
    assert (consumer.committed, consumer.uncommitted) == (20, 0)
    assert sink.max_concurrent == 4


async def test_with_one_in_flight_batches_settle_strictly_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(1000, 5)
    fill(buffer, 20)
    sink = Sink(lambda ids: (503 if 0 in ids and len(sink.posted) < 3 else 200, 1.0))
    pub = publisher(buffer, sink, max_in_flight=1)
    await nursery.start(pub.run)
    await until(lambda: pub.statistics().delivered == 20)
    assert sink.max_concurrent == 1
    assert [ids[0] for ids in sink.posted] == [0, 0, 0, 5, 10, 15]  # retries before the next


async def test_a_refused_batch_between_two_delivered_ones(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(1000, 2)
    fill(buffer, 6)
    sink = Sink(lambda ids: (400 if {2, 3} & set(ids) else 200, 0.5))
    pub = publisher(buffer, sink, metrics, max_in_flight=3, adaptive_in_flight=False)
    await nursery.start(pub.run)
    await until(lambda: pub.statistics().dropped == 2)
    await until(lambda: pub.statistics().delivered == 4)
    assert sorted(sink.delivered) == [0, 1, 4, 5]
    assert dropped(metrics, "http_400") == 2
    consumer = buffer.statistics().consumers["p"]
    assert (consumer.committed, consumer.uncommitted) == (6, 0)


async def test_cancelling_run_with_requests_in_flight_counts_every_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(1000, 5)
    fill(buffer, 50)
    sink = Sink(lambda ids: (200, 2.0 if ids[0] < 10 else 1000.0))
    pub = publisher(buffer, sink, metrics, max_in_flight=4, adaptive_in_flight=False)
    with trio.move_on_after(5):
        await pub.run()
    stats = pub.statistics()
    assert stats.delivered == 10
    assert stats.in_flight == 0
    assert stats.abandoned == 40  # 4 batches in flight, 1 converted and waiting, the rest unread
    assert stats.delivered + stats.abandoned == 50
    assert dropped(metrics, "shutdown_abandoned") == 40
    assert sink.closed
    assert buffer.statistics().consumers == {}


async def test_drain_waits_for_every_request_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = MultiConsumerEventBuffer(1000, 5)
    fill(buffer, 40)
    sink = Sink(lambda ids: (200, 3.0))
    pub = publisher(buffer, sink, max_in_flight=8, adaptive_in_flight=False, linger=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        await trio.sleep(1)
        assert pub.statistics().batches_in_flight == 8
        stats = await pub.drain(trio.current_time() + 30)
    assert stats.delivered == 40
    assert (stats.in_flight, stats.abandoned, stats.unread) == (0, 0, 0)
    assert trio.current_time() == pytest.approx(3.0)  # one round of 8 batches of 5, at once


async def test_drain_deadline_abandons_what_is_still_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = MultiConsumerEventBuffer(1000, 5)
    fill(buffer, 40)
    sink = Sink(lambda ids: (200, 1.0 if ids[0] < 20 else 100.0))
    pub = publisher(buffer, sink, max_in_flight=4, adaptive_in_flight=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        stats = await pub.drain(trio.current_time() + 10)
    assert (stats.delivered, stats.abandoned, stats.in_flight) == (20, 20, 0)


# ---- adaptive concurrency (AIMD) -----------------------------------------------------------------


async def test_the_window_grows_while_the_round_trip_time_holds(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(100_000, 10)
    fill(buffer, 20_000)
    sink = Sink(lambda ids: (200, 0.04))  # latency independent of concurrency: more is better
    pub = publisher(buffer, sink, max_in_flight=12)
    await nursery.start(pub.run)
    assert pub.statistics().in_flight_limit == 1  # Vector's start: one request
    await until(lambda: pub.statistics().in_flight_limit == 12)
    assert trio.current_time() < 2.0  # about one step per round trip
    await until(lambda: pub.statistics().delivered == 20_000)
    assert sink.max_concurrent == 12  # never past the bound


async def test_the_window_shrinks_when_latency_rises_with_concurrency(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(100_000, 10)
    fill(buffer, 5000)
    # A sink that handles 4 requests at a time: past that, each one waits for the others.
    sink = Sink(lambda ids: (200, 0.05 * max(1, sink.concurrent + 1 - 3)))
    pub = publisher(buffer, sink, max_in_flight=32)
    await nursery.start(pub.run)
    await until(lambda: pub.statistics().delivered == 5000)
    window = pub._window.statistics()
    assert window.decreases > 0
    assert window.limit < 16  # well under the bound: rising latency held it back
    assert sink.max_concurrent < 16


@pytest.mark.parametrize("status", [429, 503, 0])
async def test_back_pressure_decreases_the_window(
    status: int, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(100_000, 10)
    fill(buffer, 2000)
    pressure = False
    sink = Sink(lambda ids: (status if pressure else 200, 0.04))
    pub = publisher(buffer, sink, max_in_flight=10)
    await nursery.start(pub.run)
    await until(lambda: pub.statistics().in_flight_limit == 10)
    pressure = True
    await until(lambda: pub.statistics().in_flight_limit <= 5)
    pressure = False
    await until(lambda: pub.statistics().delivered == 2000)
    assert sum(sink.delivered.values()) == 2000  # nothing lost, nothing twice
    assert pub.statistics().dropped == 0


async def test_window_rules() -> None:
    window = AdaptiveWindow(3)
    assert window.limit == 1
    with trio.testing.assert_checkpoints():
        await window.acquire()
    window.record(1.0, 1.0, back_pressure=False)  # the first interval sets the baseline
    window.record(1.0, 2.0, back_pressure=False)  # steady RTT, window full: +1
    assert window.limit == 2
    window.record(1.0, 3.0, back_pressure=False)  # steady, but the window was not full: no +1
    assert window.limit == 2
    await window.acquire()
    window.record(1.0, 4.0, back_pressure=False)
    assert window.limit == 3
    await window.acquire()
    window.record(1.0, 5.0, back_pressure=False)
    assert window.limit == 3  # the bound
    window.record(3.0, 6.0, back_pressure=False)  # the RTT rose past the baseline's deviation
    assert window.limit == 2
    window.record(1.0, 10.0, back_pressure=True)  # 429, 503, timeout
    assert window.limit == 1
    window.record(1.0, 20.0, back_pressure=True)
    assert window.limit == 1  # never below one
    assert window.statistics().decreases == 2
    assert window.statistics().floor_rtt == 1.0
    for _ in range(3):
        window.release()
    fixed = AdaptiveWindow(5, adaptive=False)
    fixed.record(100.0, 1.0, back_pressure=True)
    assert fixed.statistics().limit == 5
    with pytest.raises(ValueError, match=r"^max_in_flight must be >= 1, got 0\.$"):
        AdaptiveWindow(0)


async def test_a_sink_that_queues_keeps_the_window_near_its_floor() -> None:
    window = AdaptiveWindow(32)
    now, service = 0.0, 0.01
    for _ in range(400):  # a sink serving one request at a time: RTT = in flight x service
        while window.statistics().in_flight > window.limit:
            window.release()  # requests answered, not replaced while over the limit
        while window.statistics().in_flight < window.limit:
            await window.acquire()
        rtt = service * window.statistics().in_flight
        now += rtt
        window.record(rtt, now, back_pressure=False)
    assert window.limit <= 3  # one served, one or two queued: more would only wait longer


async def test_acquire_waits_for_a_free_slot(autojump_clock: trio.testing.MockClock) -> None:
    window = AdaptiveWindow(2, adaptive=False)
    await window.acquire()
    await window.acquire()
    got = trio.Event()

    async def third() -> None:
        await window.acquire()
        got.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.sleep(1)
        assert not got.is_set()
        window.release()
        await got.wait()
    assert window.statistics().in_flight == 2


# ---- byte-bounded bodies ----------------------------------------------------------------------


async def test_bodies_stay_under_max_batch_bytes_and_a_big_event_goes_alone(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(1000, 1000)
    fill(buffer, 30, padding=900)
    buffer.add_nowait(LIFECYCLE, event(30, padding=9000))
    fill(buffer, 10, start=31, padding=900)
    sink = Sink()
    pub = publisher(buffer, sink, max_batch_bytes=4096, max_in_flight=1)
    await nursery.start(pub.run)
    await until(lambda: pub.statistics().delivered == 41)
    sizes = [len(b) for b in sink.bodies]
    alone = sink.posted.index([30])
    assert sizes[alone] > 4096
    assert all(size <= 4096 for i, size in enumerate(sizes) if i != alone)
    assert [i for ids in sink.posted for i in ids] == list(range(41))  # in order, each once


async def test_a_413_splits_and_an_event_too_large_alone_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(1000, 1000)
    fill(buffer, 8, padding=100)
    buffer.add_nowait(LIFECYCLE, event(8, padding=5000))
    sink = Sink(lambda ids: (413 if len(ids) > 4 or 8 in ids else 200, 0.1))
    dead = tmp_path / "dead.jsonl"
    pub = publisher(buffer, sink, metrics, dead_letter=str(dead))
    await nursery.start(pub.run)
    await until(lambda: pub.statistics().dropped == 1 and pub.statistics().delivered == 8)
    assert dropped(metrics, "too_large") == 1
    assert sorted(sink.delivered) == list(range(8))
    await until(lambda: pub.statistics().dead_lettered == 1)  # written in a worker thread
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(lines) == 1
    assert (lines[0]["reason"], lines[0]["status"], lines[0]["publisher"]) == (
        "too_large",
        413,
        "p",
    )
    assert lines[0]["event"]["message"].strip() == "8"


# ---- bisection isolates exactly the poison events ---------------------------------------------


def run_poisoned(poison: set[int], n: int, batch: int, status: int, in_flight: int) -> None:
    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(1000, batch)
    fill(buffer, n)
    sink = Sink(lambda ids: (status if poison & set(ids) else 200, 0.01))

    async def main() -> None:
        pub = publisher(buffer, sink, metrics, max_in_flight=in_flight)
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run)
            await until(lambda: pub.statistics().delivered + pub.statistics().dropped == n)
            stats = await pub.drain(trio.current_time() + 1)
        assert stats.dropped == len(poison)
        assert stats.delivered == n - len(poison)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert set(sink.delivered) | poison == set(range(n))
    assert not set(sink.delivered) & poison
    assert all(count == 1 for count in sink.delivered.values())  # each good event once
    reason = "http_400" if status == 400 else "isolated_5xx"
    assert dropped(metrics, reason) == len(poison)
    assert buffer.statistics().consumers == {}


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 40),
    batch=st.integers(1, 16),
    status=st.sampled_from([400, 500]),
    in_flight=st.sampled_from([1, 4]),
)
def test_bisection_drops_exactly_the_poison_events(
    data: st.DataObject, n: int, batch: int, status: int, in_flight: int
) -> None:
    poison = data.draw(st.sets(st.integers(0, n - 1), max_size=n))
    run_poisoned(poison, n, batch, status, in_flight)


async def test_a_sink_that_is_down_loses_nothing_to_bisection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    buffer = MultiConsumerEventBuffer(1000, 8)
    fill(buffer, 8)
    down = True
    sink = Sink(lambda ids: (500 if down else 200, 0.01))
    pub = publisher(buffer, sink, max_in_flight=1)
    await nursery.start(pub.run)
    await trio.sleep(120)
    assert pub.statistics().dropped == 0  # nothing got through: no event is blamed
    requests_while_down = len(sink.posted)
    down = False
    await until(lambda: pub.statistics().delivered == 8)
    assert sorted(sink.delivered) == list(range(8))
    # Backoff, not a storm: a retry per 5 s, a probe every third, and the first quick ones.
    assert requests_while_down < 120 / 5 * 4 / 3 + 20


# ---- the spool after a crash with requests in flight ------------------------------------------


async def test_spool_cursor_after_a_crash_with_requests_in_flight(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    config = SpoolConfig(str(tmp_path / "s.spool"), max_events=1000, max_bytes=None)
    first = Sink(lambda ids: (200, 1000.0 if 5 in ids else 1.0))  # batch 5..9 hangs
    with SpoolEventBuffer(config, 5) as spool:
        fill(spool, 20)
        pub = publisher(spool, first, max_in_flight=4, adaptive_in_flight=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run)
            await until(lambda: len(first.completed) == 3)
            await trio.sleep(10)
            nursery.cancel_scope.cancel()  # the crash: nothing more is written
        crashed = pub.statistics()
        committed = spool.storage_statistics().settled["p"]
    assert committed == 5  # batch 0..4, then the hanging one holds the prefix
    assert sorted(first.delivered) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert crashed.redeliverable == 10  # 10..19: settled past the committed position
    assert crashed.retained == 5  # in flight: still in the spool

    second = Sink()
    with SpoolEventBuffer(config, 5) as spool:
        pub = publisher(spool, second)
        async with trio.open_nursery() as nursery:
            await nursery.start(pub.run)
            await pub.drain(trio.current_time() + 60)
    assert sorted(second.delivered) == list(range(5, 20))  # nothing acknowledged is lost
    duplicates = first.delivered & second.delivered
    assert sorted(duplicates) == list(range(10, 20))
    assert len(duplicates) == crashed.redeliverable  # exactly those, and counted


# ---- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_in_flight": 0}, r"^PublisherConfig\.max_in_flight must be an int >= 1, got 0\.$"),
        (
            {"split_after_failures": 0},
            r"^PublisherConfig\.split_after_failures must be an int >= 1, got 0\.$",
        ),
        (
            {"max_batch_bytes": 100},
            r"^PublisherConfig\.max_batch_bytes must be >= 1024, got 100\.$",
        ),
        (
            {"dead_letter_max_bytes": 0},
            r"^PublisherConfig\.dead_letter_max_bytes must be >= 1, got 0\.$",
        ),
    ],
)
def test_delivery_settings_are_validated(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PublisherConfig(**kwargs)  # type: ignore[arg-type]


def test_retry_after_is_capped_at_30_seconds_by_default() -> None:
    assert PublisherConfig().max_retry_after == 30.0
