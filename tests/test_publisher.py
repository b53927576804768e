"""RayEventPublisher in virtual time against scripted httpx.MockTransport sinks (no sockets)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.agent._buffer import MultiConsumerEventBuffer
from trio_events.agent._convert_reference import protobuf_reference_dumps
from trio_events.agent._http_sink import HttpPublisherClient, HttpPublisherConfig
from trio_events.agent._publisher import (
    DEFAULT_EXPOSABLE_EVENT_TYPES,
    PublisherConfig,
    PublisherStatistics,
    RayEventPublisher,
)
from trio_events.agent._sink import Outcome, PublishOutcome

E = pb.RayEvent
NAME = "http_service"
LINGER = 0.1

# --- events -------------------------------------------------------------------------------------


def make_event(
    i: int, event_type: pb.RayEvent.EventType.ValueType = E.TASK_DEFINITION_EVENT
) -> pb.RayEvent:
    event = E(
        event_id=i.to_bytes(28, "big"),
        source_type=E.CORE_WORKER,
        event_type=event_type,
        severity=E.INFO,
        session_name="session_2025-06-30_16-50-12_123456_1234",
        node_id=bytes(range(28)),
    )
    event.timestamp.FromNanoseconds(1_751_302_230_130_457_542 + i)
    if event_type == E.TASK_DEFINITION_EVENT:
        d = event.task_definition_event
        d.task_id = i.to_bytes(24, "big")
        d.task_attempt = i % 3
        f = d.task_func.python_function_descriptor
        f.module_name = "pipeline"
        f.function_name = f"step_{i}"
        d.task_name = f.function_name
        d.required_resources["CPU"] = 1.0
        d.ref_ids["arg"] = b"\x00\x01"
        d.job_id = b"\x01\x00\x00\x00"
    elif event_type == E.TASK_LIFECYCLE_EVENT:
        lc = event.task_lifecycle_event
        lc.task_id = i.to_bytes(24, "big")
        transition = lc.state_transitions.add(state=1)
        transition.timestamp.FromSeconds(1)
    elif event_type == E.TASK_PROFILE_EVENT:
        p = event.task_profile_events
        p.task_id = i.to_bytes(24, "big")
        p.profile_events.events.add(event_name="task:execute", start_time=1, end_time=2)
    elif event_type == E.DRIVER_JOB_DEFINITION_EVENT:
        event.driver_job_definition_event.driver_pid = 59360
    return event


def add_events(buffer: MultiConsumerEventBuffer, events: list[pb.RayEvent]) -> None:
    buffer.add_many_nowait([e.event_type for e in events], [e.SerializeToString() for e in events])


def event_ids(body: bytes) -> list[str]:
    return [event["eventId"] for event in json.loads(body)]


# --- a scripted sink ----------------------------------------------------------------------------

Step = int | httpx.Response | BaseException | Callable[[httpx.Request], Awaitable[httpx.Response]]


class Sink:
    """An httpx.MockTransport handler playing ``script`` (then 200s), recording every request."""

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []
        self.default: Step = 200

    @property
    def bodies(self) -> list[bytes]:
        return [request.content for request in self.requests]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        step = self.script.pop(0) if self.script else self.default
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, int):
            return httpx.Response(step, text="ok" if step < 400 else f"error {step}")
        return await step(request)


async def hang(request: httpx.Request) -> httpx.Response:
    await trio.sleep_forever()


class Harness:
    def __init__(self, sink: Sink, *, max_batch_size: int = 1000, **config: Any) -> None:
        self.sink = sink
        self.metrics = Metrics()
        self.buffer = MultiConsumerEventBuffer(10_000, max_batch_size, metrics=self.metrics)
        config.setdefault("jitter", 0.0)
        self.config = PublisherConfig(**config)
        self.client = HttpPublisherClient(
            HttpPublisherConfig("http://sink.test/events", timeout=3.0),
            transport=httpx.MockTransport(sink.handle),
        )
        self.publisher = RayEventPublisher(
            self.config, self.client, self.buffer, metrics=self.metrics, rng=random.Random(0)
        )

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, {"consumer": NAME, **labels})

    def dropped(self, reason: str) -> float:
        return self.value("trio_events_publisher_dropped_events_total", reason=reason)

    def stats(self) -> PublisherStatistics:
        return self.publisher.statistics()


async def until(condition: Callable[[], bool]) -> None:
    """Poll in virtual time: free under the autojump clock, and no hooks needed in the code."""
    with trio.fail_after(600):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


# --- retries ------------------------------------------------------------------------------------


async def test_503_then_200_retries_once_after_rays_first_backoff(nursery, autojump_clock) -> None:
    h = Harness(Sink(503, 200))
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(i) for i in range(3)])
    await until(lambda: h.stats().delivered == 3)
    assert len(h.sink.requests) == 2
    assert h.sink.times[1] - h.sink.times[0] == pytest.approx(0.02)
    assert h.sink.bodies[0] == h.sink.bodies[1]  # the same batch, the same event ids
    assert h.value("ray_aggregator_agent_published_events_total") == 3
    assert h.value("ray_aggregator_agent_publish_latency_seconds_count", Outcome="failure") == 1
    assert h.value("ray_aggregator_agent_publish_latency_seconds_count", Outcome="success") == 1
    assert h.value("ray_aggregator_agent_consecutive_failures_since_last_success") == 0
    assert h.value("ray_aggregator_agent_publish_failures_total") == 0
    # The window's own figures are checked in test_delivery.py.
    assert attrs.evolve(h.stats(), in_flight_limit=1, batches_in_flight=0) == PublisherStatistics(
        NAME, 3, 0, 0, 0, 0, 0, 2, 0, False
    )


async def test_the_first_batch_lingers_for_rays_send_interval(nursery, autojump_clock) -> None:
    h = Harness(Sink())
    await nursery.start(h.publisher.run)
    added = trio.current_time()
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().delivered == 1)
    assert h.sink.times[0] - added == pytest.approx(LINGER)


async def test_jittered_retry_delay_stays_within_ten_percent(nursery, autojump_clock) -> None:
    h = Harness(Sink(503, 503, 200), jitter=0.1)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().delivered == 1)
    first, second = (b - a for a, b in zip(h.sink.times, h.sink.times[1:], strict=False))
    assert 0.018 <= first <= 0.022
    assert 0.036 <= second <= 0.044


async def test_retry_after_longer_than_the_backoff_is_honoured(nursery, autojump_clock) -> None:
    h = Harness(Sink(httpx.Response(429, headers={"Retry-After": "3"}), 200))
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().delivered == 1)
    assert h.sink.times[1] - h.sink.times[0] == pytest.approx(3.0)


async def test_retry_after_shorter_than_the_backoff_is_not_a_shortcut(
    nursery, autojump_clock
) -> None:
    h = Harness(Sink(httpx.Response(503, headers={"Retry-After": "0"}), 200))
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().delivered == 1)
    assert h.sink.times[1] - h.sink.times[0] == pytest.approx(0.02)


async def test_retry_after_is_capped(nursery, autojump_clock) -> None:
    h = Harness(
        Sink(httpx.Response(503, headers={"Retry-After": "86400"}), 200), max_retry_after=60
    )
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await trio.sleep(61)
    assert h.stats().delivered == 1
    assert h.sink.times[1] - h.sink.times[0] == pytest.approx(60.0)


def refusing(poison: set[str], status: int = 400, detail: str = "bad event") -> Step:
    """A sink step that refuses (``status``) every body holding one of the ``poison`` ids."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if poison & set(event_ids(request.content)):
            return httpx.Response(status, json={"error": detail})
        return httpx.Response(200)

    return handle


