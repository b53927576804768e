"""EventAggregatorClient against real in-process grpclib servers (real clock, 127.0.0.1): the
fake aggregator with hooks, and our agent where its answers are the point."""

from __future__ import annotations

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from tests.fake_aggregator import FakeAggregator, blocking_hook, serve
from trio_events import pb
from trio_events._bridge import run_asyncio
from trio_events._metrics import Metrics
from trio_events._refusal import (
    BUFFER_FULL,
    GRPC_DEFAULT_MAX_RECEIVE_BYTES,
    REFUSAL_KEY,
    TOO_LARGE,
)
from trio_events.agent._ingest import AgentConfig, AggregatorAgent
from trio_events.producer._client import (
    BackpressureError,
    EventAggregatorClient,
    ExportError,
    RequestTooLargeError,
    RetryableExportError,
    classify,
    parse_target,
)
from trio_events.producer._events import RayDriverJobDefinitionEvent, RayDriverJobLifecycleEvent
from trio_events.producer._recorder import open_recorder
from trio_events.producer._recorder_config import RecorderConfig

DEADLINE = 10  # seconds; every I/O test runs under it
JOB = b"\x01\x00\x00\x00"


def one_event_request() -> pb.AddEventsRequest:
    request = pb.AddEventsRequest()
    RayDriverJobLifecycleEvent(job_id=JOB, state="CREATED").serialize_into(
        request.events_data.events.add()
    )
    return request


def failing_hook(status: Status, message: str):
    async def hook(request: pb.AddEventsRequest) -> None:
        raise GRPCError(status, message)

    return hook


async def test_success_delivers_the_request() -> None:
    servicer = FakeAggregator()
    with trio.fail_after(DEADLINE):
        async with serve(servicer) as port, EventAggregatorClient(f"127.0.0.1:{port}") as client:
            await client.add_events(one_event_request(), timeout=5)
            await client.add_events(one_event_request(), timeout=5)  # same connection again
    assert [len(r.request.events_data.events) for r in servicer.received] == [1, 1]
    assert "authorization" not in servicer.received[0].metadata


