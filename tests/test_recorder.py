"""RayEventRecorder in virtual time (autojump_clock) with a scripted fake client: no sockets."""

from __future__ import annotations

import logging
import threading

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fake_client import FakeClient
from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.producer._client import BackpressureError, ExportError, RequestTooLargeError
from trio_events.producer._event_base import RayEventBase
from trio_events.producer._events import (
    RayActorDefinitionEvent,
    RayActorLifecycleEvent,
    RayDriverJobDefinitionEvent,
    RayDriverJobLifecycleEvent,
    RayTaskDefinitionEvent,
    RayTaskLifecycleEvent,
)
from trio_events.producer._recorder import RayEventRecorder
from trio_events.producer._recorder_config import RecorderConfig, backoff_delay

NODE = b"N" * 28
JOB = b"\x01\x00\x00\x00"
ACTOR = b"A" * 16
TASK = b"T" * 24
SRC = {"Source": "core_worker"}


def make(client: FakeClient, **overrides) -> tuple[RayEventRecorder, Metrics]:
    metrics = Metrics()
    config = RecorderConfig(**{"backoff_jitter": 0.0, **overrides})
    return RayEventRecorder(config, client, node_id=NODE, metrics=metrics), metrics


def job_event(state: str, job: bytes = JOB) -> RayDriverJobLifecycleEvent:
    return RayDriverJobLifecycleEvent(job_id=job, state=state)


def task_event(state: str, task: bytes = TASK, attempt: int = 0) -> RayTaskLifecycleEvent:
    return RayTaskLifecycleEvent(task_id=task, task_attempt=attempt, state=state)


def sent_events(request: pb.AddEventsRequest) -> list[pb.RayEvent]:
    return list(request.events_data.events)


def dropped(metrics: Metrics, reason: str) -> float:
    return metrics.value("ray_event_recorder_dropped_events_total", {**SRC, "reason": reason})


def assert_balanced(recorder: RayEventRecorder) -> None:
    s = recorder.statistics()
    assert s.added == s.exported + s.dropped + s.buffered + s.in_flight, s


# --- the periodic loop ----------------------------------------------------------------------


async def test_exports_every_interval_and_skips_empty_ticks(autojump_clock, nursery) -> None:
    client = FakeClient()
    recorder, metrics = make(client, report_interval=1.0)
    t0 = trio.current_time()
    await nursery.start(recorder.run)
    await trio.sleep(0.5)  # add between ticks, so that which comes first is never a tie
    for _ in range(3):
        recorder.add(job_event("CREATED"))
        await trio.sleep(1.0)
    await trio.sleep(2.0)  # two empty ticks: no RPC
    assert [t - t0 for t in client.attempt_times] == [1.0, 2.0, 3.0]
    assert [len(r.events_data.events) for _, r in client.attempts] == [1, 1, 1]
    assert metrics.value("trio_events_recorder_events_exported_total", SRC) == 3
    assert metrics.value("trio_events_recorder_events_added_total", SRC) == 3
    assert client.timeouts == [5.0, 5.0, 5.0]  # the configured export_timeout, every call


async def test_backoff_delays_exactly_as_configured(autojump_clock, nursery) -> None:
    client = FakeClient()
    client.script = ["unavailable"] * 5
    recorder, metrics = make(
        client, report_interval=1.0, backoff_initial=1.0, backoff_multiplier=2.0, backoff_max=4.0
    )
    t0 = trio.current_time()
    await nursery.start(recorder.run)
    recorder.add(job_event("CREATED"))
    await trio.sleep(20.5)
    recorder.add(job_event("FINISHED"))
    await trio.sleep(1.0)
    # Failures at 1, 2, 4, 8, 12 wait 1, 2, 4 (cap), 4, 4; then the interval applies again
    # (ticks at 17, 18, ... and the event added at 20.5 goes at 21).
    times = [t - t0 for t in client.attempt_times]
    assert times == [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 21.0]
    assert recorder.statistics().consecutive_failures == 0
    assert (
        metrics.value(
            "trio_events_recorder_export_failures_total", {**SRC, "reason": "unavailable"}
        )
        == 5
    )
    # Every retry carried the same (sealed) event.
    assert len({sent_events(r)[0].event_id for _, r in client.attempts[:6]}) == 1


