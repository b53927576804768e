"""AggregatorAgent: its servicers in memory (grpclib's ChannelFor) where the socket is not the
point, and over real sockets on 127.0.0.1 with grpclib (through trio-asyncio) and grpcio (in a
worker thread) as two independent clients where it is. Every test runs under a deadline."""

from __future__ import annotations

import gc
import logging
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import grpc
import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from trio_events import pb
from trio_events._metrics import Metrics
from trio_events._refusal import BUFFER_FULL, REFUSAL_KEY, TOO_LARGE
from trio_events.agent._ingest import (
    AgentConfig,
    AggregatorAgent,
    _EventAggregatorServicer,
    _ReporterServicer,
)
from trio_events.agent._task_metadata import TaskMetadataStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from grpclib._typing import IServable

    from trio_events.agent import EventConsumer

ADD_EVENTS = "/ray.rpc.events.EventAggregatorService/AddEvents"
HEALTH_CHECK = "/ray.rpc.ReporterService/HealthCheck"
OTLP_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
DEADLINE = 20  # seconds, for every test that does I/O


@attrs.frozen
class Running:
    agent: AggregatorAgent
    port: int
    metrics: Metrics
    consumers: dict[str, EventConsumer]


def _agent(
    config: AgentConfig | None,
    consumers: Sequence[str],
    publishers_enabled: bool,
    task_metadata: Sequence[TaskMetadataStore],
) -> tuple[AggregatorAgent, Metrics, dict[str, EventConsumer]]:
    """An agent with its own metrics and a consumer handle for each of ``consumers``."""
    metrics = Metrics()
    agent = AggregatorAgent(
        config or AgentConfig(),
        metrics=metrics,
        publishers_enabled=publishers_enabled,
        task_metadata=task_metadata,
    )
    return agent, metrics, {name: agent.buffer.open_consumer(name) for name in consumers}


@asynccontextmanager
async def running_agent(
    config: AgentConfig | None = None,
    *,
    consumers: Sequence[str] = ("pub",),
    publishers_enabled: bool = True,
    task_metadata: Sequence[TaskMetadataStore] = (),
) -> AsyncIterator[Running]:
    agent, metrics, handles = _agent(config, consumers, publishers_enabled, task_metadata)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(agent.run)
        yield Running(agent, port, metrics, handles)
        nursery.cancel_scope.cancel()


@attrs.frozen
class InMemory:
    """An agent whose servicers answer through grpclib's in-memory ChannelFor: no socket."""

    agent: AggregatorAgent
    metrics: Metrics
    consumers: dict[str, EventConsumer]

    async def add_events(self, req: pb.AddEventsRequest) -> pb.AddEventsReply:
        error, reply, _ = await self.call(req)
        if error is not None:
            raise error
        assert reply is not None
        return reply

    async def refusal(self, req: pb.AddEventsRequest) -> tuple[GRPCError, dict[str, str]]:
        """The error of a call that must fail, and the trailing metadata that came with it."""
        error, _, trailers = await self.call(req)
        assert error is not None
        return error, trailers

    async def call(
        self, req: pb.AddEventsRequest
    ) -> tuple[GRPCError | None, pb.AddEventsReply | None, dict[str, str]]:
        async def call() -> tuple[GRPCError | None, pb.AddEventsReply | None, dict[str, str]]:
            servicers: list[IServable] = [
                _EventAggregatorServicer(self.agent),
                _ReporterServicer(self.agent),
            ]
            async with ChannelFor(servicers) as channel:
                method = pb.EventAggregatorServiceStub(channel).AddEvents
                async with method.open(timeout=10) as stream:
                    await stream.send_message(req, end=True)
                    try:
                        reply = await stream.recv_message()
                    except GRPCError as exc:
                        return exc, None, _as_dict(stream.trailing_metadata)
                return None, reply, _as_dict(stream.trailing_metadata)

        result: tuple[GRPCError | None, pb.AddEventsReply | None, dict[str, str]]
        result = await trio_asyncio.aio_as_trio(call)()
        return result


def _as_dict(metadata: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in cast("dict[str, str]", metadata or {}).items()}


@asynccontextmanager
async def in_memory_agent(
    config: AgentConfig | None = None,
    *,
    consumers: Sequence[str] = ("pub",),
    publishers_enabled: bool = True,
    task_metadata: Sequence[TaskMetadataStore] = (),
) -> AsyncIterator[InMemory]:
    agent, metrics, handles = _agent(config, consumers, publishers_enabled, task_metadata)
    async with trio_asyncio.open_loop():
        yield InMemory(agent, metrics, handles)


