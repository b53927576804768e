"""MultiConsumerEventBuffer: Ray's tests ported, a state machine against a port of Ray's
algorithm, cancellation safety and the linger in virtual time.

Every test that takes the ``make_buffer`` fixture runs twice: on the in-memory buffer and on the
durable SpoolEventBuffer, which must behave the same (tests/test_spool.py has what only a spool
does, and runs the state machine below on it too).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import TYPE_CHECKING, Protocol

import attrs
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.agent._buffer import EventBatch, EventConsumer, MultiConsumerEventBuffer
from trio_events.agent._spool import SpoolConfig, SpoolEventBuffer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TASK_LIFECYCLE = 2
# No sockets here: every async test takes ``autojump_clock``, so lingers cost no real time.


def blob(i: int) -> bytes:
    return b"event-%d" % i


AnyBuffer = MultiConsumerEventBuffer | SpoolEventBuffer


class BufferFactory(Protocol):
    def __call__(
        self, max_size: int = 100, max_batch_size: int = 10, *, metrics: Metrics | None = None
    ) -> AnyBuffer: ...


def open_spool(
    path: Path | str, max_size: int, max_batch_size: int, metrics: Metrics
) -> SpoolEventBuffer:
    config = SpoolConfig(str(path), max_events=max_size, max_bytes=None)
    return SpoolEventBuffer(config, max_batch_size, metrics=metrics)


@pytest.fixture(params=["memory", "spool"])
def make_buffer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BufferFactory]:
    spools: list[SpoolEventBuffer] = []

    def make(
        max_size: int = 100, max_batch_size: int = 10, *, metrics: Metrics | None = None
    ) -> AnyBuffer:
        metrics = metrics if metrics is not None else Metrics()
        if request.param == "memory":
            return MultiConsumerEventBuffer(max_size, max_batch_size, metrics=metrics)
        spools.append(
            open_spool(tmp_path / f"{len(spools)}.spool", max_size, max_batch_size, metrics)
        )
        return spools[-1]

    yield make
    for spool in spools:
        spool.close_database()


def forget(buf: AnyBuffer, consumer: EventConsumer) -> None:
    """Closing a handle lets the consumer go in memory; a spool keeps its place until forgotten."""
    consumer.close()
    if isinstance(buf, SpoolEventBuffer):
        buf.forget_consumer(consumer.name)


def take(consumer: EventConsumer, k: int) -> EventBatch:
    """Up to ``k`` unread events now (an empty batch when there is none)."""
    try:
        return consumer.receive_nowait(max_items=k)
    except trio.WouldBlock:
        return EventBatch([], [], -1)


def add_range(buf: AnyBuffer, start: int, stop: int) -> None:
    for i in range(start, stop):
        buf.add_nowait(TASK_LIFECYCLE, blob(i))


# ---- Ray's tests (multi_consumer_event_buffer tests, ray-reference.md 4.2) -------------------------


async def test_add_and_consume_event_basic(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer(max_size=10, max_batch_size=5)
    c = buf.open_consumer("c", linger=0.1)
    buf.add_nowait(TASK_LIFECYCLE, blob(0))
    assert len(buf) == 1
    batch = await c.receive()
    assert batch.blobs == [blob(0)]
    assert batch.event_types == [TASK_LIFECYCLE]


def test_add_event_buffer_overflow(make_buffer: BufferFactory) -> None:
    buf = make_buffer(max_size=3)
    add_range(buf, 0, 4)
    assert len(buf) == 3


async def test_receive_multiple_events(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer(max_size=10, max_batch_size=3)
    c = buf.open_consumer("c", linger=0.1)
    add_range(buf, 0, 5)
    assert (await c.receive()).blobs == [blob(i) for i in range(3)]
    assert (await c.receive()).blobs == [blob(3), blob(4)]


async def test_a_closed_consumer_refuses_every_use(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer()
    add_range(buf, 0, 2)
    c = buf.open_consumer("c")
    batch = c.receive_nowait()
    c.close()
    c.close()  # idempotent
    message = r"^The consumer 'c' is closed\.$"
    with pytest.raises(trio.ClosedResourceError, match=message):
        await c.receive()
    with pytest.raises(trio.ClosedResourceError, match=message):
        c.receive_nowait()
    with pytest.raises(trio.ClosedResourceError, match=message):
        c.commit(batch)
    assert c.closed
    assert "c" not in buf.statistics().consumers


def test_open_consumer_duplicate(make_buffer: BufferFactory) -> None:
    buf = make_buffer()
    buf.open_consumer("c")
    with pytest.raises(
        ValueError, match=r"^A consumer named 'c' is already open on this buffer\.$"
    ):
        buf.open_consumer("c")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"linger": -1.0}, r"^linger must be a number of seconds >= 0, got -1\.0\.$"),
        ({"max_batch_size": 0}, r"^max_batch_size must be an int >= 1, got 0\.$"),
        ({"max_batch_bytes": 0}, r"^max_batch_bytes must be None or an int >= 1, got 0\.$"),
    ],
)
def test_open_consumer_validates(
    make_buffer: BufferFactory, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_buffer().open_consumer("c", **kwargs)  # type: ignore[arg-type]


async def test_multiple_consumers_independent_cursors(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_size=4, max_batch_size=2)
    one = buf.open_consumer("one", linger=0.1)
    two = buf.open_consumer("two", linger=0.1)
    add_range(buf, 0, 4)
    assert (await one.receive()).blobs == [blob(0), blob(1)]
    assert (await one.receive()).blobs == [blob(2), blob(3)]
    # "two" has read nothing, so nothing was freed: four more adds evict events 0-3.
    add_range(buf, 4, 8)
    assert (await one.receive()).blobs == [blob(4), blob(5)]
    assert (await two.receive()).blobs == [blob(4), blob(5)]
    stats = buf.statistics()
    assert stats.consumers["one"].evicted == 0
    assert stats.consumers["two"].evicted == 4


async def test_receive_blocks_until_event_available(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=1)
    c = buf.open_consumer("c", linger=0.1)
    got: list[EventBatch] = []

    async def consume() -> None:
        got.append(await c.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.sleep(5)
        assert got == []
        buf.add_nowait(TASK_LIFECYCLE, blob(0))
    assert got[0].blobs == [blob(0)]


async def test_concurrent_producer_consumer_random_sleeps(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    rng = random.Random(1)
    buf = make_buffer(max_size=1000, max_batch_size=7)
    c = buf.open_consumer("c", linger=0.05)
    received: list[bytes] = []

    async def produce() -> None:
        for i in range(300):
            buf.add_nowait(TASK_LIFECYCLE, blob(i))
            await trio.sleep(rng.random() * 0.01)

    async def consume() -> None:
        while len(received) < 300:
            received.extend((await c.receive()).blobs)
            await trio.sleep(rng.random() * 0.02)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(consume)
    assert received == [blob(i) for i in range(300)]


async def test_events_are_evicted_once_consumed_by_all_consumers(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_size=100, max_batch_size=2)
    one = buf.open_consumer("one", linger=0.1)
    two = buf.open_consumer("two", linger=0.1)
    add_range(buf, 0, 10)
    await one.receive()
    assert len(buf) == 10
    await two.receive()
    assert len(buf) == 8


# ---- eviction accounting, bulk adds, no consumers ---------------------------------------------


def test_eviction_is_charged_per_consumer_and_event_type(make_buffer: BufferFactory) -> None:
    metrics = Metrics()
    buf = make_buffer(3, 10, metrics=metrics)
    fast = buf.open_consumer("fast", linger=0.1)
    slow = buf.open_consumer("slow", linger=0.1)
    buf.add_nowait(1, blob(0))
    buf.add_nowait(2, blob(1))
    buf.add_nowait(99, blob(2))  # a type newer than our schema
    take(fast, 2)
    buf.add_many_nowait([2, 2, 2], [blob(3), blob(4), blob(5)])  # evicts 0, 1, 2

    def dropped(consumer: str, event_type: str) -> float:
        labels = {"consumer": consumer, "event_type": event_type}
        return metrics.value("ray_aggregator_agent_queue_dropped_events_total", labels)

    assert dropped("slow", "TASK_DEFINITION_EVENT") == 1
    assert dropped("slow", "TASK_LIFECYCLE_EVENT") == 1
    assert dropped("slow", "99") == 1
    assert dropped("fast", "99") == 1  # fast had read events 0 and 1 only
    assert dropped("fast", "TASK_LIFECYCLE_EVENT") == 0
    assert take(slow, 10).blobs == [blob(3), blob(4), blob(5)]
    stats = buf.statistics()
    assert (stats.evicted, stats.added) == (3, 6)
    assert stats.consumers["slow"].evicted == 3


def test_add_many_more_than_capacity_keeps_the_newest(make_buffer: BufferFactory) -> None:
    metrics = Metrics()
    buf = make_buffer(4, 10, metrics=metrics)
    c = buf.open_consumer("c", linger=0.1)
    add_range(buf, 0, 2)
    buf.add_many_nowait([TASK_LIFECYCLE] * 7, [blob(i) for i in range(2, 9)])
    batch = take(c, 10)
    assert batch.blobs == [blob(i) for i in range(5, 9)]
    # The spool numbers only the events it stores; in memory the evicted ones had numbers too.
    assert batch.first_sequence == (2 if buf.durable else 5)
    assert buf.statistics().consumers["c"].evicted == 5
    labels = {"consumer": "c", "event_type": "TASK_LIFECYCLE_EVENT"}
    assert metrics.value("ray_aggregator_agent_queue_dropped_events_total", labels) == 5


def test_add_many_checks_lengths(make_buffer: BufferFactory) -> None:
    buf = make_buffer()
    with pytest.raises(
        ValueError,
        match=r"^add_many_nowait needs one event type per blob, got 1 event types for 2 blobs\.$",
    ):
        buf.add_many_nowait([1], [b"a", b"b"])


def test_without_consumers_events_accumulate_and_a_late_consumer_sees_them(
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_size=5)
    add_range(buf, 0, 8)
    assert len(buf) == 5
    assert buf.free_slots() == 0
    late = buf.open_consumer("late", linger=0.1)
    assert late.statistics().unread == 5
    assert take(late, 2).blobs == [blob(3), blob(4)]
    assert len(buf) == 3  # read by every consumer, so freed
    assert buf.free_slots() == 2


def test_unregistering_the_slowest_consumer_frees_what_the_others_read(
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer()
    fast = buf.open_consumer("fast", linger=0.1)
    slow = buf.open_consumer("slow", linger=0.1)
    add_range(buf, 0, 6)
    take(fast, 4)
    assert len(buf) == 6
    forget(buf, slow)
    assert len(buf) == 2


def test_gauges_are_computed_when_scraped(make_buffer: BufferFactory) -> None:
    metrics = Metrics()
    buf = make_buffer(10, 5, metrics=metrics)
    c = buf.open_consumer("c", linger=0.1)
    add_range(buf, 0, 4)
    take(c, 1)
    assert metrics.value("trio_events_buffer_events") == 3
    assert metrics.value("trio_events_buffer_capacity") == 10
    assert metrics.value("trio_events_buffer_unread_events", {"consumer": "c"}) == 3
    c.close()
    assert metrics.value("trio_events_buffer_unread_events", {"consumer": "c"}) == 0


def test_statistics_is_frozen(make_buffer: BufferFactory) -> None:
    stats = make_buffer().statistics()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.buffered = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_size": 0}, ValueError, r"^max_size must be >= 1, got 0\.$"),
        ({"max_batch_size": -1}, ValueError, r"^max_batch_size must be >= 1, got -1\.$"),
        ({"max_size": 1.5}, TypeError, r"^max_size must be an int, not float\.$"),
    ],
)
def test_constructor_validates(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        MultiConsumerEventBuffer(**kwargs, metrics=Metrics())  # type: ignore[arg-type]


# ---- receive: linger in virtual time, checkpoints, cancellation, close -----------------


async def test_linger_returns_a_partial_batch_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=10)
    c = buf.open_consumer("c", linger=5.0)
    buf.add_nowait(TASK_LIFECYCLE, blob(0))
    start = trio.current_time()
    batch = await c.receive()
    assert batch.blobs == [blob(0)]
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_linger_deadline_starts_at_the_first_event(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=10)
    c = buf.open_consumer("c", linger=5.0)
    start = trio.current_time()

    async def produce() -> None:
        await trio.sleep(3)
        add_range(buf, 0, 1)
        await trio.sleep(1)
        add_range(buf, 1, 3)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        batch = await c.receive()
    assert batch.blobs == [blob(0), blob(1), blob(2)]
    assert trio.current_time() - start == pytest.approx(8.0)


async def test_a_full_batch_returns_without_waiting_for_the_timeout(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=3)
    c = buf.open_consumer("c", linger=100.0)
    start = trio.current_time()

    async def produce() -> None:
        add_range(buf, 0, 1)
        await trio.sleep(2)
        add_range(buf, 1, 5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        batch = await c.receive()
    assert batch.blobs == [blob(0), blob(1), blob(2)]
    assert trio.current_time() - start == pytest.approx(2.0)
    assert c.statistics().unread == 2


@pytest.mark.parametrize("linger", [0.0, 1.0])
async def test_receive_is_a_checkpoint_even_when_events_are_ready(
    linger: float, autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer(max_batch_size=2)
    c = buf.open_consumer("c", linger=linger)
    add_range(buf, 0, 2 if linger else 1)
    with trio.testing.assert_checkpoints():
        await c.receive()


async def test_cancelled_receive_does_not_take_events(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer()
    c = buf.open_consumer("c")
    add_range(buf, 0, 3)
    with trio.CancelScope() as scope:
        scope.cancel()
        await c.receive()
    assert c.statistics().unread == 3


async def test_cancel_while_waiting_for_the_first_event_loses_nothing(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer()
    c = buf.open_consumer("c", linger=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.receive)
        await trio.testing.wait_all_tasks_blocked()
        add_range(buf, 0, 2)  # wakes the waiter ...
        nursery.cancel_scope.cancel()  # ... which is cancelled before it runs again
    assert c.statistics().unread == 2
    assert c.receive_nowait().blobs == [blob(0), blob(1)]


async def test_cancel_during_the_linger_loses_nothing(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=10)
    c = buf.open_consumer("c", linger=10.0)
    add_range(buf, 0, 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.receive)
        await trio.sleep(1)  # the waiter has the first event in sight and lingers
        add_range(buf, 1, 3)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert c.statistics().unread == 3
    assert c.receive_nowait().blobs == [blob(0), blob(1), blob(2)]


async def test_random_cancellations_never_lose_or_duplicate(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    rng = random.Random(7)
    buf = make_buffer(max_size=10_000, max_batch_size=5)
    c = buf.open_consumer("c", linger=0.02)
    received: list[bytes] = []

    async def produce() -> None:
        for i in range(500):
            buf.add_nowait(TASK_LIFECYCLE, blob(i))
            await trio.sleep(rng.random() * 0.01)
        buf.close()

    async def consume() -> None:
        while True:
            with trio.move_on_after(rng.random() * 0.03):
                try:
                    received.extend((await c.receive()).blobs)
                except trio.EndOfChannel:
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        nursery.start_soon(consume)
    assert received == [blob(i) for i in range(500)]


async def test_close_lets_consumers_drain_then_ends(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer(max_batch_size=10)
    c = buf.open_consumer("c", linger=5.0)
    add_range(buf, 0, 2)
    buf.close()
    start = trio.current_time()
    assert (await c.receive()).blobs == [blob(0), blob(1)]
    assert trio.current_time() == start  # no linger once closed
    with pytest.raises(trio.EndOfChannel):
        await c.receive()
    with pytest.raises(trio.ClosedResourceError, match="accepts no more events"):
        buf.add_nowait(TASK_LIFECYCLE, blob(2))
    with pytest.raises(trio.ClosedResourceError):
        buf.add_many_nowait([TASK_LIFECYCLE], [blob(2)])


async def test_close_wakes_blocked_consumers(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer()
    c = buf.open_consumer("c", linger=1.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await c.receive()

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            assert buf.statistics().tasks_waiting == 1
            await buf.aclose()


async def test_closing_a_consumer_wakes_its_waiters_with_closed_resource_error(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer()
    c = buf.open_consumer("c", linger=1.0)
    add_range(buf, 0, 1)  # one waiter lingers for a full batch, the other waits for events
    other = buf.open_consumer("other")
    other.receive_nowait()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def consume(consumer: EventConsumer) -> None:
                with pytest.raises(trio.ClosedResourceError, match="is closed"):
                    await consumer.receive()

            nursery.start_soon(consume, c)
            nursery.start_soon(consume, other)
            await trio.testing.wait_all_tasks_blocked()
            assert buf.statistics().tasks_waiting == 2
            assert c.statistics().tasks_waiting == 1
            c.close()
            await other.aclose()
    assert buf.statistics().consumers == {}


async def test_async_iteration_ends_when_the_buffer_is_closed_and_read(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer(max_batch_size=2)
    add_range(buf, 0, 5)
    buf.close()
    with buf.open_consumer("c") as c:
        assert [b.blobs async for b in c] == [[blob(0), blob(1)], [blob(2), blob(3)], [blob(4)]]
        with pytest.raises(trio.EndOfChannel):
            c.receive_nowait()
    assert c.closed


async def test_every_async_method_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer()
    add_range(buf, 0, 3)
    c = buf.open_consumer("c")
    with trio.testing.assert_checkpoints():
        await c.receive()
    with trio.testing.assert_checkpoints():
        await c.aclose()
    with trio.testing.assert_checkpoints():
        await buf.aclose()


def test_batches_are_bounded_by_bytes_and_a_big_event_goes_alone(
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=10)
    sizes = [30, 30, 30, 200, 10, 10, 50]
    buf.add_many_nowait([TASK_LIFECYCLE] * len(sizes), [b"x" * n for n in sizes])
    c = buf.open_consumer("c", max_batch_bytes=70)
    got = []
    while True:
        try:
            got.append([len(b) for b in c.receive_nowait().blobs])
        except trio.WouldBlock:
            break
    assert got == [[30, 30], [30], [200], [10, 10, 50]]


async def test_commits_advance_the_committed_position_over_a_contiguous_prefix(
    autojump_clock: trio.testing.MockClock, make_buffer: BufferFactory
) -> None:
    buf = make_buffer(max_batch_size=2)
    add_range(buf, 0, 6)
    c = buf.open_consumer("c")
    first, second, third = (c.receive_nowait() for _ in range(3))
    start = first.first_sequence
    assert (c.statistics().committed, c.statistics().uncommitted) == (start, 6)
    c.commit(second)  # out of order: the position waits for the first batch
    assert (c.statistics().committed, c.statistics().uncommitted) == (start, 4)
    c.commit(first)
    assert c.statistics().committed == third.first_sequence
    c.commit(third)
    c.commit(third)  # a second commit of the same batch changes nothing
    assert (c.statistics().committed, c.statistics().uncommitted) == (start + 6, 0)


async def test_two_waiters_of_one_consumer_split_events_without_duplicates(
    autojump_clock: trio.testing.MockClock,
    make_buffer: BufferFactory,
) -> None:
    buf = make_buffer(max_batch_size=2)
    c = buf.open_consumer("c")
    got: list[bytes] = []

    async def consume() -> None:
        got.extend((await c.receive()).blobs)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            add_range(buf, 0, 1)
            await trio.testing.wait_all_tasks_blocked()
            add_range(buf, 1, 2)
    assert sorted(got) == [blob(0), blob(1)]


# ---- state machine: the ring against a port of Ray's deque-and-cursors algorithm ----------------


class RayModel:
    """Ray's MultiConsumerEventBuffer (ray-reference.md 3.3) written plainly, as the oracle."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.queue: deque[tuple[int, bytes]] = deque()
        self.cursors: dict[str, int] = {}
        self.dropped: Counter[tuple[str, int]] = Counter()

    def add(self, event_type: int, data: bytes) -> None:
        if len(self.queue) == self.max_size:
            old_type, _ = self.queue.popleft()
            for name, cursor in self.cursors.items():
                if cursor == 0:
                    self.dropped[(name, old_type)] += 1
                else:
                    self.cursors[name] = cursor - 1
        self.queue.append((event_type, data))

    def take(self, name: str, k: int) -> list[tuple[int, bytes]]:
        cursor = self.cursors[name]
        items = list(self.queue)[cursor : cursor + k]
        self.cursors[name] = cursor + len(items)
        self.evict_consumed()
        return items

    def evict_consumed(self) -> None:
        if self.cursors:
            low = min(self.cursors.values())
            for _ in range(low):
                self.queue.popleft()
            self.cursors = {name: c - low for name, c in self.cursors.items()}