@pytest.mark.parametrize(
    ("failures", "base"), [(1, 0.5), (2, 1.0), (4, 4.0), (5, 8.0), (10**6, 8.0)]
)
def test_backoff_delay_bounds(failures, base) -> None:
    config = RecorderConfig(backoff_initial=0.5, backoff_max=8.0, backoff_jitter=0.25)
    assert backoff_delay(config, failures, lambda: 0.0) == base
    assert backoff_delay(config, failures, lambda: 0.999999) == pytest.approx(base * 0.75, 1e-5)


async def test_deadline_fails_a_hanging_export_and_keeps_its_events(autojump_clock, nursery):
    client = FakeClient()
    client.script = ["hang"]
    recorder, metrics = make(client, export_timeout=2.0, backoff_initial=1.0)
    t0 = trio.current_time()
    await nursery.start(recorder.run)
    recorder.add(job_event("CREATED"))
    await trio.sleep(3.5)
    stats = recorder.statistics()
    assert (stats.buffered, stats.exported, stats.dropped) == (1, 0, 0)
    assert (
        metrics.value("trio_events_recorder_export_failures_total", {**SRC, "reason": "deadline"})
        == 1
    )
    await trio.sleep(1.0)
    # Sent at 1, timed out at 3, retried 1 s later.
    assert [t - t0 for t in client.attempt_times] == [1.0, 4.0]
    assert recorder.statistics().exported == 1
    latency = "trio_events_recorder_export_latency_seconds_count"
    assert metrics.value(latency, {**SRC, "Outcome": "failure"}) == 1
    assert metrics.value(latency, {**SRC, "Outcome": "success"}) == 1


async def test_slow_exports_delay_the_next_tick_and_never_overlap(autojump_clock, nursery):
    client = FakeClient()
    client.delay = 2.5
    recorder, _ = make(client, report_interval=1.0)
    t0 = trio.current_time()
    await nursery.start(recorder.run)
    await trio.sleep(0.5)
    for _ in range(8):
        recorder.add(job_event("CREATED"))
        await trio.sleep(1.0)
    assert client.max_in_flight == 1
    assert [t - t0 for t in client.attempt_times] == [1.0, 3.5, 6.0]


async def test_backpressure_is_kept_and_retried_not_dropped(autojump_clock, nursery) -> None:
    client = FakeClient()
    client.script = ["backpressure", "backpressure"]
    recorder, metrics = make(client)
    await nursery.start(recorder.run)
    recorder.add(job_event("CREATED"))
    await trio.sleep(10)
    stats = recorder.statistics()
    assert (stats.exported, stats.dropped, stats.export_failures) == (1, 0, 2)
    assert (
        metrics.value(
            "trio_events_recorder_export_failures_total", {**SRC, "reason": "backpressure"}
        )
        == 2
    )


async def test_non_retryable_error_drops_and_counts(autojump_clock, nursery) -> None:
    client = FakeClient()
    client.script = ["rejected"]
    recorder, metrics = make(client)
    await nursery.start(recorder.run)
    recorder.add_many([job_event("CREATED"), job_event("FINISHED")])
    await trio.sleep(10)
    assert len(client.attempts) == 1
    assert recorder.statistics().dropped_by_reason == {"rejected": 2}
    assert dropped(metrics, "rejected") == 2
    assert_balanced(recorder)


# --- merging, ordering, sealing ---------------------------------------------------------------