async def test_bearer_token_is_sent_and_never_shown() -> None:
    servicer = FakeAggregator()
    with trio.fail_after(DEADLINE):
        async with serve(servicer) as port:
            client = EventAggregatorClient(f"127.0.0.1:{port}", token="s3cret")
            async with client:
                await client.add_events(one_event_request(), timeout=5)
    assert servicer.received[0].metadata["authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(client)


async def test_server_stopped_is_retryable_unavailable() -> None:
    with trio.fail_after(DEADLINE):
        async with serve(FakeAggregator()) as port:
            pass  # the port is free again: nothing listens there now
        async with EventAggregatorClient(f"127.0.0.1:{port}") as client:  # opens its own loop
            with pytest.raises(RetryableExportError) as caught:
                await client.add_events(one_event_request(), timeout=5)
    assert caught.value.reason == "unavailable"
    assert caught.value.retryable
    assert not caught.value.backpressure


@pytest.mark.parametrize(
    ("status", "error_type", "reason", "retryable"),
    [
        (Status.RESOURCE_EXHAUSTED, BackpressureError, "resource_exhausted", True),
        (Status.UNAVAILABLE, RetryableExportError, "unavailable", True),
        (Status.UNAUTHENTICATED, ExportError, "unauthenticated", False),
        (Status.INVALID_ARGUMENT, ExportError, "rejected", False),
        (Status.UNIMPLEMENTED, ExportError, "unimplemented", False),
    ],
)
async def test_grpc_status_mapping(status, error_type, reason, retryable) -> None:
    servicer = FakeAggregator()
    servicer.hook = failing_hook(status, "the aggregator says no")
    with trio.fail_after(DEADLINE):
        async with serve(servicer) as port, EventAggregatorClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(ExportError) as caught:
                await client.add_events(one_event_request(), timeout=5)
    assert type(caught.value) is error_type
    assert caught.value.reason == reason
    assert caught.value.retryable is retryable
    assert caught.value.backpressure is (status is Status.RESOURCE_EXHAUSTED)
    assert "the aggregator says no" in str(caught.value)


async def test_deadline_is_enforced_and_retryable() -> None:
    servicer = FakeAggregator()
    servicer.hook, release = blocking_hook()
    with trio.fail_after(DEADLINE):
        async with serve(servicer) as port, EventAggregatorClient(f"127.0.0.1:{port}") as client:
            started = trio.current_time()
            with pytest.raises(RetryableExportError) as caught:
                await client.add_events(one_event_request(), timeout=0.2)
            elapsed = trio.current_time() - started
            await run_asyncio(_set, release)  # let the server finish before it closes
    assert caught.value.reason == "deadline"
    assert 0.2 <= elapsed < 2


async def _set(event) -> None:
    event.set()


async def test_open_recorder_exports_through_the_real_client() -> None:
    servicer = FakeAggregator()
    node_id = b"N" * 28
    with trio.fail_after(DEADLINE):
        async with serve(servicer) as port:
            config = RecorderConfig(report_interval=60)  # only the exit flush will export
            async with open_recorder(
                config, target=f"127.0.0.1:{port}", node_id=node_id, token="t0k"
            ) as recorder:
                recorder.add(RayDriverJobLifecycleEvent(job_id=JOB, state="CREATED"))
                recorder.add(RayDriverJobLifecycleEvent(job_id=JOB, state="FINISHED"))
    [received] = servicer.received
    [event] = received.request.events_data.events
    assert event.node_id == node_id
    assert len(event.driver_job_lifecycle_event.state_transitions) == 2
    assert received.metadata["authorization"] == "Bearer t0k"
    assert recorder.statistics().exported == 2


async def test_a_client_that_is_not_open_says_how_to_open_it() -> None:
    client = EventAggregatorClient("127.0.0.1:1")
    with pytest.raises(RuntimeError, match=r"^this EventAggregatorClient is not open; use it as"):
        await client.add_events(one_event_request(), timeout=1)


async def test_a_client_opened_twice_stays_open_until_the_outer_exit() -> None:
    client = EventAggregatorClient("127.0.0.1:1")  # nothing listens on port 1
    with trio.fail_after(DEADLINE):
        async with client:
            async with client:  # e.g. a recorder's run() entering a client its caller opened
                pass
            with pytest.raises(RetryableExportError) as caught:  # open: it really tries
                await client.add_events(one_event_request(), timeout=5)
    assert caught.value.reason == "unavailable"
    with pytest.raises(RuntimeError, match=r"^this EventAggregatorClient was closed"):
        await client.add_events(one_event_request(), timeout=1)


async def test_closed_client_refuses_calls() -> None:
    client = EventAggregatorClient("127.0.0.1:1")
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(RuntimeError, match=r"^this EventAggregatorClient was closed; create"):
        await client.add_events(one_event_request(), timeout=1)
    with pytest.raises(
        ValueError, match=r"^timeout must be a positive number of seconds, got 0\.$"
    ):
        await client.add_events(one_event_request(), timeout=0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [("127.0.0.1:50051", ("127.0.0.1", 50051)), ("[::1]:9", ("::1", 9)), ("host:1", ("host", 1))],
)
def test_parse_target(target, expected) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["127.0.0.1", ":50051", "h:0", "h:70000", "h:x", "[zz]:1"])
def test_parse_target_rejects(target) -> None:
    with pytest.raises(ValueError, match=r"is not HOST:PORT; pass e\.g\. 127\.0\.0\.1:50051"):
        parse_target(target)


def test_classify_transport_errors_and_bugs() -> None:
    refused = classify(ConnectionRefusedError(111, "refused"))
    assert refused is not None
    assert refused.retryable
    assert refused.reason == "unavailable"
    reset = classify(StreamTerminatedError("Connection lost"))
    assert reset is not None
    assert reset.reason == "unavailable"
    late = classify(TimeoutError())
    assert late is not None
    assert late.retryable
    assert late.reason == "deadline"
    assert classify(KeyError("a bug")) is None


def test_bad_token_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^token must be a non-empty single line"):
        EventAggregatorClient("127.0.0.1:1", token="a\nb")


