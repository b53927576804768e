"""The agent service end to end over real sockets on 127.0.0.1: recorder -> agent -> HTTP sink."""

from __future__ import annotations

import base64
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
import trio

from trio_events._cli._workload import realistic_events
from trio_events._http_server import Request, Response, serve_http
from trio_events.agent._http_sink import HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig
from trio_events.agent._publisher import PublisherConfig
from trio_events.agent._service import AgentService, Destination, ServiceConfig
from trio_events.producer._recorder import open_recorder
from trio_events.producer._recorder_config import RecorderConfig
from trio_events.store._collector import Collector, CollectorConfig
from trio_events.store._query import counts

DEADLINE = 30


class Sink:
    """A real HTTP server that records every POSTed event (and can be told to fail)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.posts = 0
        self.fail_with: int | None = None
        self.failures = 0
        self.failed_twice = trio.Event()

    async def handle(self, request: Request) -> Response:
        if self.fail_with is not None:
            self.failures += 1
            if self.failures >= 2:
                self.failed_twice.set()
            return Response.text(self.fail_with, "sink says no")
        self.posts += 1
        assert request.header("content-type") == "application/json"
        self.events.extend(orjson.loads(request.body))
        return Response.text(200, "ok")


def _config(sink_port: int | None, **overrides: Any) -> ServiceConfig:
    destinations: tuple[Destination, ...] = ()
    if sink_port is not None:
        destinations = (
            Destination(
                HttpPublisherConfig(url=f"http://127.0.0.1:{sink_port}/v1/events"),
                PublisherConfig(name="http_service", exposable_event_types=None),
            ),
        )
    values: dict[str, Any] = {
        "agent": AgentConfig(port=0),
        "destinations": destinations,
        "metrics_listen": ("127.0.0.1", 0),
        "grace_period": 10.0,
    }
    values.update(overrides)
    return ServiceConfig(**values)


@pytest.mark.parametrize("workers", [1, 2])
async def test_recorder_to_agent_to_http_sink_exactly_once_in_entity_order(
    nursery: trio.Nursery, workers: int
) -> None:
    with trio.fail_after(DEADLINE):
        sink = Sink()
        sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
        service = AgentService(_config(sink_port, conversion_workers=workers))
        addresses = await nursery.start(service.run)
        pool = service.conversion_pool
        assert pool is not None
        await pool.wait_warm()
        recorded = list(realistic_events("mixed", 3000, seed=7))
        config = RecorderConfig(report_interval=0.05, max_queued_events=10_000)
        async with open_recorder(
            config, target=f"127.0.0.1:{addresses.grpc_port}", node_id=b"n" * 28
        ) as recorder:
            for event in recorded:
                recorder.add(event)
        stats = recorder.statistics()
        assert (stats.exported, stats.dropped) == (3000, 0)
        service.request_stop()
        summary = await service.wait_stopped()
        assert summary is not None
    assert (summary.dropped, summary.abandoned) == (0, 0)
    ids = [e["eventId"] for e in sink.events]
    assert len(ids) == len(set(ids)) == summary.delivered
    # Every event arrives exactly once: the ids are those of the recorded events that survived
    # merging (a merged event carries the id of the first event of its group).
    recorded_ids = {base64.b64encode(e.event_id).decode() for e in recorded}
    assert set(ids) <= recorded_ids
    # Per entity, lifecycle transitions arrive in the order they were recorded.
    arrived: dict[str, list[str]] = defaultdict(list)
    for e in sink.events:
        if e["eventType"] == "TASK_LIFECYCLE_EVENT":
            payload = e["taskLifecycleEvent"]
            key = f"{payload['taskId']}/{payload['taskAttempt']}"
            arrived[key] += [t["timestamp"] for t in payload["stateTransitions"]]
    assert arrived
    for timestamps in arrived.values():
        assert timestamps == sorted(timestamps)
    assert all(e["nodeId"] == base64.b64encode(b"n" * 28).decode() for e in sink.events)
    conversion = pool.statistics()
    assert conversion.worker_failures == 0
    if workers == 1:
        assert (conversion.in_process, conversion.in_worker) == (sink.posts, 0)
    else:
        assert (conversion.in_process, conversion.in_worker) == (0, sink.posts)


async def test_metrics_and_health_endpoints(nursery: trio.Nursery) -> None:
    with trio.fail_after(DEADLINE):
        sink = Sink()
        sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
        service = AgentService(_config(sink_port, unhealthy_after=0.0))
        addresses = await nursery.start(service.run)
        base = f"http://127.0.0.1:{addresses.metrics_port}"
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{base}/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "healthy"
            text = (await client.get(f"{base}/metrics")).text
            assert "trio_events_buffer_capacity 100000.0" in text
            assert 'trio_events_buffer_unread_events{consumer="http_service"} 0.0' in text
            assert (await client.get(f"{base}/nope")).status_code == 404
            # A failing sink turns /healthz unhealthy, with the reason.
            sink.fail_with = 503
            async with open_recorder(
                RecorderConfig(report_interval=0.05),
                target=f"127.0.0.1:{addresses.grpc_port}",
                node_id=b"n" * 28,
            ) as recorder:
                recorder.add(next(realistic_events("lifecycle", 1, seed=1)))
            # After the second failed attempt the publisher has counted the first one.
            await sink.failed_twice.wait()
            health = await client.get(f"{base}/healthz")
            assert health.status_code == 503
            reasons = health.json()["reasons"]
            assert reasons
            assert reasons[0].startswith("publisher http_service has failed for")
            sink.fail_with = None
        service.request_stop()
        summary = await service.wait_stopped()
        assert summary is not None
    assert summary.delivered == 1


async def test_no_export_address_keeps_events_in_a_local_store(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    db = tmp_path / "agent.db"
    with trio.fail_after(DEADLINE):
        service = AgentService(_config(None, store_path=str(db), metrics_listen=None))
        addresses = await nursery.start(service.run)
        assert addresses.store_path == str(db)
        async with open_recorder(
            RecorderConfig(report_interval=0.05),
            target=f"127.0.0.1:{addresses.grpc_port}",
            node_id=b"n" * 28,
        ) as recorder:
            for event in realistic_events("mixed", 500, seed=3):
                recorder.add(event)
        service.request_stop()
        summary = await service.wait_stopped()
        assert summary is not None
    stored = counts(db)
    assert stored.total == summary.delivered > 0
    assert summary.abandoned == 0


def _buffer_events(service: AgentService, n: int, seed: int = 5) -> None:
    """Put ``n`` events straight into the service's buffer (as if AddEvents had just run)."""
    buffer = service.publishers[0]._buffer
    for event in realistic_events("lifecycle", n, seed=seed):
        message = event.serialize()
        buffer.add_nowait(message.event_type, message.SerializeToString())