def eid(i: int) -> str:
    return event_ids(protobuf_reference_dumps([make_event(i)]))[0]


async def test_400_is_permanent_bisected_and_only_the_refused_event_dropped(
    nursery, autojump_clock, caplog
) -> None:
    sink = Sink()
    sink.default = refusing({eid(2)}, detail="field taskId is not a UUID")
    h = Harness(sink)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(i) for i in range(4)])
    await until(lambda: h.stats().dropped == 1 and h.stats().delivered == 3)
    await trio.sleep(1)
    # [0 1 2 3] refused, [0 1] delivered, [2 3] refused, [2] refused and dropped, [3] delivered:
    # no retry of a permanent refusal, each part posted once.
    assert [event_ids(b) for b in sink.bodies] == [
        [eid(i) for i in part] for part in ([0, 1, 2, 3], [0, 1], [2, 3], [2], [3])
    ]
    assert h.value("ray_aggregator_agent_publish_failures_total") == 1
    assert h.dropped("http_400") == 1
    assert h.stats().splits == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "trio_events.agent.delivery"
    assert "HTTP 400" in errors[0].getMessage()
    assert "field taskId is not a UUID" in errors[0].getMessage()
    # The publisher goes on with the next batch.
    add_events(h.buffer, [make_event(10)])
    await until(lambda: h.stats().delivered == 4)
    assert h.value("ray_aggregator_agent_consecutive_failures_since_last_success") == 0