async def test_merge_keeps_first_occurrence_order_and_transition_order() -> None:
    client = FakeClient()
    recorder, _ = make(client)
    job_def = RayDriverJobDefinitionEvent(job_id=JOB, entrypoint="python a.py")
    recorder.add(job_def)
    recorder.add(job_event("CREATED"))
    recorder.add(RayActorDefinitionEvent(actor_id=ACTOR, class_name="Trainer"))
    recorder.add(RayDriverJobDefinitionEvent(job_id=JOB, entrypoint="a duplicate, ignored"))
    recorder.add(RayActorLifecycleEvent(actor_id=ACTOR, state="ALIVE"))
    recorder.add(job_event("FINISHED"))
    assert await recorder.flush()
    [request] = client.acked
    events = sent_events(request)
    assert [pb.EVENT_TYPE_NAMES[e.event_type] for e in events] == [
        "DRIVER_JOB_DEFINITION_EVENT",
        "DRIVER_JOB_LIFECYCLE_EVENT",
        "ACTOR_DEFINITION_EVENT",
        "ACTOR_LIFECYCLE_EVENT",
    ]
    assert events[0].event_id == job_def.event_id  # the group keeps its first event's id
    assert events[0].driver_job_definition_event.entrypoint == "python a.py"
    transitions = events[1].driver_job_lifecycle_event.state_transitions
    assert [t.state for t in transitions] == [1, 2]  # CREATED, FINISHED (Ray's TestMergeEvents)
    assert all(e.node_id == NODE for e in events)
    assert all(e.severity == pb.RayEvent.INFO for e in events)
    assert recorder.statistics().exported == 6  # counted in recorded events, not messages


async def test_task_lifecycle_partials_merge_per_attempt() -> None:
    client = FakeClient()
    recorder, _ = make(client)
    recorder.add(RayTaskDefinitionEvent(task_id=TASK, task_attempt=0, task_name="f"))
    for state in ("PENDING_ARGS_AVAIL", "SUBMITTED_TO_WORKER", "RUNNING", "FAILED"):
        recorder.add(task_event(state))
    recorder.add(task_event("RUNNING", attempt=1))  # another attempt: another entity
    assert await recorder.flush()
    events = sent_events(client.acked[0])
    assert len(events) == 3
    states = [t.state for t in events[1].task_lifecycle_event.state_transitions]
    assert states == [1, 5, 8, 12]
    assert events[2].task_lifecycle_event.task_attempt == 1


async def test_sealed_retry_is_byte_identical_and_newer_events_form_their_own_group() -> None:
    client = FakeClient()
    client.script = ["delivered_then_deadline"]
    recorder, _ = make(client)
    recorder.add(task_event("PENDING_ARGS_AVAIL"))
    recorder.add(task_event("RUNNING"))
    assert not await recorder.flush()
    recorder.add(task_event("FINISHED"))  # same entity, newer
    assert await recorder.flush()
    [(_, first), (_, retry)] = client.attempts
    [sealed] = sent_events(first)
    resent, newer = sent_events(retry)
    assert resent.SerializeToString() == sealed.SerializeToString()
    assert newer.event_id != sealed.event_id
    assert [t.state for t in newer.task_lifecycle_event.state_transitions] == [11]
    # A sink that de-duplicates by event id has every transition exactly once, in order.
    seen: dict[bytes, pb.RayEvent] = {}
    for request in client.delivered:
        for event in sent_events(request):
            seen.setdefault(event.event_id, event)
    states = [t.state for e in seen.values() for t in e.task_lifecycle_event.state_transitions]
    assert states == [1, 8, 11]
    assert recorder.statistics().exported == 3


class _OddEvent(RayEventBase):
    """A user-defined type with a bug: every event shares one merge key, entities differ."""

    __slots__ = ()
    EVENT_TYPE = 99
    PAYLOAD_TYPE = pb.PlatformEvent
    PAYLOAD_FIELD_NUMBER = 99
    broken_key = False

    @property
    def entity_id(self) -> bytes:
        return self.event_id

    @property
    def merge_key(self) -> tuple[object, ...]:
        if _OddEvent.broken_key:
            raise RuntimeError("merge_key is broken")
        return ("same for all",)


async def test_events_that_refuse_to_merge_are_sent_unmerged(caplog) -> None:
    client = FakeClient()
    recorder, _ = make(client)
    recorder.add_many([_OddEvent(), _OddEvent()])
    assert await recorder.flush()
    assert len(sent_events(client.acked[0])) == 2
    assert recorder.statistics().exported == 2
    assert any(m.startswith("event not merged:") for m in caplog.messages)


async def test_a_failing_merge_key_loses_nothing(monkeypatch) -> None:
    client = FakeClient()
    recorder, _ = make(client)
    recorder.add(job_event("CREATED"))
    recorder.add_many([_OddEvent(), _OddEvent()])
    monkeypatch.setattr(_OddEvent, "broken_key", True)
    with pytest.raises(RuntimeError, match="merge_key is broken"):
        await recorder.flush()
    assert recorder.statistics().buffered == 3
    assert_balanced(recorder)
    monkeypatch.setattr(_OddEvent, "broken_key", False)
    assert await recorder.flush()
    assert recorder.statistics().exported == 3