# --- what stopping means: request_stop() drains, cancellation stops at once -------------------


async def test_request_stop_drains_what_is_buffered_within_the_grace_period() -> None:
    sink = Sink()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
            service = AgentService(_config(sink_port))
            await nursery.start(service.run)
            _buffer_events(service, 200)
            service.request_stop()
            summary = await service.wait_stopped()
            nursery.cancel_scope.cancel()
    assert summary is not None
    assert (summary.delivered, summary.abandoned) == (200, 0)
    assert len(sink.events) == 200


async def test_cancellation_stops_at_once_without_retrying_and_counts_what_is_left() -> None:
    """Cancelling stops at once instead of retrying for the grace period; the rest is counted.

    A sink that cannot take the events stands for a collector that the same cancellation
    stopped (the sink itself stays up here, so that only the service is cancelled).
    """
    sink = Sink()
    sink.fail_with = 503
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
            # A drain retries while more than two attempt timeouts (2 x 3 s) of it are left.
            service = AgentService(_config(sink_port, grace_period=20.0))
            async with trio.open_nursery() as inner:
                await inner.start(service.run)
                _buffer_events(service, 20)
                await sink.failed_twice.wait()  # the publisher is retrying
                inner.cancel_scope.cancel()
                cancelled_at = trio.current_time()
            stopped_in = trio.current_time() - cancelled_at
            nursery.cancel_scope.cancel()
    assert stopped_in < 1.0  # before the fix: the whole grace period
    summary = service.summary
    assert summary is not None
    assert (summary.delivered, summary.dropped, summary.abandoned) == (0, 0, 20)


async def test_cancelling_a_nursery_with_the_service_and_its_collector_is_prompt(
    tmp_path: Any,
) -> None:
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            collector = Collector(CollectorConfig(db_path=tmp_path / "c.db", port=0))
            collector_port = await nursery.start(collector.run)
            service = AgentService(_config(collector_port, grace_period=5.0))
            await nursery.start(service.run)
            _buffer_events(service, 1)
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
        stopped_in = trio.current_time() - cancelled_at
    assert stopped_in < 1.0
    summary = service.summary
    assert summary is not None
    assert summary.delivered + summary.abandoned == 1  # whether it got out first is a race
    assert summary.dropped == 0