# --- the client owns its asyncio loop for the recorder's whole lifetime -----------------------


async def serve_until(
    servicer: FakeAggregator, stop: trio.Event, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """Serve from a task of its own (so the test's task has no asyncio loop) until ``stop``."""
    async with serve(servicer) as port:
        task_status.started(port)
        await stop.wait()


async def test_flush_inside_open_recorder_as_the_docs_show_it() -> None:
    servicer, stop = FakeAggregator(), trio.Event()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as servers:
            port = await servers.start(serve_until, servicer, stop)
            config = RecorderConfig(report_interval=60)  # only flush() and the exit export
            async with open_recorder(config, target=f"127.0.0.1:{port}", node_id=b"N" * 28) as rec:
                rec.add(RayDriverJobLifecycleEvent(job_id=JOB, state="CREATED"))
                assert await rec.flush()
                assert len(servicer.received) == 1  # delivered by flush(), not by the exit
            stop.set()
    assert rec.statistics().exported == 1


async def test_flush_from_other_tasks_during_the_recorders_lifetime() -> None:
    servicer, stop = FakeAggregator(), trio.Event()
    results: list[bool] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as servers:
            port = await servers.start(serve_until, servicer, stop)
            config = RecorderConfig(report_interval=60)
            async with open_recorder(config, target=f"127.0.0.1:{port}", node_id=b"N" * 28) as rec:

                async def add_and_flush() -> None:
                    rec.add(RayDriverJobLifecycleEvent(job_id=JOB, state="CREATED"))
                    results.append(await rec.flush())

                async with trio.open_nursery() as workers:
                    workers.start_soon(add_and_flush)
                    workers.start_soon(add_and_flush)
                assert results == [True, True]
                sent = [e for r in servicer.received for e in r.request.events_data.events]
                transitions = [e.driver_job_lifecycle_event.state_transitions for e in sent]
                assert sum(map(len, transitions)) == 2
            stop.set()
    assert rec.statistics().exported == 2


# --- RESOURCE_EXHAUSTED: too large or full, from trailing metadata or gRPC's meaning --------


async def test_our_agent_says_too_large_or_full_and_the_client_tells_them_apart() -> None:
    config = AgentConfig(max_message_bytes=2000, buffer_size=1, on_full="reject")
    agent = AggregatorAgent(config, metrics=Metrics())
    agent.buffer.open_consumer("pub")
    big = pb.AddEventsRequest()
    RayDriverJobDefinitionEvent(job_id=JOB, entrypoint="x" * 5000).serialize_into(
        big.events_data.events.add()
    )
    two = one_event_request()
    two.events_data.events.append(two.events_data.events[0])
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(agent.run)
            async with EventAggregatorClient(f"127.0.0.1:{port}") as client:
                with pytest.raises(RequestTooLargeError) as too_large:
                    await client.add_events(big, timeout=5)
                with pytest.raises(BackpressureError) as full:
                    await client.add_events(two, timeout=5)  # 2 events, room for 1
            nursery.cancel_scope.cancel()
    assert too_large.value.too_large
    assert too_large.value.backpressure
    assert "more than this server's limit of 2000" in str(too_large.value)
    assert not full.value.too_large
    assert full.value.backpressure


@pytest.mark.parametrize(
    ("trailers", "size", "too_large"),
    [
        ({REFUSAL_KEY: TOO_LARGE}, 10, True),  # our agent says so, whatever the size
        ({REFUSAL_KEY: BUFFER_FULL}, 30_000_000, False),
        ({}, 10, False),  # a server that gives no reason (Ray's agent): by gRPC's meaning
        (None, GRPC_DEFAULT_MAX_RECEIVE_BYTES + 1, True),
    ],
)
def test_classify_resource_exhausted(trailers, size, too_large) -> None:
    error = classify(
        GRPCError(Status.RESOURCE_EXHAUSTED, "no"), trailing_metadata=trailers, request_bytes=size
    )
    assert error is not None
    assert error.backpressure
    assert error.retryable
    assert error.too_large is too_large
    assert type(error) is (RequestTooLargeError if too_large else BackpressureError)