NAMES = st.sampled_from(["a", "b", "c"])
EVENT_TYPES = st.sampled_from([1, 2, 4, 15, 1000])  # 1000: a type newer than our schema


class BufferMachine(RuleBasedStateMachine):
    MAX_SIZE = 6

    def __init__(self) -> None:
        super().__init__()
        self.metrics = Metrics()
        self.buf = self.new_buffer()
        self.model = RayModel(self.MAX_SIZE)
        self.next_id = 0
        self.added_since: dict[str, int] = {}
        self.consumed: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.handles: dict[str, EventConsumer] = {}

    def new_buffer(self) -> AnyBuffer:
        return MultiConsumerEventBuffer(self.MAX_SIZE, 4, metrics=self.metrics)

    def _add(self, event_type: int) -> tuple[int, bytes]:
        data = blob(self.next_id)
        self.next_id += 1
        self.model.add(event_type, data)
        for name in self.added_since:
            self.added_since[name] += 1
        return event_type, data

    @rule(event_type=EVENT_TYPES)
    def add(self, event_type: int) -> None:
        self.buf.add_nowait(*self._add(event_type))

    @rule(event_types=st.lists(EVENT_TYPES, max_size=2 * MAX_SIZE + 1))
    def add_many(self, event_types: list[int]) -> None:
        events = [self._add(t) for t in event_types]
        self.buf.add_many_nowait([t for t, _ in events], [d for _, d in events])

    @rule(name=NAMES)
    def open(self, name: str) -> None:
        if name in self.model.cursors:
            with pytest.raises(ValueError, match="already open"):
                self.buf.open_consumer(name)
            return
        self.handles[name] = self.buf.open_consumer(name, max_batch_size=8)
        self.model.cursors[name] = 0
        self.added_since[name] = len(self.model.queue)
        self.consumed[name] = 0

    @precondition(lambda self: self.model.cursors)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.model.cursors)))
        forget(self.buf, self.handles.pop(name))
        del self.model.cursors[name], self.added_since[name], self.consumed[name]
        self.last_seen.pop(name, None)  # a new registration starts again at the oldest event
        self.model.evict_consumed()

    @precondition(lambda self: self.model.cursors)
    @rule(data=st.data(), k=st.integers(1, 8))
    def take(self, data: st.DataObject, k: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.model.cursors)))
        consumer = self.handles[name]
        if consumer.statistics().unread == 0:
            with pytest.raises(trio.WouldBlock):
                consumer.receive_nowait(max_items=k)
        batch = take(consumer, k)
        if batch:
            consumer.commit(batch)  # settled at once: a spool then frees what it can
        expected = self.model.take(name, k)
        assert list(batch) == expected
        self.consumed[name] += len(batch)
        ids = [int(d.split(b"-")[1]) for d in batch.blobs]
        assert ids == sorted(ids)  # FIFO per consumer ...
        if ids:
            assert ids[0] > self.last_seen.get(name, -1)  # ... across batches too
            self.last_seen[name] = ids[-1]

    @invariant()
    def matches_ray(self) -> None:
        assert len(self.buf) == len(self.model.queue) <= self.MAX_SIZE
        stats = self.buf.statistics()
        assert set(stats.consumers) == set(self.model.cursors)
        for name, consumer in stats.consumers.items():
            assert consumer.unread == len(self.model.queue) - self.model.cursors[name]
            assert consumer.consumed == self.consumed[name]
            assert self.added_since[name] == consumer.consumed + consumer.evicted + consumer.unread
        for (name, event_type), count in self.model.dropped.items():
            label = pb.EVENT_TYPE_NAMES.get(event_type, str(event_type))
            labels = {"consumer": name, "event_type": label}
            value = self.metrics.value("ray_aggregator_agent_queue_dropped_events_total", labels)
            assert value == count


TestBufferMachine = BufferMachine.TestCase
TestBufferMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