async def test_501_is_permanent(nursery, autojump_clock) -> None:
    h = Harness(Sink(501))
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().dropped == 1)
    assert len(h.sink.requests) == 1
    assert h.dropped("http_501") == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        hang,  # no answer at all: the client's own deadline (3 s) ends the attempt
    ],
    ids=["connect", "reset", "disconnect", "read-timeout", "hang"],
)
async def test_transport_failure_then_success(nursery, autojump_clock, failure, caplog) -> None:
    h = Harness(Sink(failure, 200))
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().delivered == 1)
    assert len(h.sink.requests) == 2
    gap = h.sink.times[1] - h.sink.times[0]
    assert gap == pytest.approx(3.02 if failure is hang else 0.02)
    [retry] = [r for r in caplog.records if "retry 1 in 0.020 s" in r.getMessage()]
    assert retry.levelno == logging.WARNING


async def test_max_retries_2_makes_exactly_3_attempts_then_drops(nursery, autojump_clock) -> None:
    sink = Sink()
    sink.default = 503
    h = Harness(sink, max_retries=2)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(i) for i in range(5)])
    await until(lambda: h.stats().dropped == 5)
    await trio.sleep(10)
    assert len(sink.requests) == 3
    assert h.dropped("retries_exhausted") == 5
    assert h.value("ray_aggregator_agent_publish_failures_total") == 5
    assert h.value("ray_aggregator_agent_publish_latency_seconds_count", Outcome="failure") == 3
    assert h.value("ray_aggregator_agent_consecutive_failures_since_last_success") == 3


async def test_max_retries_0_makes_one_attempt(nursery, autojump_clock) -> None:
    h = Harness(Sink(503), max_retries=0)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().dropped == 1)
    assert len(h.sink.requests) == 1


async def test_give_up_after_drops_a_batch_still_failing(nursery, autojump_clock) -> None:
    sink = Sink()
    sink.default = 503
    h = Harness(sink, give_up_after=1.0)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1), make_event(2)])
    await until(lambda: h.stats().dropped == 2)
    gave_up_at = trio.current_time()
    # 0, +0.02, +0.04, +0.08, +0.16, +0.32 = 0.62 s; the next wait (0.64 s) would pass 1 s.
    assert len(sink.requests) == 6
    assert gave_up_at - sink.times[0] < 1.0
    assert h.dropped("give_up_after") == 2


async def test_unlimited_retries_keep_the_batch_and_cap_the_backoff(
    nursery, autojump_clock
) -> None:
    sink = Sink()
    sink.default = 503
    h = Harness(sink)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await trio.sleep(60)
    gaps = [b - a for a, b in zip(sink.times, sink.times[1:], strict=False)]
    assert gaps[:9] == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.0])
    assert max(gaps) == pytest.approx(5.0)
    assert h.stats().in_flight == 1
    assert h.stats().dropped == 0
    assert len(set(sink.bodies)) == 1


