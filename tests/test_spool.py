"""SpoolEventBuffer: what only a durable buffer does (persistence, settling, redelivery, bytes),
two state machines, the agent's overflow policies on a spool, and a restart of the whole service.

The behaviour it shares with the in-memory buffer is tested by tests/test_buffer.py, whose tests
run on both implementations.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.test_buffer import EVENT_TYPES, NAMES, BufferMachine, blob, take
from trio_events import pb
from trio_events._bridge import asyncio_loop
from trio_events._http_server import Request, Response, serve_http
from trio_events._metrics import Metrics
from trio_events.agent._buffer import EventBatch, EventConsumer
from trio_events.agent._http_sink import HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig, AggregatorAgent
from trio_events.agent._publisher import PublisherConfig, RayEventPublisher
from trio_events.agent._service import AgentService, Destination, ServiceConfig
from trio_events.agent._sink import Outcome, PublishOutcome
from trio_events.agent._spool import SpoolConfig, SpoolEventBuffer
from trio_events.agent._spool_db import SCHEMA_VERSION
from trio_events.producer._client import EventAggregatorClient

TASK = 2
DEADLINE = 30  # seconds, for the tests with sockets


def open_spool(
    path: Path, max_events: int = 100, max_bytes: int | None = None, **kwargs: Any
) -> SpoolEventBuffer:
    metrics = kwargs.pop("metrics", None) or Metrics()
    batch = kwargs.pop("max_batch_size", 10)
    config = SpoolConfig(str(path), max_events=max_events, max_bytes=max_bytes, **kwargs)
    return SpoolEventBuffer(config, batch, metrics=metrics)


def ids(batch: EventBatch) -> list[int]:
    return [int(b.split(b"-")[1]) for b in batch.blobs]


def add(spool: SpoolEventBuffer, start: int, stop: int, event_type: int = TASK) -> None:
    spool.add_many_nowait([event_type] * (stop - start), [blob(i) for i in range(start, stop)])


def dropped(metrics: Metrics, consumer: str, event_type: str = "TASK_LIFECYCLE_EVENT") -> float:
    labels = {"consumer": consumer, "event_type": event_type}
    return metrics.value("ray_aggregator_agent_queue_dropped_events_total", labels)


# ---- persistence ------------------------------------------------------------------------------


def test_a_restart_resumes_at_the_settled_cursor_and_redelivers_the_batch_in_flight(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.spool"
    with open_spool(path) as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        add(spool, 0, 10)
        delivered = take(pub, 4)
        pub.commit(delivered)
        in_flight = take(pub, 3)  # taken, never settled: the crash comes first
        assert ids(in_flight) == [4, 5, 6]
    with open_spool(path) as spool:
        assert spool.resumed_events == 6
        assert spool.known_consumers() == ("pub",)
        pub = spool.open_consumer("pub", max_batch_size=1000)
        again = take(pub, 100)
        assert ids(again) == list(range(4, 10))  # the in-flight batch again, the settled not
        assert again.first_sequence == 4
        add(spool, 10, 12)  # numbering goes on where it was
        assert take(pub, 100).first_sequence == 10


def test_settled_events_leave_the_file(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.spool") as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        for i in range(5):
            add(spool, 10 * i, 10 * i + 10)  # one chunk per request
        batch = take(pub, 25)
        assert spool.storage_statistics().events_on_disk == 50  # taken is not settled
        pub.commit(batch)
        stats = spool.storage_statistics()
        assert stats.events_on_disk == 30  # two whole chunks deleted, the third is still needed
        assert stats.settled == {"pub": 25}
        rows = sqlite3.connect(spool.path)
        try:
            assert rows.execute("SELECT count(*) FROM chunks").fetchone()[0] == 3
        finally:
            rows.close()


def test_unregister_keeps_the_place_and_forget_lets_it_go(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.spool", max_events=5) as spool:
        con_a = spool.open_consumer("a", max_batch_size=1000)
        con_b = spool.open_consumer("b", max_batch_size=1000)
        add(spool, 0, 4)
        con_a.commit(take(con_a, 4))
        taken = take(con_b, 2)
        con_b.close()  # a publisher stopping with a batch in flight
        assert spool.statistics().consumers.keys() == {"a"}
        with pytest.raises(trio.ClosedResourceError):
            take(con_b, 1)
        assert len(spool) == 2  # b still holds its place
        add(spool, 4, 8)  # over the bound: b, not registered, is charged like any consumer
        assert dropped(spool._metrics, "b") == 1
        old_b, con_b = con_b, spool.open_consumer("b", max_batch_size=1000)  # back: from the
        # first event it had not settled; the old handle stays closed
        assert old_b.closed
        # Event 2 was charged to b as evicted, but its chunk is kept for b's batch in flight, so
        # it comes back too: counted twice rather than lost (docs/spool.md).
        assert ids(take(con_b, 10)) == list(range(8))
        con_b.commit(taken)  # stale: taken before it was given back its place
        spool.forget_consumer("b")
        assert spool.known_consumers() == ("a",)
        assert spool.storage_statistics().settled == {"a": 4}


def test_without_consumers_a_restart_does_not_bring_back_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "s.spool"
    with open_spool(path) as spool:
        con_a = spool.open_consumer("a", max_batch_size=1000)
        add(spool, 0, 10)
        con_a.commit(take(con_a, 4))
        spool.forget_consumer("a")
        assert len(spool) == 6
    with open_spool(path) as spool:
        assert len(spool) == 6
        late = spool.open_consumer("late", max_batch_size=1000)
        assert ids(take(late, 100)) == list(range(4, 10))


def test_the_byte_bound_evicts_the_oldest_and_charges_each_consumer(tmp_path: Path) -> None:
    metrics = Metrics()
    # blob(i) is 7 bytes for i < 10: room for 4 of them.
    with open_spool(tmp_path / "s.spool", max_bytes=30, metrics=metrics) as spool:
        fast = spool.open_consumer("fast", max_batch_size=1000)
        slow = spool.open_consumer("slow", max_batch_size=1000)
        add(spool, 0, 3)
        fast.commit(take(fast, 3))
        assert spool.free_bytes() == 30 - 21
        add(spool, 3, 6)  # 42 bytes: the two oldest go
        assert len(spool) == 4
        assert (dropped(metrics, "fast"), dropped(metrics, "slow")) == (0, 2)
        assert ids(take(slow, 10)) == [2, 3, 4, 5]
        spool.add_nowait(TASK, b"x" * 100)  # bigger than the bound: evicted at once
        assert len(spool) == 0
        assert (dropped(metrics, "fast"), dropped(metrics, "slow")) == (4, 1 + 2)
        stats = spool.statistics()
        assert (stats.added, stats.evicted) == (7, 2 + 4)


def test_the_file_holds_the_bound_plus_the_batches_in_flight(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.spool", max_events=20) as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        for i in range(50):
            add(spool, 10 * i, 10 * i + 10)
            batch = take(pub, 7)
            assert spool.storage_statistics().events_on_disk <= 20 + 10 + 7
            pub.commit(batch)
            assert len(spool) <= 20


# ---- failures and bad files -------------------------------------------------------------------


def persisted_cursors(spool: SpoolEventBuffer) -> dict[str, int]:
    conn = sqlite3.connect(spool.path)
    try:
        return dict(conn.execute("SELECT consumer, next_seq FROM cursors").fetchall())
    finally:
        conn.close()


def test_a_failed_write_accepts_nothing_and_the_next_one_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    with open_spool(tmp_path / "s.spool", max_events=4, metrics=metrics) as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        add(spool, 0, 4)
        batch = take(pub, 2)
        before = spool.statistics()
        spool._file._conn.execute("PRAGMA query_only=1")  # every write now fails
        with pytest.raises(trio.BrokenResourceError, match=r"could not be written \(.*\)\.$"):
            add(spool, 4, 8)
        assert spool.statistics() == before
        pub.commit(batch)  # logged, and written with the next write
        assert "A restart may deliver some events again." in caplog.text
        assert metrics.value("trio_events_spool_cursor_write_failures_total") == 1
        assert persisted_cursors(spool) == {"pub": 0}
        spool._file._conn.execute("PRAGMA query_only=0")
        add(spool, 4, 6)
        assert persisted_cursors(spool) == {"pub": 2}
        assert ids(take(pub, 10)) == [2, 3, 4, 5]


def test_opening_refuses_what_is_not_a_spool(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE events (x)")
    conn.commit()
    conn.close()
    with pytest.raises(
        ValueError,
        match=r"^'.*other\.db' is an SQLite database but not a trio-events spool; give --spool "
        r"a path of its own\.$",
    ):
        open_spool(other)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match=r"^The spool '.*junk' cannot be used \(.*\)\.$"):
        open_spool(junk)
    newer = tmp_path / "newer.spool"
    open_spool(newer).close_database()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match=r"newer than this trio-events understands"):
        open_spool(newer)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_events": 0}, r"^SpoolConfig\.max_events must be >= 1, got 0\.$"),
        ({"max_bytes": 0}, r"^SpoolConfig\.max_bytes must be None \(no byte bound\) or >= 1"),
        ({"synchronous": "off"}, r"^SpoolConfig\.synchronous must be 'normal' or 'full'"),
        ({"path": ""}, r"^SpoolConfig\.path must name a file\.$"),
    ],
)
def test_config_errors_are_sentences(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpoolConfig(**{"path": "x.spool", **kwargs})


def test_operations_after_close_database(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.spool")
    pub = spool.open_consumer("pub", max_batch_size=1000)
    add(spool, 0, 2)
    spool.close_database()
    spool.close_database()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        add(spool, 2, 3)
    with pytest.raises(trio.ClosedResourceError, match=r"^The spool's database is closed\.$"):
        take(pub, 1)


async def test_the_checkpointer_runs_in_a_thread_and_restores_autocheckpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_events.agent.spool_db")
    with open_spool(tmp_path / "s.spool", 1000, checkpoint_interval=0.01) as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        with trio.fail_after(DEADLINE):  # real time: the checkpoint runs in a worker thread
            async with trio.open_nursery() as nursery:
                await nursery.start(spool.run)
                assert spool._file._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
                add(spool, 0, 500)
                while not re.search(r"checkpoint: (\d+) of \1 WAL frames", caplog.text):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert spool._file._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        assert ids(take(pub, 3)) == [0, 1, 2]


# ---- the publisher settles batches ------------------------------------------------------------


@attrs.define
class FakeSink:
    """A PublishClient that fails the first ``failures`` attempts, then succeeds."""

    failures: int = 0
    bodies: list[bytes] = attrs.Factory(list)
    closed: bool = False

    async def publish(self, body: bytes) -> PublishOutcome:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            return PublishOutcome(Outcome.RETRYABLE, "http_503", status=503)
        self.bodies.append(body)
        return PublishOutcome(Outcome.SUCCESS, "http_200", status=200)

    async def aclose(self) -> None:
        self.closed = True


def ray_events(start: int, stop: int) -> tuple[list[int], list[bytes]]:
    events = [
        pb.RayEvent(event_id=b"id-%d" % i, event_type=pb.RayEvent.TASK_LIFECYCLE_EVENT)
        for i in range(start, stop)
    ]
    return [e.event_type for e in events], [e.SerializeToString() for e in events]


async def test_the_publisher_commits_delivered_batches_and_retains_the_rest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    metrics = Metrics()
    config = PublisherConfig(name="pub", exposable_event_types=None, jitter=0.0)
    with open_spool(tmp_path / "s.spool", metrics=metrics, max_batch_size=5) as spool:
        sink = FakeSink()
        publisher = RayEventPublisher(config, sink, spool, metrics=metrics)
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            spool.add_many_nowait(*ray_events(0, 5))
            while not sink.bodies:  # noqa: ASYNC110
                await trio.sleep(0.01)
            sink.failures = 10**6  # the sink goes down
            spool.add_many_nowait(*ray_events(5, 12))
            await trio.sleep(1)
            stats = await publisher.drain(trio.current_time() + 0.5)
        assert (stats.delivered, stats.abandoned, stats.retained) == (5, 0, 7)
        assert "retained=7" in stats.summary()
        assert spool.storage_statistics().settled == {"pub": 5}
        assert (
            metrics.value(
                "trio_events_publisher_dropped_events_total",
                {"consumer": "pub", "reason": "shutdown_abandoned"},
            )
            == 0
        )


# ---- the agent's overflow policies on a spool -------------------------------------------------


def add_events_request(start: int, stop: int, size: int = 0) -> bytes:
    events = [
        pb.RayEvent(event_id=b"id-%d" % i, message="x" * size, event_type=TASK)  # type: ignore[arg-type]
        for i in range(start, stop)
    ]
    return pb.AddEventsRequest(events_data=pb.RayEventsData(events=events)).SerializeToString()


def test_reject_answers_resource_exhausted_by_events_and_by_bytes(tmp_path: Path) -> None:
    metrics = Metrics()
    with open_spool(tmp_path / "s.spool", max_events=10, max_bytes=2000, metrics=metrics) as spool:
        agent = AggregatorAgent(AgentConfig(on_full="reject"), metrics=metrics, buffer=spool)
        pub = spool.open_consumer("pub", max_batch_size=1000)
        agent._add_events(add_events_request(0, 8))
        with pytest.raises(GRPCError) as caught:
            agent._add_events(add_events_request(8, 11))
        assert caught.value.status is Status.RESOURCE_EXHAUSTED
        assert caught.value.message == (
            "The aggregator's buffer has room for 2 more events, not 3; retry later."
        )
        pub.commit(take(pub, 8))
        with pytest.raises(GRPCError) as caught:
            agent._add_events(add_events_request(8, 10, size=1500))
        assert caught.value.status is Status.RESOURCE_EXHAUSTED
        assert caught.value.message is not None
        assert caught.value.message.startswith("The aggregator's buffer has room for 2000 more ")
        assert metrics.value("trio_events_agent_rejected_events_total") == 5
        assert len(spool) == 0  # nothing of a rejected request was stored


def test_drop_oldest_on_a_spool_evicts_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    with open_spool(tmp_path / "s.spool", max_events=10, metrics=metrics) as spool:
        agent = AggregatorAgent(AgentConfig(), metrics=metrics, buffer=spool)
        spool.open_consumer("pub", max_batch_size=1000)
        agent._add_events(add_events_request(0, 8))
        agent._add_events(add_events_request(8, 14))
        assert len(spool) == 10
        assert dropped(metrics, "pub") == 4
        assert metrics.value("ray_aggregator_agent_events_received_total") == 14


def test_a_spool_that_cannot_write_answers_unavailable(tmp_path: Path) -> None:
    metrics = Metrics()
    with open_spool(tmp_path / "s.spool", metrics=metrics) as spool:
        agent = AggregatorAgent(AgentConfig(), metrics=metrics, buffer=spool)
        spool._file._conn.execute("PRAGMA query_only=1")
        with pytest.raises(GRPCError) as caught:
            agent._add_events(add_events_request(0, 3))
        assert caught.value.status is Status.UNAVAILABLE
        assert metrics.value("ray_aggregator_agent_events_buffer_add_failures_total") == 3
        spool._file._conn.execute("PRAGMA query_only=0")


# ---- state machines ---------------------------------------------------------------------------


class SpoolBufferMachine(BufferMachine):
    """test_buffer's machine (against a port of Ray's algorithm) on a spool, plus restarts.

    Batches are settled as soon as they are taken, so a restart changes nothing observable.
    """

    def new_buffer(self) -> SpoolEventBuffer:
        self.directory = tempfile.mkdtemp(prefix="spool-machine-")
        return self.reopened()

    def reopened(self) -> SpoolEventBuffer:
        config = SpoolConfig(f"{self.directory}/m.spool", max_events=self.MAX_SIZE, max_bytes=None)
        return SpoolEventBuffer(config, 4, metrics=self.metrics)

    @rule()
    def restart(self) -> None:
        assert isinstance(self.buf, SpoolEventBuffer)
        self.buf.close_database()
        self.buf = self.reopened()
        for name in self.model.cursors:
            self.handles[name] = self.buf.open_consumer(name, max_batch_size=8)
            self.consumed[name] = 0
            self.added_since[name] = len(self.model.queue) - self.model.cursors[name]

    def teardown(self) -> None:
        assert isinstance(self.buf, SpoolEventBuffer)
        self.buf.close_database()
        shutil.rmtree(self.directory)


TestSpoolBufferMachine = SpoolBufferMachine.TestCase
TestSpoolBufferMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


@attrs.define
class _Tracked:
    live: bool = True
    outstanding: dict[int, list[int]] = attrs.Factory(dict)  # first_sequence -> ids
    acked: set[int] = attrs.Factory(set)  # ids of settled batches
    last_end: int = -1  # FIFO within one registration
    charges_base: float = 0.0  # evictions charged before it was (re)created


class SpoolRedeliveryMachine(RuleBasedStateMachine):
    """Batches settled late, out of order or never; consumers leaving and coming back; restarts.

    Invariants: a consumer's persisted place is never past a batch it has not settled; every
    event since it was created is settled, still ahead of its place, or counted as evicted; every
    batch holds the events stored under those sequence numbers; the bound holds after each add.
    """

    MAX_SIZE = 8

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="spool-redelivery-")
        self.metrics = Metrics()
        self.handles: dict[str, EventConsumer] = {}
        self.buf = self.reopened()
        self.next_id = 0
        self.stored: dict[int, int] = {}  # sequence number -> id
        self.skipped = 0  # incoming events evicted at once (charged, never numbered)
        self.tracked: dict[str, _Tracked] = {}

    def reopened(self) -> SpoolEventBuffer:
        config = SpoolConfig(f"{self.directory}/r.spool", max_events=self.MAX_SIZE, max_bytes=None)
        return SpoolEventBuffer(config, 3, metrics=self.metrics)

    def charges(self, name: str) -> float:
        return sum(
            self.metrics.value(
                "ray_aggregator_agent_queue_dropped_events_total",
                {"consumer": name, "event_type": pb.EVENT_TYPE_NAMES.get(t, str(t))},
            )
            for t in (1, 2, 4, 15, 1000)
        )

    @rule(event_types=st.lists(EVENT_TYPES, min_size=1, max_size=2 * MAX_SIZE + 1))
    def add_many(self, event_types: list[int]) -> None:
        first = self.buf.storage_statistics().next_sequence
        new = list(range(self.next_id, self.next_id + len(event_types)))
        self.next_id += len(new)
        self.buf.add_many_nowait(event_types, [blob(i) for i in new])
        stored = self.buf.storage_statistics().next_sequence - first
        for offset, i in enumerate(new[len(new) - stored :]):
            self.stored[first + offset] = i
        self.skipped += len(new) - stored
        for t in self.tracked.values():
            t.charges_base += len(new) - stored  # charged but never numbered: not a gap
        assert len(self.buf) <= self.MAX_SIZE

    @rule(name=NAMES)
    def register(self, name: str) -> None:
        t = self.tracked.get(name)
        if t is not None and t.live:
            with pytest.raises(ValueError, match="already open"):
                self.buf.open_consumer(name)
            return
        self.handles[name] = self.buf.open_consumer(name, max_batch_size=8)
        if t is None:
            start = self.buf.storage_statistics().settled[name]
            t = self.tracked[name] = _Tracked(charges_base=self.charges(name))
            t.acked.update(range(start))  # what came before it is none of its business
        t.live, t.last_end = True, -1
        t.outstanding.clear()  # handed out again from its settled place

    @precondition(lambda self: any(t.live for t in self.tracked.values()))
    @rule(data=st.data(), k=st.integers(1, 5))
    def take(self, data: st.DataObject, k: int) -> None:
        name = data.draw(st.sampled_from(sorted(n for n, t in self.tracked.items() if t.live)))
        batch = take(self.handles[name], k)
        t = self.tracked[name]
        if batch:
            seqs = range(batch.first_sequence, batch.first_sequence + len(batch))
            assert ids(batch) == [self.stored[s] for s in seqs]
            assert batch.first_sequence >= t.last_end
            t.last_end = seqs.stop
            t.outstanding[batch.first_sequence] = list(seqs)

    # A closed handle refuses commits (ClosedResourceError), so only open ones settle.
    @precondition(lambda self: any(t.outstanding and t.live for t in self.tracked.values()))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        name = data.draw(
            st.sampled_from(sorted(n for n, t in self.tracked.items() if t.outstanding and t.live))
        )
        t = self.tracked[name]
        first = data.draw(st.sampled_from(sorted(t.outstanding)))
        seqs = t.outstanding.pop(first)
        self.handles[name].commit(EventBatch([0] * len(seqs), [b""] * len(seqs), first))
        t.acked.update(seqs)

    @rule(name=NAMES)
    def unregister(self, name: str) -> None:
        t = self.tracked.get(name)
        if t is None or not t.live:
            return
        self.handles[name].close()
        t.live = False

    @rule(name=NAMES)
    def forget(self, name: str) -> None:
        if name not in self.tracked:
            with pytest.raises(KeyError):
                self.buf.forget_consumer(name)
            return
        self.buf.forget_consumer(name)
        del self.tracked[name]
        handle = self.handles.get(name)
        assert handle is None or handle.closed

    @rule()
    def restart(self) -> None:
        before = self.buf.storage_statistics()
        self.buf.close_database()
        self.handles.clear()  # handles on the closed file
        self.buf = self.reopened()
        after = self.buf.storage_statistics()
        assert after.settled == before.settled
        assert after.next_sequence == before.next_sequence
        for t in self.tracked.values():
            t.live = False
            t.outstanding.clear()  # gone with the process; redelivered after registering

    @invariant()
    def nothing_is_lost_without_being_counted(self) -> None:
        stats = self.buf.storage_statistics()
        assert set(stats.settled) == set(self.tracked)
        for name, t in self.tracked.items():
            place = stats.settled[name]
            assert all(place <= first for first in t.outstanding)
            missing = [s for s in range(place) if s not in t.acked]
            assert len(missing) <= self.charges(name) - t.charges_base

    def teardown(self) -> None:
        self.buf.close_database()
        shutil.rmtree(self.directory)


TestSpoolRedeliveryMachine = SpoolRedeliveryMachine.TestCase
TestSpoolRedeliveryMachine.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)


# ---- the service: stopped with events unsent, restarted on the same spool ---------------------


class Sink:
    """An HTTP sink that records event ids; ``hang`` makes it never answer (a batch in flight)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.hang = False
        self.posts = 0

    async def handle(self, request: Request) -> Response:
        import orjson

        self.posts += 1
        if self.hang:
            await trio.sleep_forever()
        self.ids.extend(e["eventId"] for e in orjson.loads(request.body))
        return Response.text(200, "ok")