def event(i: int, event_type: int = pb.RayEvent.TASK_LIFECYCLE_EVENT) -> pb.RayEvent:
    """Event ``i``; ``event_type`` may be a number newer than our schema (an open enum)."""
    as_enum = cast("pb.RayEvent.EventType.ValueType", event_type)
    return pb.RayEvent(event_id=b"id-%d" % i, event_type=as_enum, message=f"event {i}")


def request(*events: pb.RayEvent) -> pb.AddEventsRequest:
    return pb.AddEventsRequest(events_data=pb.RayEventsData(events=events))


# ---- the two clients --------------------------------------------------------------------------


async def grpclib_add_events(
    port: int, req: pb.AddEventsRequest, metadata: dict[str, str] | None = None
) -> pb.AddEventsReply:
    async def call() -> pb.AddEventsReply:
        async with Channel("127.0.0.1", port) as channel:
            stub = pb.EventAggregatorServiceStub(channel)
            return await stub.AddEvents(req, metadata=metadata, timeout=10)

    reply: pb.AddEventsReply = await trio_asyncio.aio_as_trio(call)()
    return reply


async def grpclib_health_check(port: int, metadata: dict[str, str] | None = None) -> None:
    async def call() -> None:
        async with Channel("127.0.0.1", port) as channel:
            stub = pb.ReporterServiceStub(channel)
            await stub.HealthCheck(pb.HealthCheckRequest(), metadata=metadata, timeout=10)

    await trio_asyncio.aio_as_trio(call)()