async def test_time_since_last_success_grows_while_failing(nursery, autojump_clock) -> None:
    sink = Sink(200)
    h = Harness(sink)
    since = "ray_aggregator_agent_time_since_last_success_seconds"
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(1)])
    await until(lambda: h.stats().delivered == 1)
    assert h.value(since) == pytest.approx(0.0, abs=0.01)
    sink.default = 503
    add_events(h.buffer, [make_event(2)])
    await trio.sleep(30)
    assert h.value(since) == pytest.approx(30.0, abs=0.5)
    assert h.value("ray_aggregator_agent_consecutive_failures_since_last_success") == (
        h.stats().attempts - 1
    )
    await trio.sleep(30)
    assert h.value(since) == pytest.approx(60.0, abs=0.5)
    sink.default = 200
    await until(lambda: h.stats().delivered == 2)
    assert h.value(since) < 0.1
    assert h.value("ray_aggregator_agent_consecutive_failures_since_last_success") == 0


# --- filtering and conversion -------------------------------------------------------------------


def mixed_events() -> list[pb.RayEvent]:
    return [
        make_event(1, E.TASK_DEFINITION_EVENT),
        make_event(2, E.TASK_PROFILE_EVENT),
        make_event(3, E.TASK_LIFECYCLE_EVENT),
        make_event(4, E.DRIVER_JOB_DEFINITION_EVENT),
        make_event(5, E.PLACEMENT_GROUP_DEFINITION_EVENT),
    ]


async def test_task_profile_events_are_filtered_by_default(nursery, autojump_clock) -> None:
    h = Harness(Sink())
    assert E.TASK_PROFILE_EVENT not in DEFAULT_EXPOSABLE_EVENT_TYPES
    await nursery.start(h.publisher.run)
    events = mixed_events()
    add_events(h.buffer, events)
    await until(lambda: h.stats().delivered == 3)
    [body] = h.sink.bodies
    kept = [e for e in events if e.event_type in DEFAULT_EXPOSABLE_EVENT_TYPES]
    assert json.loads(body) == json.loads(protobuf_reference_dumps(kept))
    assert h.value("ray_aggregator_agent_filtered_events_total") == 2
    assert h.stats().filtered == 2


async def test_all_event_types_exposed(nursery, autojump_clock) -> None:
    h = Harness(Sink(), exposable_event_types=None)
    await nursery.start(h.publisher.run)
    events = mixed_events()
    add_events(h.buffer, events)
    await until(lambda: h.stats().delivered == 5)
    assert json.loads(h.sink.bodies[0]) == json.loads(protobuf_reference_dumps(events))
    assert h.value("ray_aggregator_agent_filtered_events_total") == 0


async def test_a_batch_entirely_filtered_sends_nothing(nursery, autojump_clock) -> None:
    h = Harness(Sink(), exposable_event_types=frozenset({E.NODE_DEFINITION_EVENT}))
    await nursery.start(h.publisher.run)
    add_events(h.buffer, mixed_events())
    await until(lambda: h.stats().filtered == 5)
    await trio.sleep(1)
    assert h.sink.requests == []
    assert h.stats().in_flight == 0


@pytest.mark.parametrize("preserve", [False, True])
async def test_body_equals_protobufs_json_for_the_same_events(
    nursery, autojump_clock, preserve
) -> None:
    h = Harness(Sink(), exposable_event_types=None, preserve_proto_field_name=preserve)
    await nursery.start(h.publisher.run)
    types = [
        E.TASK_DEFINITION_EVENT,
        E.TASK_LIFECYCLE_EVENT,
        E.TASK_PROFILE_EVENT,
        E.DRIVER_JOB_DEFINITION_EVENT,
    ]
    events = [make_event(i, t) for i, t in enumerate(types * 30)]
    add_events(h.buffer, events)
    await until(lambda: h.stats().delivered == len(events))
    [request] = h.sink.requests
    assert request.headers["content-type"] == "application/json"
    expected = protobuf_reference_dumps(events, preserving_proto_field_name=preserve)
    assert json.loads(request.content) == json.loads(expected)


