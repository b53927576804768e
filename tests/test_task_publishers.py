"""The GCS and dashboard-head publishers and their metadata stores, as Ray 2.60's.

Store tests follow Ray's ``test_task_events_metadata_buffer.py``; the GCS filtering test follows
``test_aggregator_agent.py::test_aggregator_agent_gcs_filtering_driver_job_events`` and the
service test ``::test_aggregator_agent_publish_to_both_gcs_and_http``. The GCS is a real grpclib
server on 127.0.0.1 (tests/fake_gcs.py); the dashboard head is an ``httpx.MockTransport``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from grpclib.client import Channel

from tests.fake_gcs import running_gcs
from trio_events import pb
from trio_events._bridge import asyncio_loop, run_asyncio
from trio_events._metrics import Metrics
from trio_events.agent import (
    TASK_EVENT_TYPES,
    AgentConfig,
    AgentService,
    DashboardHeadClient,
    DashboardHeadConfig,
    GcsPublisherConfig,
    GcsTaskEventsClient,
    MultiConsumerEventBuffer,
    PublisherConfig,
    RayEventPublisher,
    ServiceConfig,
    TaskEventsDestination,
)
from trio_events.agent._gcs_publisher import AddEventsRequestEncoder
from trio_events.agent._task_metadata import TaskMetadataStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trio_events.agent._sink import PublishClient

DEADLINE = 20  # seconds, for every test with sockets
_E = pb.RayEvent


def attempts(*pairs: tuple[bytes, int]) -> pb.TaskEventsMetadata:
    metadata = pb.TaskEventsMetadata()
    for task_id, attempt in pairs:
        metadata.dropped_task_attempts.add(task_id=task_id, attempt_number=attempt)
    return metadata


def ray_event(i: int, event_type: int = _E.TASK_DEFINITION_EVENT) -> pb.RayEvent:
    event = pb.RayEvent(event_id=b"id-%d" % i, event_type=event_type)  # type: ignore[arg-type]
    if event_type == _E.TASK_DEFINITION_EVENT:
        event.task_definition_event.task_id = b"t%d" % i
        event.task_definition_event.task_name = f"task {i}"
    elif event_type == _E.DRIVER_JOB_DEFINITION_EVENT:
        event.driver_job_definition_event.job_id = b"\x01\x00\x00\x00"
    return event


# ---- the metadata store (Ray's TaskEventsMetadataBuffer) --------------------------------------


def test_merge_and_get() -> None:
    store = TaskMetadataStore()
    store.add(attempts((b"a", 0), (b"b", 1)))
    store.add(attempts((b"c", 0), (b"d", 2)))
    got = store.take()
    assert [(a.task_id, a.attempt_number) for a in got.dropped_task_attempts] == [
        (b"a", 0),
        (b"b", 1),
        (b"c", 0),
        (b"d", 2),
    ]
    assert len(store) == 0
    assert list(store.take().dropped_task_attempts) == []


@pytest.mark.parametrize(
    ("max_entries", "per_entry", "total", "dropped", "entries"),
    [(100, 2, 3, 0, 2), (100, 5, 15, 0, 3), (2, 1, 4, 2, 2)],
)
def test_buffer_merge_and_overflow(
    max_entries: int, per_entry: int, total: int, dropped: int, entries: int
) -> None:
    metrics = Metrics()
    store = TaskMetadataStore(
        max_entries=max_entries, attempts_per_entry=per_entry, metrics=metrics, consumer="ray_gcs"
    )
    store.add(attempts(*((b"t%d" % i, i) for i in range(total))))
    assert store.dropped_attempts == dropped
    ray_name = "ray_aggregator_agent_ray_gcs_task_metadata_buffer_dropped_attempts_total"
    assert metrics.value(ray_name) == dropped
    ours = "trio_events_task_metadata_attempts_total"
    assert metrics.value(ours, {"consumer": "ray_gcs", "outcome": "received"}) == total
    sizes = []
    while len(store):
        sizes.append(len(store.take().dropped_task_attempts))
    assert len(sizes) == entries
    assert sum(sizes) == total - dropped
    assert all(size <= per_entry for size in sizes)
    assert metrics.value(ours, {"consumer": "ray_gcs", "outcome": "sent"}) == total - dropped


# ---- the request body ---------------------------------------------------------------------------


def test_body_is_byte_for_byte_what_ray_serializes() -> None:
    store = TaskMetadataStore()
    store.add(attempts((b"lost", 3)))
    events = [ray_event(1), ray_event(2)]
    body = AddEventsRequestEncoder(store).encode([e.SerializeToString() for e in events])
    expected = pb.AddEventsRequest(
        events_data=pb.RayEventsData(events=events, task_events_metadata=attempts((b"lost", 3)))
    )
    assert body == expected.SerializeToString()
    # No event and no attempt: nothing to send. Attempts alone: a metadata-only request.
    assert AddEventsRequestEncoder(TaskMetadataStore()).encode([]) is None
    store.add(attempts((b"x", 0)))
    only = pb.AddEventsRequest.FromString(AddEventsRequestEncoder(store).encode([]) or b"")
    assert list(only.events_data.events) == []
    assert [a.task_id for a in only.events_data.task_events_metadata.dropped_task_attempts] == [
        b"x"
    ]


# ---- the GCS publisher --------------------------------------------------------------------------


async def _publish_all(
    client: PublishClient,
    blobs: Sequence[tuple[int, bytes]],
    store: TaskMetadataStore,
    *,
    max_retries: int = -1,
) -> RayEventPublisher:
    """Run one publisher with ``client`` until it delivered or dropped every event."""
    buffer = MultiConsumerEventBuffer(100, 10, metrics=Metrics())
    publisher = RayEventPublisher(
        PublisherConfig(
            name="ray_gcs",
            exposable_event_types=TASK_EVENT_TYPES,
            initial_backoff=0.01,
            max_retries=max_retries,
        ),
        client,
        buffer,
        metrics=Metrics(),
        rng=random.Random(1),
        encoder=AddEventsRequestEncoder(store),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        buffer.add_many_nowait([t for t, _ in blobs], [b for _, b in blobs])
        # Draining delivers everything unread (retrying while time allows), then run() returns.
        await publisher.drain(trio.current_time() + DEADLINE)
    return publisher


async def test_gcs_filtering_driver_job_events() -> None:
    events = [ray_event(0, _E.DRIVER_JOB_DEFINITION_EVENT), ray_event(1), ray_event(2)]
    store = TaskMetadataStore()
    store.add(attempts((b"gone", 1)))
    with trio.fail_after(DEADLINE):
        async with running_gcs() as gcs:
            client = GcsTaskEventsClient(GcsPublisherConfig(gcs.address))
            blobs = [(e.event_type, e.SerializeToString()) for e in events]
            publisher = await _publish_all(client, blobs, store)
    (request,) = gcs.requests
    assert list(request.events_data.events) == events[1:]
    assert [a.task_id for a in request.events_data.task_events_metadata.dropped_task_attempts] == [
        b"gone"
    ]
    stats = publisher.statistics()
    assert (stats.delivered, stats.filtered, stats.dropped) == (2, 1, 0)


async def test_gcs_failures_are_retried_with_the_same_body() -> None:
    store = TaskMetadataStore()
    store.add(attempts((b"gone", 1)))
    with trio.fail_after(DEADLINE):
        async with running_gcs() as gcs:
            gcs.script = ["unavailable", "status"]
            client = GcsTaskEventsClient(GcsPublisherConfig(gcs.address))
            event = ray_event(1)
            publisher = await _publish_all(
                client, [(event.event_type, event.SerializeToString())], store
            )
    assert len(gcs.bodies) == 3
    assert gcs.bodies[0] == gcs.bodies[1] == gcs.bodies[2]  # the attempts are in every retry
    assert len(gcs.requests) == 1
    stats = publisher.statistics()
    assert (stats.delivered, stats.attempts, stats.dropped) == (1, 3, 0)


async def test_gcs_gives_up_after_max_retries_and_counts_the_drop() -> None:
    with trio.fail_after(DEADLINE):
        async with running_gcs() as gcs:
            gcs.script = ["unavailable"] * 3
            client = GcsTaskEventsClient(GcsPublisherConfig(gcs.address))
            event = ray_event(1)
            publisher = await _publish_all(
                client,
                [(event.event_type, event.SerializeToString())],
                TaskMetadataStore(),
                max_retries=2,
            )
    stats = publisher.statistics()
    assert (stats.delivered, stats.dropped, stats.attempts) == (0, 1, 3)
    assert gcs.requests == []


async def test_gcs_down_is_a_retryable_connect_error() -> None:
    async with asyncio_loop():
        client = GcsTaskEventsClient(GcsPublisherConfig("127.0.0.1:1", timeout=1.0))
        outcome = await client.publish(b"")
        await client.aclose()
    assert outcome.retryable
    assert outcome.reason == "connect_error"


# ---- the dashboard-head publisher ---------------------------------------------------------------


async def test_dashboard_head_posts_the_request_to_the_address_in_the_gcs_kv() -> None:
    posted: list[httpx.Request] = []
    fail_next = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        if fail_next:
            fail_next.pop()
            raise httpx.ConnectError("the head moved", request=request)
        posted.append(request)
        return httpx.Response(200)

    with trio.fail_after(DEADLINE):
        async with running_gcs() as gcs:
            client = DashboardHeadClient(
                DashboardHeadConfig(gcs.address), transport=httpx.MockTransport(handler)
            )
            unknown = await client.publish(b"body")
            gcs.kv[(b"dashboard", b"dashboard")] = b"127.0.0.1:8265"
            moved = await client.publish(b"body")
            assert client.endpoint is None  # a connection error forgets the address
            delivered = await client.publish(b"body")
            await client.aclose()
    assert (unknown.reason, unknown.retryable) == ("dashboard_unknown", True)
    assert (moved.reason, moved.retryable) == ("connect_error", True)
    assert delivered.ok
    assert gcs.kv_gets == 3
    (request,) = posted
    assert str(request.url) == "http://127.0.0.1:8265/api/task_events"
    assert request.content == b"body"
    assert request.headers["content-type"] == "application/octet-stream"


async def test_dashboard_head_http_errors_are_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="no task events head")

    with trio.fail_after(DEADLINE):
        async with running_gcs() as gcs:
            gcs.kv[(b"dashboard", b"dashboard")] = b"http://head:8265"
            client = DashboardHeadClient(
                DashboardHeadConfig(gcs.address), transport=httpx.MockTransport(handler)
            )
            outcome = await client.publish(b"body")
            await client.aclose()
    assert (outcome.reason, outcome.retryable, outcome.status) == ("http_404", True, 404)


# ---- the service: AddEvents in, task events and dropped attempts out to the GCS ----------------


async def test_publish_to_gcs_through_the_agent() -> None:
    request = pb.AddEventsRequest(
        events_data=pb.RayEventsData(
            events=[ray_event(1), ray_event(2, _E.DRIVER_JOB_DEFINITION_EVENT)],
            task_events_metadata=attempts((b"lost", 0)),
        )
    )
    with trio.fail_after(DEADLINE):
        async with running_gcs() as gcs, trio.open_nursery() as nursery:
            destination = TaskEventsDestination(
                GcsPublisherConfig(gcs.address),
                PublisherConfig(name="ray_gcs", exposable_event_types=TASK_EVENT_TYPES),
            )
            service = AgentService(
                ServiceConfig(agent=AgentConfig(port=0), task_destinations=(destination,))
            )
            addresses = await nursery.start(service.run)

            async def send() -> None:
                async with Channel("127.0.0.1", addresses.grpc_port) as channel:
                    await pb.EventAggregatorServiceStub(channel).AddEvents(request, timeout=10)

            await run_asyncio(send)  # acknowledged: the events are in the buffer
            service.request_stop()  # the shutdown drains them to the GCS
    (received,) = gcs.requests
    assert [e.event_id for e in received.events_data.events] == [b"id-1"]
    metadata = received.events_data.task_events_metadata
    assert [(a.task_id, a.attempt_number) for a in metadata.dropped_task_attempts] == [(b"lost", 0)]
    assert service.summary is not None
    (stats,) = service.summary.publishers
    assert (stats.name, stats.delivered, stats.filtered) == ("ray_gcs", 1, 1)
    for outcome in ("received", "sent"):
        assert (
            service.metrics.value(
                "trio_events_task_metadata_attempts_total",
                {"consumer": "ray_gcs", "outcome": outcome},
            )
            == 1
        )


def test_task_destinations_expose_task_events_only() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Publisher ray_gcs sends task events only; its exposable_event_types must be "
        r"TASK_EVENT_TYPES \(Ray does not let them be changed\)\.$",
    ):
        TaskEventsDestination(GcsPublisherConfig("127.0.0.1:6379"), PublisherConfig(name="ray_gcs"))


# ---- the command line -------------------------------------------------------------------------


def test_ray_switches_turn_on_the_gcs_and_dashboard_head_publishers() -> None:
    from trio_events._cli._agent import service_config_from_args
    from trio_events._cli._main import build_parser

    env = {
        "RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISH_EVENTS_TO_GCS": "True",
        "RAY_enable_task_events_to_dashboard_head": "1",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_MAX_RETRIES": "4",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES": "ALL",  # HTTP only
        "TRIO_EVENTS_GCS_ADDRESS": "127.0.0.1:6379",
    }
    args = build_parser(env).parse_args(["agent"])
    config = service_config_from_args(args, env)
    gcs, head = config.task_destinations
    assert (gcs.publisher.name, head.publisher.name) == ("ray_gcs", "dashboard_head")
    assert gcs.client == GcsPublisherConfig("127.0.0.1:6379", timeout=3.0)
    assert head.client == DashboardHeadConfig("127.0.0.1:6379", timeout=3.0)
    assert gcs.publisher.exposable_event_types == TASK_EVENT_TYPES
    assert gcs.publisher.max_retries == head.publisher.max_retries == 4
    assert _agent_destinations([]) == ()  # both off by default, as in Ray


def _agent_destinations(argv: list[str]) -> tuple[TaskEventsDestination, ...]:
    from trio_events._cli._agent import service_config_from_args
    from trio_events._cli._main import build_parser

    return service_config_from_args(
        build_parser({}).parse_args(["agent", *argv]), {}
    ).task_destinations


def test_publishing_to_the_gcs_needs_its_address() -> None:
    with pytest.raises(
        ValueError,
        match=r"^--publish-to-gcs needs --gcs-address \(or TRIO_EVENTS_GCS_ADDRESS\): the GCS's "
        r"HOST:PORT\.$",
    ):
        _agent_destinations(["--publish-to-gcs", "true"])


async def test_publish_to_both_gcs_and_http(nursery: trio.Nursery) -> None:
    """Ray's test of the same name, with our TaskEventRecorder as the core worker: the same task
    definition reaches the HTTP sink and the GCS, and the attempts the recorder's full ring lost
    reach the GCS (never the HTTP sink) in task_events_metadata."""
    from tests.test_service import Sink
    from trio_events._http_server import serve_http
    from trio_events.agent import Destination, HttpPublisherConfig
    from trio_events.producer import (
        RayTaskDefinitionEvent,
        RecorderConfig,
        TaskEventPolicy,
        open_task_recorder,
    )

    with trio.fail_after(DEADLINE):
        sink = Sink()
        sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
        async with running_gcs() as gcs:
            service = AgentService(
                ServiceConfig(
                    agent=AgentConfig(port=0),
                    destinations=(
                        Destination(
                            HttpPublisherConfig(url=f"http://127.0.0.1:{sink_port}/"),
                            PublisherConfig(name="http_service"),
                        ),
                    ),
                    task_destinations=(
                        TaskEventsDestination(
                            GcsPublisherConfig(gcs.address),
                            PublisherConfig(name="ray_gcs", exposable_event_types=TASK_EVENT_TYPES),
                        ),
                    ),
                )
            )
            addresses = await nursery.start(service.run)
            async with open_task_recorder(
                RecorderConfig(report_interval=0.05),
                target=f"127.0.0.1:{addresses.grpc_port}",
                node_id=b"n" * 28,
                policy=TaskEventPolicy(max_status_events=1),
            ) as recorder:
                for i in range(3):  # the ring holds one: tasks 0 and 1 are lost
                    recorder.add(RayTaskDefinitionEvent(task_id=b"t%d" % i, task_name=f"f{i}"))
            service.request_stop()
            await service.wait_stopped()
    gcs_events = [e for r in gcs.requests for e in r.events_data.events]
    assert [e.task_definition_event.task_name for e in gcs_events] == ["f2"]
    assert [e["taskDefinitionEvent"]["taskName"] for e in sink.events] == ["f2"]
    lost = [
        (a.task_id, a.attempt_number)
        for r in gcs.requests
        for a in r.events_data.task_events_metadata.dropped_task_attempts
    ]
    assert lost == [(b"t0", 0), (b"t1", 0)]
    assert recorder.task_statistics().attempts_reported == 2