# --- the ring -------------------------------------------------------------------------------


async def test_drop_oldest_capacity_arithmetic() -> None:
    # Ray's TestDropEvents: capacity 5; add 6, then 2 more -> 3 dropped.
    client = FakeClient()
    recorder, metrics = make(client, max_queued_events=5)
    jobs = [bytes([i, 0, 0, 0]) for i in range(8)]
    for job in jobs[:6]:
        recorder.add(job_event("CREATED", job))
    recorder.add_many([job_event("CREATED", job) for job in jobs[6:]])
    assert dropped(metrics, "buffer_full") == 3
    stats = recorder.statistics()
    assert (stats.added, stats.dropped, stats.buffered, stats.queued_entries) == (8, 3, 5, 5)
    assert await recorder.flush()
    # The newest five survive, in order.
    assert [e.driver_job_lifecycle_event.job_id for e in sent_events(client.acked[0])] == jobs[3:]


async def test_add_many_larger_than_the_ring_keeps_the_newest() -> None:
    client = FakeClient()
    recorder, metrics = make(client, max_queued_events=3)
    recorder.add_many(job_event("CREATED", bytes([i, 0, 0, 0])) for i in range(7))
    assert dropped(metrics, "buffer_full") == 4
    assert await recorder.flush()
    assert [e.driver_job_lifecycle_event.job_id[0] for e in sent_events(client.acked[0])] == [
        4,
        5,
        6,
    ]


async def test_failed_export_requeues_ahead_and_overflow_is_counted() -> None:
    client = FakeClient()
    client.script = ["unavailable"]
    recorder, metrics = make(client, max_queued_events=3)
    jobs = [bytes([i, 0, 0, 0]) for i in range(5)]
    # Two newer events arrive while the first three are in flight.
    client.on_call = lambda request: recorder.add_many(job_event("CREATED", j) for j in jobs[3:])
    recorder.add_many(job_event("CREATED", j) for j in jobs[:3])
    assert not await recorder.flush()
    assert dropped(metrics, "export_failed_overflow") == 2
    client.on_call = None
    assert await recorder.flush()
    assert [e.driver_job_lifecycle_event.job_id for e in sent_events(client.acked[0])] == [
        jobs[2],
        jobs[3],
        jobs[4],
    ]
    assert_balanced(recorder)


async def test_metrics_gauge_tracks_buffered_events() -> None:
    client = FakeClient()
    recorder, metrics = make(client)
    recorder.add_many([job_event("CREATED"), job_event("FINISHED")])
    assert metrics.value("trio_events_recorder_buffered_events", SRC) == 2
    assert await recorder.flush()
    assert metrics.value("trio_events_recorder_buffered_events", SRC) == 0