async def test_batches_follow_the_buffers_batch_size(nursery, autojump_clock) -> None:
    h = Harness(Sink(), max_batch_size=10)
    await nursery.start(h.publisher.run)
    add_events(h.buffer, [make_event(i) for i in range(25)])
    await until(lambda: h.stats().delivered == 25)
    assert [len(json.loads(b)) for b in h.sink.bodies] == [10, 10, 5]
    sent = [i for body in h.sink.bodies for i in event_ids(body)]
    expected = [i for e in range(25) for i in event_ids(protobuf_reference_dumps([make_event(e)]))]
    assert sent == expected  # in order, each once


async def test_an_unconvertible_event_is_dropped_alone(nursery, autojump_clock, caplog) -> None:
    h = Harness(Sink())
    await nursery.start(h.publisher.run)
    good = [make_event(1), make_event(2)]
    h.buffer.add_nowait(E.TASK_DEFINITION_EVENT, good[0].SerializeToString())
    h.buffer.add_nowait(E.TASK_DEFINITION_EVENT, b"\xff\xff not a RayEvent")
    h.buffer.add_nowait(E.TASK_DEFINITION_EVENT, good[1].SerializeToString())
    await until(lambda: h.stats().delivered == 2)
    assert json.loads(h.sink.bodies[0]) == json.loads(protobuf_reference_dumps(good))
    assert h.dropped("conversion_error") == 1
    assert h.stats().dropped == 1
    assert any("cannot be converted" in r.getMessage() for r in caplog.records)


# --- drain and cancellation ---------------------------------------------------------------------


async def test_drain_delivers_everything_to_a_healthy_sink(autojump_clock) -> None:
    h = Harness(Sink())
    add_events(h.buffer, [make_event(i) for i in range(2500)])
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        start = trio.current_time()
        stats = await h.publisher.drain(start + 10.0)
    # run() returned by itself; no lingering between the drained batches.
    assert trio.current_time() - start < 0.5
    assert stats.delivered == 2500
    assert stats.abandoned == 0
    assert stats.dropped == 0
    assert stats.unread == 0
    assert stats.in_flight == 0
    assert stats.summary() == "delivered=2500 dropped=0 abandoned=0"
    assert [len(json.loads(b)) for b in h.sink.bodies] == [1000, 1000, 500]
    assert h.dropped("shutdown_abandoned") == 0


async def test_drain_of_an_idle_publisher_returns_at_once(nursery, autojump_clock) -> None:
    h = Harness(Sink())
    await nursery.start(h.publisher.run)
    start = trio.current_time()
    stats = await h.publisher.drain(start + 10.0)
    assert trio.current_time() == start
    assert stats.abandoned == 0
    assert stats.delivered == 0


async def test_drain_before_run_and_after_it_ended(autojump_clock) -> None:
    h = Harness(Sink())
    assert (await h.publisher.drain(0.0)).delivered == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        add_events(h.buffer, [make_event(1)])
        await h.publisher.drain(trio.current_time() + 1)
    assert (await h.publisher.drain(0.0)).delivered == 1
    with pytest.raises(RuntimeError, match=r"^RayEventPublisher\.run\(\) can only be called once"):
        await h.publisher.run()


async def test_run_returns_once_a_closed_buffer_is_read_to_the_end(autojump_clock) -> None:
    h = Harness(Sink(503, 200), max_batch_size=10)
    add_events(h.buffer, [make_event(i) for i in range(15)])
    h.buffer.close()
    with trio.fail_after(60):
        await h.publisher.run()
    assert h.stats().summary() == "delivered=15 dropped=0 abandoned=0"
    assert [len(json.loads(b)) for b in h.sink.bodies] == [10, 10, 5]