async def test_cancelling_the_service_during_a_graceful_drain_cuts_the_drain_short() -> None:
    sink = Sink()
    sink.fail_with = 503  # the drain would retry until the grace period ends
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
            service = AgentService(_config(sink_port, grace_period=10.0))
            async with trio.open_nursery() as inner:
                await inner.start(service.run)
                _buffer_events(service, 50)
                service.request_stop()
                await sink.failed_twice.wait()  # draining: retrying against the sink
                assert service.publishers[0].statistics().draining
                inner.cancel_scope.cancel()
                cancelled_at = trio.current_time()
            stopped_in = trio.current_time() - cancelled_at
            nursery.cancel_scope.cancel()
    assert stopped_in < 1.0  # before the fix: the rest of the 10 s grace period
    summary = service.summary
    assert summary is not None
    assert (summary.delivered, summary.abandoned + summary.dropped) == (0, 50)


class _SlowResolver(trio.abc.HostnameResolver):
    """Name resolution that takes 3 s (a hung DNS server), through trio's resolver hook."""

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        await trio.sleep(3)
        raise OSError("no such host")

    async def getnameinfo(self, sockaddr, flags):
        raise NotImplementedError


async def test_a_cancelled_start_up_returns_at_once(autojump_clock) -> None:
    trio.socket.set_custom_hostname_resolver(_SlowResolver())
    config = _config(None, agent=AgentConfig(host="agent.invalid"), metrics_listen=None)
    service = AgentService(config)
    started = trio.current_time()
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
    assert trio.current_time() - started == pytest.approx(1.0)  # before the fix: 3 s
    assert service.summary is None  # it never started, so it has nothing to count
    assert service._stopped.is_set()


async def test_sink_down_at_shutdown_counts_what_is_abandoned(nursery: trio.Nursery) -> None:
    with trio.fail_after(DEADLINE):
        sink = Sink()
        sink.fail_with = 503
        sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
        service = AgentService(_config(sink_port, grace_period=0.5))
        await nursery.start(service.run)
        buffer = service.publishers[0]._buffer
        event = next(realistic_events("lifecycle", 1, seed=9)).serialize()
        for _ in range(50):
            buffer.add_nowait(event.event_type, event.SerializeToString())
        service.request_stop()
        summary = await service.wait_stopped()
        assert summary is not None
    assert summary.delivered == 0
    assert summary.abandoned + summary.dropped == 50


@pytest.mark.parametrize("bad", [{"grace_period": -1.0}])
def test_bad_service_config_is_a_sentence(bad: dict[str, Any]) -> None:
    with pytest.raises(
        ValueError, match=r"^grace_period and unhealthy_after must be >= 0 seconds\.$"
    ):
        ServiceConfig(**bad)


@pytest.mark.parametrize("workers", [0, True])
def test_conversion_workers_must_be_at_least_one(workers: int) -> None:
    with pytest.raises(ValueError, match=r"^conversion_workers must be an integer >= 1, got .*\.$"):
        ServiceConfig(conversion_workers=workers)


async def test_a_destination_gets_a_connection_per_request_in_flight() -> None:
    """Four batches in flight reach the sink at once: the HTTP client does not queue them.

    The sink holds every request until four are open at the same time; with one connection
    (the old client) the second would wait for the first and the deadline would fire.
    """
    open_now = 0
    all_in = trio.Event()
    seen: list[int] = []

    async def hold(request: Request) -> Response:
        nonlocal open_now
        open_now += 1
        seen.append(open_now)
        if open_now >= 4:
            all_in.set()
        await all_in.wait()
        open_now -= 1
        return Response.json(200, b"{}")

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            sink_port = await nursery.start(serve_http, hold, "127.0.0.1", 0)
            publisher = PublisherConfig(
                name="http_service",
                exposable_event_types=None,
                max_in_flight=4,
                adaptive_in_flight=False,
            )
            url = f"http://127.0.0.1:{sink_port}/v1/events"
            service = AgentService(
                _config(
                    None,
                    agent=AgentConfig(port=0, max_batch_size=10),
                    destinations=(Destination(HttpPublisherConfig(url), publisher),),
                )
            )
            await nursery.start(service.run)
            _buffer_events(service, 40)
            # Sooner than the HTTP timeout (3 s): a request stuck waiting for a connection
            # would time out and be retried on a new one.
            with trio.fail_after(2):
                await all_in.wait()
            service.request_stop()
            summary = await service.wait_stopped()
            nursery.cancel_scope.cancel()
    assert max(seen) == 4
    assert summary is not None
    assert summary.publishers[0].attempts == 4  # one request per batch: none timed out
    assert (summary.delivered, summary.dropped, summary.abandoned) == (40, 0, 0)