def service_config(sink_port: int, spool: Path, grace_period: float) -> ServiceConfig:
    return ServiceConfig(
        agent=AgentConfig(port=0, max_batch_size=50),
        destinations=(
            Destination(
                HttpPublisherConfig(url=f"http://127.0.0.1:{sink_port}/", timeout=5.0),
                PublisherConfig(name="http_service", exposable_event_types=None, linger=0.01),
            ),
        ),
        grace_period=grace_period,
        spool=SpoolConfig(str(spool), max_events=10_000),
    )


async def send(port: int, start: int, stop: int) -> None:
    request = pb.AddEventsRequest.FromString(add_events_request(start, stop))
    async with asyncio_loop(), EventAggregatorClient(f"127.0.0.1:{port}") as client:
        await client.add_events(request, timeout=10)


def event_id(i: int) -> str:
    return base64.b64encode(b"id-%d" % i).decode()


async def test_a_restarted_agent_delivers_every_event_the_stopped_one_had_accepted(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "agent.spool"
    sink = Sink()
    with trio.fail_after(DEADLINE):
        sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
        first = AgentService(service_config(sink_port, spool, grace_period=0.5))
        addresses = await nursery.start(first.run)
        assert addresses.spool_resumed == 0
        await send(addresses.grpc_port, 0, 100)
        while len(sink.ids) < 100:  # noqa: ASYNC110
            await trio.sleep(0.01)
        sink.hang = True  # the next batch is in flight and never acknowledged
        hung_at = sink.posts
        await send(addresses.grpc_port, 100, 400)
        while sink.posts == hung_at:  # noqa: ASYNC110
            await trio.sleep(0.01)
        first.request_stop()  # the grace period runs out with the batch in flight: no drain
        summary = await first.wait_stopped()
        assert summary is not None
        assert (summary.delivered, summary.abandoned, summary.retained) == (100, 0, 300)

        sink.hang = False
        caplog.set_level(logging.INFO, logger="trio_events.agent.spool_db")
        second = AgentService(service_config(sink_port, spool, grace_period=5.0))
        addresses = await nursery.start(second.run)
        assert addresses.spool_resumed == 300
        assert "resumed with 300 events" in caplog.text
        await send(addresses.grpc_port, 400, 450)
        while not {event_id(i) for i in range(450)} <= set(sink.ids):  # noqa: ASYNC110
            await trio.sleep(0.01)
        second.request_stop()
        summary = await second.wait_stopped()
        assert summary is not None
    assert (summary.dropped, summary.abandoned, summary.retained) == (0, 0, 0)
    assert set(sink.ids) == {event_id(i) for i in range(450)}  # every one, at least once


def test_the_spool_and_the_store_cannot_share_a_file() -> None:
    with pytest.raises(ValueError, match=r"^The spool and the local store need different files"):
        ServiceConfig(store_path="x.db", spool=SpoolConfig("x.db"))


# ---- configuration ----------------------------------------------------------------------------


def test_the_agent_command_line_configures_the_spool() -> None:
    from trio_events._cli._agent import service_config_from_args
    from trio_events._cli._main import parse

    def config(argv: list[str], environ: dict[str, str]) -> ServiceConfig:
        args = parse(["agent", *argv], environ)
        return service_config_from_args(args, environ)

    assert config([], {}).spool is None
    env = {"TRIO_EVENTS_SPOOL": "/var/lib/agent.spool", "TRIO_EVENTS_SPOOL_MAX_EVENTS": "5000"}
    assert config([], env).spool == SpoolConfig("/var/lib/agent.spool", max_events=5000)
    flags = ["--spool", "x.spool", "--spool-max-bytes", "0", "--spool-synchronous", "full"]
    assert config(flags, env).spool == SpoolConfig(
        "x.spool", max_events=5000, max_bytes=None, synchronous="full"
    )


def test_the_service_forgets_cursors_no_publisher_will_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trio_events.agent._service import _forget_stale_consumers

    with open_spool(tmp_path / "s.spool") as spool:
        _http = spool.open_consumer("http_service", max_batch_size=1000)
        _removed = spool.open_consumer("removed_destination", max_batch_size=1000)
        add(spool, 0, 5)
        _forget_stale_consumers(spool, [])  # no publisher at all: nothing reads, nothing goes
        assert spool.known_consumers() == ("http_service", "removed_destination")
        _forget_stale_consumers(spool, ["http_service", "http_service_2"])
        assert spool.known_consumers() == ("http_service",)
    assert "no publisher named removed_destination is configured" in caplog.text
    assert "(5 events were still waiting for it)" in caplog.text