async def test_drain_of_a_closed_buffer(autojump_clock) -> None:
    h = Harness(Sink())
    add_events(h.buffer, [make_event(i) for i in range(1200)])
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        h.buffer.close()  # the agent stopped accepting
        stats = await h.publisher.drain(trio.current_time() + 10.0)
    assert stats.summary() == "delivered=1200 dropped=0 abandoned=0"


async def test_drain_retries_while_time_allows(autojump_clock) -> None:
    h = Harness(Sink(503, 503, 503, 200))
    add_events(h.buffer, [make_event(i) for i in range(1500)])
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        stats = await h.publisher.drain(trio.current_time() + 10.0)
    assert stats.summary() == "delivered=1500 dropped=0 abandoned=0"
    assert len(h.sink.requests) == 5


async def test_drain_with_the_sink_down_abandons_and_counts_what_is_left(
    autojump_clock, caplog
) -> None:
    sink = Sink()
    sink.default = httpx.ConnectError("[Errno 111] Connection refused")
    h = Harness(sink, max_batch_size=100)
    add_events(h.buffer, [make_event(i) for i in range(1000)])
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        start = trio.current_time()
        stats = await h.publisher.drain(start + 10.0)
    # Retried with backoff until 2 x 3 s were left, then one attempt per batch.
    assert stats.summary() == "delivered=0 dropped=0 abandoned=1000"
    assert h.dropped("shutdown_abandoned") == 1000
    assert h.value("ray_aggregator_agent_publish_failures_total") == 0
    assert trio.current_time() - start == pytest.approx(4.0, abs=0.01)
    last_call = [t for t in sink.times if t >= start + 4.0 - 1e-9]
    assert len(last_call) == 10  # each of the ten batches got exactly one attempt
    assert len({b for b in sink.bodies[-10:]}) == 10
    assert h.buffer.statistics().consumers == {}  # the consumer left the buffer
    # The log says what the last retry is: the only one left, then the batch is abandoned.
    promises = [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]
    assert promises[-1].endswith(
        ", the last before the shutdown deadline (abandoned if it fails)."
    ), promises[-1]
    assert not any("the last before" in p for p in promises[:-1])


async def test_drain_with_a_hanging_sink_stops_at_the_deadline(autojump_clock) -> None:
    sink = Sink()
    sink.default = hang
    h = Harness(sink, max_batch_size=100)
    add_events(h.buffer, [make_event(i) for i in range(1000)])
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        await trio.sleep(1.0)  # the first batch is in flight
        deadline = trio.current_time() + 10.0
        stats = await h.publisher.drain(deadline)
    assert trio.current_time() == pytest.approx(deadline)
    assert stats.abandoned == 1000
    assert stats.delivered == 0
    assert stats.in_flight == 0
    assert h.dropped("shutdown_abandoned") == 1000


async def test_drain_cuts_a_long_backoff_short(autojump_clock) -> None:
    sink = Sink(httpx.Response(503, headers={"Retry-After": "120"}), 200)
    h = Harness(sink)
    add_events(h.buffer, [make_event(1)])
    async with trio.open_nursery() as nursery:
        await nursery.start(h.publisher.run)
        await until(lambda: len(sink.requests) == 1)
        drain_started = trio.current_time()
        stats = await h.publisher.drain(drain_started + 10.0)
    assert stats.delivered == 1
    assert sink.times[1] == pytest.approx(drain_started)


async def test_cancelling_run_counts_the_in_flight_batch_and_unread_events(
    autojump_clock,
) -> None:
    sink = Sink()
    sink.default = hang
    h = Harness(sink, max_batch_size=10)
    add_events(h.buffer, [make_event(i) for i in range(25)])
    with trio.move_on_after(5):
        await h.publisher.run()
    stats = h.stats()
    assert stats.in_flight == 0
    assert stats.abandoned == 25  # 10 in flight + 15 unread
    assert len(sink.requests) == 2  # the first attempt and its retry, both hanging
    assert h.dropped("shutdown_abandoned") == 25
    assert h.buffer.statistics().consumers == {}
    with pytest.raises(RuntimeError, match=r"client has been closed"):
        await h.client.publish(b"[]")