def _grpcio_calls(
    port: int, calls: Sequence[tuple[str, bytes]], metadata: Sequence[tuple[str, str]] | None
) -> list[tuple[grpc.StatusCode, str | None]]:
    """Blocking: make ``calls`` in order over one grpcio channel (one connection)."""
    outcomes: list[tuple[grpc.StatusCode, str | None]] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for path, payload in calls:
            method = channel.unary_unary(
                path, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            try:
                method(payload, timeout=10, metadata=metadata)
            except grpc.RpcError as exc:
                outcomes.append((exc.code(), exc.details()))
            else:
                outcomes.append((grpc.StatusCode.OK, None))
    return outcomes


async def grpcio_calls(
    port: int, *calls: tuple[str, bytes], metadata: Sequence[tuple[str, str]] | None = None
) -> list[tuple[grpc.StatusCode, str | None]]:
    return await trio.to_thread.run_sync(
        _grpcio_calls, port, calls, metadata, abandon_on_cancel=True
    )


def request_of_size(size: int) -> bytes:
    padding = size
    while True:
        data = request(pb.RayEvent(message="x" * padding)).SerializeToString()
        if len(data) == size:
            return data
        padding += size - len(data)


def taken(running: Running | InMemory, consumer: str = "pub") -> list[pb.RayEvent]:
    try:
        batch = running.consumers[consumer].receive_nowait()
    except trio.WouldBlock:
        return []
    events = [pb.RayEvent.FromString(b) for b in batch.blobs]
    assert batch.event_types == [e.event_type for e in events]
    return events


# ---- serving ----------------------------------------------------------------------------------


async def test_add_events_buffers_each_event_serialized() -> None:
    sent = [event(0, 1), event(1, 2), event(2, 15)]
    with trio.fail_after(DEADLINE):
        async with in_memory_agent() as running:
            reply = await running.add_events(request(*sent))
            assert reply == pb.AddEventsReply()  # Ray's reply: empty, status never set
            assert taken(running) == sent
            assert running.metrics.value("ray_aggregator_agent_events_received_total") == 3


async def test_health_check_answers_both_clients() -> None:
    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            await grpclib_health_check(running.port)
            payload = pb.HealthCheckRequest().SerializeToString()
            assert await grpcio_calls(running.port, (HEALTH_CHECK, payload)) == [
                (grpc.StatusCode.OK, None)
            ]


async def test_grpcio_client_add_events_and_empty_request() -> None:
    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            outcomes = await grpcio_calls(
                running.port,
                (ADD_EVENTS, request(event(0)).SerializeToString()),
                (ADD_EVENTS, b""),  # an empty AddEventsRequest is accepted, as in Ray
            )
            assert outcomes == [(grpc.StatusCode.OK, None)] * 2
            assert taken(running) == [event(0)]


async def test_unknown_fields_and_enum_values_pass_through() -> None:
    unknown_field = b"\xb8\x3e\x2a"  # field 999, varint 42: from a newer Ray
    raw = event(0, event_type=77).SerializeToString() + unknown_field
    newer = pb.RayEvent.FromString(raw)
    with trio.fail_after(DEADLINE):
        async with in_memory_agent() as running:
            await running.add_events(request(newer))
            batch = running.consumers["pub"].receive_nowait()
    assert batch.event_types == [77]
    assert unknown_field in batch.blobs[0]
    assert pb.RayEvent.FromString(batch.blobs[0]).SerializeToString() == batch.blobs[0]


async def test_port_is_bound_before_started_and_released_after() -> None:
    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            assert running.port > 0
            assert running.agent.port == running.port
            with socket.create_connection(("127.0.0.1", running.port), timeout=5):
                pass
        assert running.agent.port is None


async def test_run_opens_its_own_asyncio_loop_when_none_is_running() -> None:
    agent = AggregatorAgent(AgentConfig(), metrics=Metrics())
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(agent.run)
            payload = pb.HealthCheckRequest().SerializeToString()
            assert await grpcio_calls(port, (HEALTH_CHECK, payload)) == [(grpc.StatusCode.OK, None)]
            nursery.cancel_scope.cancel()


async def test_port_in_use_fails_before_started() -> None:
    with socket.socket() as taken_socket:
        taken_socket.bind(("127.0.0.1", 0))
        taken_socket.listen()
        port = taken_socket.getsockname()[1]
        agent = AggregatorAgent(AgentConfig(port=port), metrics=Metrics())
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                with pytest.raises(OSError, match="in use"):
                    await nursery.start(agent.run)


async def test_concurrent_clients_keep_every_event_in_per_client_order() -> None:
    per_client, requests_each = 5, 20

    def client_request(client: int, n: int) -> pb.AddEventsRequest:
        return request(*(event(client * 10_000 + n * per_client + i) for i in range(per_client)))

    async def grpclib_client(port: int, client: int) -> None:
        for n in range(requests_each):
            await grpclib_add_events(port, client_request(client, n))

    async def grpcio_client(port: int, client: int) -> None:
        calls = [
            (ADD_EVENTS, client_request(client, n).SerializeToString())
            for n in range(requests_each)
        ]
        assert await grpcio_calls(port, *calls) == [(grpc.StatusCode.OK, None)] * requests_each

    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            async with trio.open_nursery() as nursery:
                for client in range(4):
                    nursery.start_soon(grpclib_client, running.port, client)
                for client in range(4, 7):
                    nursery.start_soon(grpcio_client, running.port, client)
            events = taken(running)
    ids = [int(e.event_id.split(b"-")[1]) for e in events]
    assert len(ids) == len(set(ids)) == 7 * requests_each * per_client
    for client in range(7):
        mine = [i for i in ids if i // 10_000 == client]
        assert mine == sorted(mine)


async def test_shutdown_closes_client_connections() -> None:
    payload = pb.HealthCheckRequest().SerializeToString()
    with trio.fail_after(DEADLINE):
        async with trio_asyncio.open_loop():
            agent = AggregatorAgent(AgentConfig(), metrics=Metrics())
            async with trio.open_nursery() as nursery:
                port = await nursery.start(agent.run)
                channel = Channel("127.0.0.1", port)
                stub = pb.ReporterServiceStub(channel)
                await trio_asyncio.aio_as_trio(stub.HealthCheck)(pb.HealthCheckRequest())
                nursery.cancel_scope.cancel()
            # The server closed its side: a grpcio client cannot reach it any more.
            outcomes = await grpcio_calls(port, (HEALTH_CHECK, payload))
            assert outcomes[0][0] is grpc.StatusCode.UNAVAILABLE
            channel.close()
    gc.collect()  # an unclosed server transport would warn (an error under filterwarnings)


# ---- bad input --------------------------------------------------------------------------------


async def test_malformed_request_is_invalid_argument_and_server_keeps_serving() -> None:
    truncated = b"\x0a\x05\x0a"  # events_data says 5 bytes follow; 1 does
    bad_utf8 = request(pb.RayEvent(message="x")).SerializeToString().replace(b"x", b"\xff")
    good = request(event(0)).SerializeToString()
    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            outcomes = await grpcio_calls(
                running.port, (ADD_EVENTS, truncated), (ADD_EVENTS, bad_utf8), (ADD_EVENTS, good)
            )
            assert [code for code, _ in outcomes] == [
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.OK,
            ]
            assert outcomes[0][1] is not None
            assert outcomes[0][1].startswith("The AddEventsRequest could not be parsed")
            assert taken(running) == [event(0)]
            labels = {"reason": "malformed"}
            assert running.metrics.value("trio_events_agent_invalid_requests_total", labels) == 2
            assert running.metrics.value("ray_aggregator_agent_events_received_total") == 1


async def test_oversized_request_is_resource_exhausted_at_rays_default_limit() -> None:
    limit = AgentConfig().max_message_bytes
    assert limit == 20 * 1024 * 1024
    at_limit = request_of_size(limit)
    over = b"\x00" * (limit + 1)
    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            outcomes = await grpcio_calls(
                running.port, (ADD_EVENTS, over), (ADD_EVENTS, at_limit), (HEALTH_CHECK, over)
            )
            codes = [code for code, _ in outcomes]
            assert codes == [
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.OK,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ]
            assert outcomes[0][1] == (
                f"The request message is {limit + 1} bytes, more than this server's limit of "
                f"{limit}."
            )
            assert len(running.agent.buffer) == 1
            labels = {"reason": "oversized"}
            assert running.metrics.value("trio_events_agent_invalid_requests_total", labels) == 2


async def test_oversized_request_is_refused_as_too_large_in_its_trailing_metadata() -> None:
    config = AgentConfig(max_message_bytes=1000)
    with trio.fail_after(DEADLINE):
        async with in_memory_agent(config) as running:
            error, trailers = await running.refusal(request(pb.RayEvent(message="x" * 2000)))
            assert error.status is Status.RESOURCE_EXHAUSTED
            assert trailers[REFUSAL_KEY] == TOO_LARGE
            _, _, trailers = await running.call(request(event(1)))
            assert REFUSAL_KEY not in trailers
            assert taken(running) == [event(1)]


async def test_unknown_method_is_unimplemented_and_nothing_else_is_disturbed() -> None:
    with trio.fail_after(DEADLINE):
        async with running_agent() as running:
            outcomes = await grpcio_calls(
                running.port,
                (OTLP_EXPORT, b"\x0a\x00"),
                (ADD_EVENTS, request(event(0)).SerializeToString()),
            )
            assert outcomes == [
                (grpc.StatusCode.UNIMPLEMENTED, "Method not found"),
                (grpc.StatusCode.OK, None),
            ]
            assert taken(running) == [event(0)]


# ---- authentication ---------------------------------------------------------------------------


async def test_bearer_token_is_required_when_configured() -> None:
    config = AgentConfig(auth_token="s3cret")
    good = request(event(0)).SerializeToString()
    with trio.fail_after(DEADLINE):
        async with running_agent(config) as running:
            for metadata in (None, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                with pytest.raises(GRPCError) as caught:
                    await grpclib_add_events(running.port, request(event(1)), metadata)
                assert caught.value.status is Status.UNAUTHENTICATED
            with pytest.raises(GRPCError) as caught:
                await grpclib_health_check(running.port)
            assert caught.value.status is Status.UNAUTHENTICATED
            outcomes = await grpcio_calls(running.port, (ADD_EVENTS, good))
            assert outcomes[0][0] is grpc.StatusCode.UNAUTHENTICATED
            assert len(running.agent.buffer) == 0

            await grpclib_add_events(
                running.port, request(event(2)), {"authorization": "Bearer s3cret"}
            )
            await grpclib_health_check(running.port, {"authorization": "Bearer s3cret"})
            outcomes = await grpcio_calls(
                running.port, (ADD_EVENTS, good), metadata=[("authorization", "Bearer s3cret")]
            )
            assert outcomes == [(grpc.StatusCode.OK, None)]
            assert taken(running) == [event(2), event(0)]
            labels = {"reason": "unauthenticated"}
            assert running.metrics.value("trio_events_agent_invalid_requests_total", labels) == 5


def test_auth_token_is_not_in_the_config_repr() -> None:
    assert "s3cret" not in repr(AgentConfig(auth_token="s3cret"))


# ---- overflow policies and no-publisher mode ---------------------------------------------------


async def test_drop_oldest_is_the_default_and_counts_evictions() -> None:
    with trio.fail_after(DEADLINE):
        async with in_memory_agent(AgentConfig(buffer_size=2)) as running:
            await running.add_events(request(event(0, 1), event(1), event(2)))
            assert taken(running) == [event(1), event(2)]
            labels = {"consumer": "pub", "event_type": "TASK_DEFINITION_EVENT"}
            dropped = "ray_aggregator_agent_queue_dropped_events_total"
            assert running.metrics.value(dropped, labels) == 1


async def test_reject_policy_refuses_a_request_that_would_evict_unread_events() -> None:
    config = AgentConfig(buffer_size=4, on_full="reject")
    with trio.fail_after(DEADLINE):
        async with in_memory_agent(config) as running:
            buffer = running.agent.buffer
            await running.add_events(request(event(0), event(1), event(2)))
            before = buffer.statistics()
            error, trailers = await running.refusal(request(event(3), event(4)))
            assert error.status is Status.RESOURCE_EXHAUSTED
            assert error.message == (
                "The aggregator's buffer has room for 1 more events, not 2; retry later."
            )
            assert trailers[REFUSAL_KEY] == BUFFER_FULL
            assert buffer.statistics() == before
            assert running.metrics.value("trio_events_agent_rejected_events_total") == 2
            assert running.metrics.value("ray_aggregator_agent_events_received_total") == 3

            assert len(taken(running)) == 3  # the publisher catches up: room again
            await running.add_events(request(event(3), event(4)))
            assert taken(running) == [event(3), event(4)]


async def test_without_publishers_events_are_accepted_counted_and_discarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_events.agent.ingest")
    with trio.fail_after(DEADLINE):
        async with in_memory_agent(consumers=(), publishers_enabled=False) as running:
            await running.add_events(request(event(0), event(1)))
            await running.add_events(request(event(2), event(3)))
            assert len(running.agent.buffer) == 0
            assert running.metrics.value("trio_events_agent_discarded_events_total") == 4
            assert running.metrics.value("ray_aggregator_agent_events_received_total") == 4
    discards = [r for r in caplog.records if "discarded" in r.getMessage()]
    assert len(discards) == 1


async def test_task_events_metadata_is_kept_for_publishers() -> None:
    store = TaskMetadataStore()
    attempts = [pb.TaskAttempt(task_id=b"t%d" % i, attempt_number=i) for i in range(3)]
    req = request(event(0))
    req.events_data.task_events_metadata.dropped_task_attempts.extend(attempts[:2])
    req2 = request()
    req2.events_data.task_events_metadata.dropped_task_attempts.extend(attempts[2:])
    with trio.fail_after(DEADLINE):
        async with in_memory_agent(task_metadata=[store]) as running:
            await running.add_events(req)
            await running.add_events(req2)
    assert list(store.take().dropped_task_attempts) == attempts
    assert len(store) == 0


# ---- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, r"^AgentConfig\.port must be between 0 and 65535, got 70000\.$"),
        (
            {"max_message_bytes": 0},
            r"^AgentConfig\.max_message_bytes must be a positive integer, got 0\.$",
        ),
        (
            {"on_full": "block"},
            r"^AgentConfig\.on_full must be 'drop_oldest' or 'reject', got 'block'\.$",
        ),
        (
            {"auth_token": " "},
            r"^AgentConfig\.auth_token must be None \(no authentication\) or non-empty\.$",
        ),
        (
            {"shutdown_timeout": -1.0},
            r"^AgentConfig\.shutdown_timeout must be >= 0 seconds, got -1\.0\.$",
        ),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AgentConfig(**kwargs)  # type: ignore[arg-type]


async def test_a_closed_buffer_answers_unavailable() -> None:
    """Ray's accounting: received = acknowledged + add failures (refused UNAVAILABLE)."""
    with trio.fail_after(DEADLINE):
        async with in_memory_agent() as running:
            await running.add_events(request(event(0), event(1), event(2)))
            running.agent.buffer.close()
            with pytest.raises(GRPCError) as caught:
                await running.add_events(request(event(0), event(1)))
            assert caught.value.status is Status.UNAVAILABLE
            value = running.metrics.value
            assert value("ray_aggregator_agent_events_buffer_add_failures_total") == 2
            assert value("trio_events_agent_acknowledged_events_total") == 3
            assert value("ray_aggregator_agent_events_received_total") == 5


# ---- shutdown: a second signal ----------------------------------------------------------------


async def test_hurry_cuts_the_drain_short_and_still_counts_everything() -> None:
    """What a second SIGTERM does: the drain ends at once; what is left is counted abandoned."""
    from trio_events._http_server import Request, Response

    refusals: list[float] = []
    refused_while_draining = trio.Event()

    async def refuse(request: Request) -> Response:
        refusals.append(trio.current_time())
        if len(refusals) >= 3:
            refused_while_draining.set()
        return Response.text(503, "not now")

    with trio.fail_after(20):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            summary = await _hurried(nursery, refuse, refused_while_draining)
    assert summary is not None
    assert (summary.delivered, summary.dropped, summary.abandoned) == (0, 0, 300)


async def _hurried(nursery: trio.Nursery, refuse: Any, refused: trio.Event) -> Any:
    from trio_events._http_server import serve_http
    from trio_events.agent._http_sink import HttpPublisherConfig
    from trio_events.agent._publisher import PublisherConfig
    from trio_events.agent._service import AgentService, Destination, ServiceConfig

    sink_port = await nursery.start(serve_http, refuse, "127.0.0.1", 0)
    destination = Destination(
        HttpPublisherConfig(url=f"http://127.0.0.1:{sink_port}/"),
        PublisherConfig(name="http_service", exposable_event_types=None, max_backoff=0.1),
    )
    service = AgentService(
        ServiceConfig(agent=AgentConfig(), destinations=(destination,), grace_period=600.0)
    )
    addresses = await nursery.start(service.run)
    await grpclib_add_events(addresses.grpc_port, request(*(event(i) for i in range(300))))
    service.request_stop()
    await refused.wait()  # draining: a 600 s grace period against a sink that says 503
    assert service.summary is None
    started = trio.current_time()
    service.hurry()
    summary = await service.wait_stopped()
    assert trio.current_time() - started < 5
    nursery.cancel_scope.cancel()
    return summary


# ---- bounded receiving ------------------------------------------------------------------------


async def test_streams_past_the_receive_budget_are_refused_and_slow_ones_time_out() -> None:
    """4 streams announce 900 KB each and hold it one byte short: 2 fit the 2 MiB budget and
    time out after receive_timeout; the 2 others are refused at once; all memory is released."""
    from tests.slow_grpc import slowloris

    config = AgentConfig(
        max_message_bytes=1024 * 1024, receive_budget_bytes=2 * 1024 * 1024, receive_timeout=0.5
    )
    with trio.fail_after(20):
        async with running_agent(config) as running:
            statuses = await slowloris(running.port, 1, 4, 900_000, None)
            assert statuses == {
                str(Status.RESOURCE_EXHAUSTED.value): 2,
                str(Status.DEADLINE_EXCEEDED.value): 2,
            }
            assert running.agent._budget.reserved == 0
            refused = running.metrics.value
            assert (
                refused("trio_events_agent_refused_streams_total", {"reason": "receive_budget"})
                == 2
            )
            assert (
                refused("trio_events_agent_refused_streams_total", {"reason": "receive_deadline"})
                == 2
            )
            # The agent goes on serving.
            await grpclib_add_events(running.port, request(event(1)))
            assert len(taken(running)) == 1


def test_receive_budget_must_fit_one_message() -> None:
    with pytest.raises(
        ValueError,
        match=r"^AgentConfig\.receive_budget_bytes \(10\) must be at least max_message_bytes \(20\), or no request that large could ever be received\.$",
    ):
        AgentConfig(max_message_bytes=20, receive_budget_bytes=10)


async def test_a_client_that_leaves_releases_what_its_streams_reserved() -> None:
    from tests.slow_grpc import slowloris

    config = AgentConfig(max_message_bytes=1024 * 1024, receive_timeout=600)
    with trio.fail_after(20):
        async with running_agent(config) as running:
            statuses = await slowloris(running.port, 2, 3, 900_000, 0.3)
            assert statuses == {"open": 6}  # held, unanswered, when the client went away
            # Released as grpclib cancels the handlers (the asyncio side sets no trio.Event).
            while running.agent._budget.reserved:  # noqa: ASYNC110
                await trio.sleep(0.01)
            gone = {"reason": "client_gone"}
            assert running.metrics.value("trio_events_agent_refused_streams_total", gone) == 6