async def test_add_from_worker_threads(autojump_clock, nursery) -> None:
    client = FakeClient()
    recorder, _ = make(client, max_queued_events=100_000, report_interval=0.001)
    await nursery.start(recorder.run)

    def produce(worker: int) -> None:
        for i in range(2_000):
            recorder.add(job_event("CREATED", bytes([worker, i % 256, i // 256, 0])))

    async with trio.open_nursery() as producers:
        for worker in range(4):
            producers.start_soon(trio.to_thread.run_sync, produce, worker)
    assert threading.current_thread() is threading.main_thread()
    assert await recorder.flush()
    stats = recorder.statistics()
    assert (stats.added, stats.exported, stats.dropped) == (8_000, 8_000, 0)
    # Thread-produced events keep their per-thread order.
    delivered = [e for r in client.acked for e in sent_events(r)]
    assert len(delivered) == 8_000


# --- lifecycle ------------------------------------------------------------------------------


async def test_exit_flushes_even_before_the_first_tick(autojump_clock) -> None:
    # Ray's TestStopFlushesEvents.
    client = FakeClient()
    recorder, _ = make(client, report_interval=3600)
    async with recorder:
        recorder.add(job_event("CREATED"))
        recorder.add(job_event("FINISHED"))
    assert len(client.acked) == 1
    assert recorder.statistics().exported == 2
    assert client.closed
    recorder.add(job_event("CREATED"))  # after shutdown: counted, not kept
    assert recorder.statistics().dropped_by_reason == {"closed": 1}
    assert_balanced(recorder)


async def test_exit_flush_is_bounded_and_counts_what_it_could_not_send(
    autojump_clock, caplog
) -> None:
    client = FakeClient()
    client.script = ["hang"] * 10
    recorder, metrics = make(client, report_interval=3600, shutdown_flush_timeout=3.0)
    t0 = trio.current_time()
    with caplog.at_level(logging.INFO, logger="trio_events.producer.recorder"):
        async with recorder:
            recorder.add_many([job_event("CREATED"), job_event("FINISHED")])
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert dropped(metrics, "shutdown") == 2
    assert "recorder stopped: not exported=2 dropped=true reason=shutdown" in caplog.messages
    assert client.closed
    assert_balanced(recorder)


async def test_cancel_lets_the_rpc_in_flight_finish_so_nothing_is_sent_twice(autojump_clock):
    client = FakeClient()
    client.delay = 2.0  # in flight from t=1 to t=3; the cancellation comes at 1.5
    recorder, _ = make(client, report_interval=1.0)
    t0 = trio.current_time()
    with trio.move_on_after(1.5):
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            recorder.add_many([task_event("RUNNING"), task_event("FINISHED")])
            await trio.sleep_forever()
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert len(client.attempts) == len(client.acked) == 1
    stats = recorder.statistics()
    assert (stats.exported, stats.dropped) == (2, 0)


async def test_cancel_mid_rpc_loses_nothing_uncounted(autojump_clock) -> None:
    client = FakeClient()
    client.script = ["delivered_then_hang"]
    recorder, _ = make(client, report_interval=1.0)
    with trio.move_on_after(1.5):
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            recorder.add_many([task_event("RUNNING"), task_event("FINISHED")])
            await trio.sleep_forever()
    # The RPC in flight hangs until its deadline (t=6); its events went back sealed and the
    # shutdown flush re-sent them unchanged.
    [(_, first), (_, flushed)] = client.attempts
    assert flushed.SerializeToString() == first.SerializeToString()
    stats = recorder.statistics()
    assert (stats.exported, stats.dropped, stats.buffered, stats.in_flight) == (2, 0, 0, 0)


async def test_body_exception_propagates_unwrapped(autojump_clock) -> None:
    recorder, _ = make(FakeClient())
    with pytest.raises(KeyError, match="boom"):
        async with recorder:
            raise KeyError("boom")


async def test_disabled_recorder_accepts_and_ignores(autojump_clock, nursery) -> None:
    client = FakeClient()
    recorder, metrics = make(client, enabled=False)
    await nursery.start(recorder.run)
    recorder.add(job_event("CREATED"))
    recorder.add_many([job_event("FINISHED")])
    await trio.sleep(5)
    assert client.attempts == []
    assert recorder.statistics().added == 0
    assert metrics.value("trio_events_recorder_events_added_total", SRC) == 0


class _ClientWithALifetime(FakeClient):
    """A client that needs something for its whole life, as EventAggregatorClient does."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False
        self.events: list[str] = []

    async def __aenter__(self) -> _ClientWithALifetime:
        self.open = True
        self.events.append("enter")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.events.append("exit")
        self.open = False

    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        assert self.open, "called outside the client's lifetime"
        await super().add_events(request, timeout=timeout)

    async def aclose(self) -> None:
        self.events.append("aclose")
        await super().aclose()


async def test_run_enters_a_client_with_a_lifetime_for_all_of_it(autojump_clock) -> None:
    client = _ClientWithALifetime()
    recorder, _ = make(client, report_interval=1.0)
    async with recorder:
        assert client.events == ["enter"]
        recorder.add(job_event("CREATED"))
        assert await recorder.flush()  # from this task, not run()'s
        recorder.add(job_event("FINISHED"))
        await trio.sleep(1.5)  # one tick of the export loop
    assert client.events == ["enter", "aclose", "exit"]  # the final flush ran inside it
    assert len(client.acked) == 2
    assert recorder.statistics().exported == 2


async def test_second_start_is_an_error(autojump_clock, nursery) -> None:
    recorder, _ = make(FakeClient())
    await nursery.start(recorder.run)
    with pytest.raises(
        RuntimeError,
        match=r"^RayEventRecorder\.run\(\) was already started; a recorder exports from exactly "
        r"one task, so create a new recorder instead of starting this one again\.$",
    ):
        await recorder.run()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_queued_events": 0}, r"^RecorderConfig\.max_queued_events must be an integer >= 1"),
        ({"report_interval": 0}, r"^RecorderConfig\.report_interval must be a number > 0, got 0"),
        ({"backoff_jitter": 2}, r"^RecorderConfig\.backoff_jitter must be between 0 and 1\.$"),
        ({"backoff_max": 0.5}, r"^RecorderConfig\.backoff_max must be >= backoff_initial\.$"),
    ],
)
def test_config_validation(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        RecorderConfig(**overrides)


def test_node_id_must_be_bytes() -> None:
    with pytest.raises(TypeError, match=r"^node_id must be bytes \(a 28-byte NodeID\), got str\.$"):
        RayEventRecorder(RecorderConfig(), FakeClient(), node_id="n")  # type: ignore[arg-type]


# --- property: any interleaving of adds and export outcomes -----------------------------------

_STEP = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.integers(1, 4)),
    st.tuples(
        st.just("export"),
        st.sampled_from(
            ["ok", "unavailable", "backpressure", "rejected", "deadline", "delivered_then_deadline"]
        ),
    ),
)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 8), steps=st.lists(_STEP, max_size=40))
async def test_accounting_and_order_hold_for_any_interleaving(capacity, steps) -> None:
    client = FakeClient()
    recorder, _ = make(client, max_queued_events=capacity)
    seq = 0

    def check() -> None:
        s = recorder.statistics()
        assert s.added == s.exported + s.dropped + s.buffered + s.in_flight
        assert s.in_flight == 0
        assert s.queued_entries <= capacity
        # Exported counts recorded events: each carried one transition.
        acked = [e for r in client.acked for e in sent_events(r)]
        assert s.exported == sum(len(e.task_lifecycle_event.state_transitions) for e in acked)

    for step in [*steps, ("export", "ok")]:
        if step[0] == "add":
            _, entity, n = step
            events = []
            for _ in range(n):
                seq += 1
                events.append(
                    RayTaskLifecycleEvent(
                        task_id=bytes([entity]) * 24, task_attempt=0, state="RUNNING", timestamp=seq
                    )
                )
            if n == 1:
                recorder.add(events[0])
            else:
                recorder.add_many(events)
        else:
            client.script = [step[1]]
            await recorder.flush()
        check()

    s = recorder.statistics()
    assert s.buffered == 0
    assert s.added == s.exported + s.dropped == seq
    # A sink that de-duplicates by event id sees each entity's transitions in order.
    unique: dict[bytes, pb.RayEvent] = {}
    for request in client.delivered:
        for event in sent_events(request):
            if event.event_id in unique:
                assert unique[event.event_id].SerializeToString() == event.SerializeToString()
            unique.setdefault(event.event_id, event)
    per_entity: dict[bytes, list[int]] = {}
    for event in unique.values():
        lifecycle = event.task_lifecycle_event
        stamps = [t.timestamp.nanos for t in lifecycle.state_transitions]
        per_entity.setdefault(lifecycle.task_id, []).extend(stamps)
    for stamps in per_entity.values():
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == len(stamps)


class _CountingMergeEvent(RayEventBase):
    """Keeps RayEventBase's merge_key but overrides merge(): the ring must still call it."""

    __slots__ = ()
    EVENT_TYPE = 98
    PAYLOAD_TYPE = pb.PlatformEvent
    PAYLOAD_FIELD_NUMBER = 98
    merges = 0

    @property
    def entity_id(self) -> bytes:
        return b"one entity"

    def merge(self, other: RayEventBase) -> None:
        type(self).merges += 1
        super().merge(other)


async def test_the_ring_calls_an_overridden_merge_and_merges_plain_types_alike() -> None:
    client = FakeClient()
    recorder, _ = make(client)
    recorder.add_many([_CountingMergeEvent() for _ in range(3)])
    recorder.add_many([job_event("CREATED"), job_event("FINISHED"), job_event("FINISHED")])
    assert await recorder.flush()
    assert _CountingMergeEvent.merges == 2
    events = sent_events(client.acked[0])
    assert len(events) == 2  # each group merged into its first event
    job = events[1].driver_job_lifecycle_event
    assert [t.state for t in job.state_transitions] == [
        pb.DriverJobLifecycleEvent.CREATED,
        pb.DriverJobLifecycleEvent.FINISHED,
        pb.DriverJobLifecycleEvent.FINISHED,
    ]
    assert recorder.statistics().exported == 6


# --- request size limits ----------------------------------------------------------------------


async def test_requests_are_split_by_event_count_in_order() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_events_per_request=3)
    jobs = [bytes([i, 0, 0, 0]) for i in range(10)]
    recorder.add_many([job_event("CREATED", job) for job in jobs])
    assert await recorder.flush()
    assert [len(sent_events(r)) for r in client.acked] == [3, 3, 3, 1]
    sent = [e.driver_job_lifecycle_event.job_id for r in client.acked for e in sent_events(r)]
    assert sent == jobs
    assert_balanced(recorder)
    assert recorder.statistics().exported == 10


async def test_requests_are_split_by_bytes_and_an_oversized_event_is_dropped_counted() -> None:
    client = FakeClient()
    recorder, metrics = make(client, max_request_bytes=400)
    huge = RayDriverJobDefinitionEvent(job_id=b"\x09\x00\x00\x00", entrypoint="x" * 1000)
    recorder.add_many([job_event("CREATED", bytes([i, 0, 0, 0])) for i in range(6)])
    recorder.add(huge)
    assert await recorder.flush()
    assert len(client.acked) > 1
    for request in client.acked:
        assert request.ByteSize() <= 400
    assert dropped(metrics, "oversized") == 1
    stats = recorder.statistics()
    assert (stats.exported, stats.dropped) == (6, 1)
    assert_balanced(recorder)


class _SmallAggregator(FakeClient):
    """Refuses any request of more than ``limit`` events with RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int, error: type[ExportError] = BackpressureError) -> None:
        super().__init__()
        self.limit = limit
        self.error = error

    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        if len(request.events_data.events) > self.limit:
            self.attempts.append((trio.current_time(), request))
            raise self.error("the aggregator says no.", reason="resource_exhausted")
        await super().add_events(request, timeout=timeout)


async def test_backpressure_halves_the_request_until_it_fits_and_loses_nothing() -> None:
    client = _SmallAggregator(limit=5)
    recorder, metrics = make(client)
    jobs = [bytes([i, 0, 0, 0]) for i in range(40)]
    recorder.add_many([job_event("CREATED", job) for job in jobs])
    assert await recorder.flush()
    sent = [e.driver_job_lifecycle_event.job_id for r in client.acked for e in sent_events(r)]
    assert sent == jobs  # all of them, once each, in order
    assert all(len(sent_events(r)) <= 5 for r in client.acked)
    assert recorder.statistics().dropped == 0
    assert (
        metrics.value(
            "trio_events_recorder_export_failures_total", {**SRC, "reason": "backpressure"}
        )
        >= 1
    )
    assert_balanced(recorder)


async def test_a_single_event_refused_as_too_large_is_dropped_counted() -> None:
    client = _SmallAggregator(limit=0, error=RequestTooLargeError)
    recorder, metrics = make(client)
    recorder.add_many([job_event("CREATED", bytes([i, 0, 0, 0])) for i in range(3)])
    assert not await recorder.flush()  # the first single-event request fails for good
    assert dropped(metrics, "oversized") == 1
    assert_balanced(recorder)


async def test_a_single_event_refused_as_full_is_kept_for_later() -> None:
    client = _SmallAggregator(limit=0)
    recorder, _ = make(client)
    recorder.add(job_event("CREATED"))
    assert not await recorder.flush()
    stats = recorder.statistics()
    assert (stats.dropped, stats.buffered) == (0, 1)
    assert_balanced(recorder)