async def test_a_fake_client_satisfies_the_protocol(nursery, autojump_clock) -> None:
    class FakeClient:
        def __init__(self) -> None:
            self.bodies: list[bytes] = []
            self.closed = False

        async def publish(self, body: bytes) -> PublishOutcome:
            await trio.lowlevel.checkpoint()
            self.bodies.append(body)
            return PublishOutcome(Outcome.SUCCESS, "fake")

        async def aclose(self) -> None:
            self.closed = True

    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(100, 10, metrics=metrics)
    fake = FakeClient()
    publisher = RayEventPublisher(PublisherConfig(name="fake"), fake, buffer, metrics=metrics)
    await nursery.start(publisher.run)
    add_events(buffer, [make_event(1)])
    stats = await publisher.drain(trio.current_time() + 1)
    assert stats.delivered == 1
    assert len(fake.bodies) == 1
    assert fake.closed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, r"^A publisher needs a non-empty name \(its buffer consumer name\)\.$"),
        ({"linger": -1.0}, r"^PublisherConfig\.linger must be a number >= 0, got -1\.0\.$"),
        ({"jitter": 2.0}, r"^PublisherConfig\.jitter must be between 0 and 1, got 2\.0\.$"),
        (
            {"max_retries": -2},
            r"^PublisherConfig\.max_retries must be -1 \(unlimited\) or >= 0, got -2\.$",
        ),
        (
            {"give_up_after": 0.0},
            r"^PublisherConfig\.give_up_after must be None \(never\) or > 0 seconds, got 0\.0\.$",
        ),
        (
            {"attempt_timeout": 0.0},
            r"^PublisherConfig\.attempt_timeout must be > 0 seconds, got 0\.0\.$",
        ),
        ({"chunk_size": 0}, r"^PublisherConfig\.chunk_size must be >= 1, got 0\.$"),
    ],
)
def test_config_is_validated(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        PublisherConfig(**kwargs)


@pytest.mark.parametrize("preserve", [False, True])
async def test_the_protobuf_reference_converter_posts_the_same_json(
    nursery, autojump_clock, preserve
) -> None:
    # The benchmarks' reference pipeline: Ray's MessageToJson path, same value as ours.
    h = Harness(
        Sink(), exposable_event_types=None, preserve_proto_field_name=preserve, converter="protobuf"
    )
    await nursery.start(h.publisher.run)
    types = [E.TASK_DEFINITION_EVENT, E.TASK_LIFECYCLE_EVENT, E.DRIVER_JOB_DEFINITION_EVENT]
    events = [make_event(i, t) for i, t in enumerate(types * 50)]
    add_events(h.buffer, events)
    await until(lambda: h.stats().delivered == len(events))
    [request] = h.sink.requests
    assert request.content == protobuf_reference_dumps(events, preserving_proto_field_name=preserve)


async def test_the_protobuf_reference_converter_drops_an_unconvertible_event_alone(
    nursery, autojump_clock
) -> None:
    h = Harness(Sink(), converter="protobuf")
    await nursery.start(h.publisher.run)
    good = make_event(1)
    h.buffer.add_nowait(E.TASK_DEFINITION_EVENT, b"\xff\xff not a RayEvent")
    h.buffer.add_nowait(E.TASK_DEFINITION_EVENT, good.SerializeToString())
    await until(lambda: h.stats().delivered == 1)
    assert json.loads(h.sink.bodies[0]) == json.loads(protobuf_reference_dumps([good]))
    assert h.dropped("conversion_error") == 1


def test_converter_is_validated() -> None:
    with pytest.raises(
        ValueError,
        match=r"^PublisherConfig\.converter must be 'compiled' or 'protobuf', got 'x'\.$",
    ):
        PublisherConfig(converter="x")  # type: ignore[arg-type]
