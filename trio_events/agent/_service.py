"""The agent as a service: gRPC ingest, buffer, publishers, /metrics and /healthz, one nursery.

Start-up is in dependency order (publishers register as buffer consumers first, then the gRPC
server binds, then the metrics endpoint), each stage signalling ``started()`` when ready, so a
setup failure surfaces before any traffic. Shutdown — on cancellation of :meth:`run` or a
call to :meth:`AgentService.request_stop` — is ordered and bounded:

1. the gRPC server stops accepting RPCs and closes;
2. publishers drain what is still buffered within ``grace_period`` (retrying while time allows,
   one attempt per batch near the end); what is left is counted as abandoned;
3. everything else is cancelled; the final log line states delivered / dropped / abandoned.

With a spool (``ServiceConfig.spool``) the buffer is a :class:`SpoolEventBuffer` opened before
the stages and closed after them: what is left at shutdown stays in it (``retained``) and the
next start resumes from the publishers' persisted cursors (docs/spool.md).

The stages run inside a shielded scope so that cancelling :meth:`run` does not tear them down
before the drain; the shield is released by the ordered shutdown itself, whose every step is
bounded (the server's close timeout, the grace period, the store's close).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, final

import attrs
import orjson
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trio_events._bridge import asyncio_loop
from trio_events._http_server import Request, Response, serve_http
from trio_events._metrics import Metrics
from trio_events.agent._buffer import EventBuffer, MultiConsumerEventBuffer
from trio_events.agent._http_sink import HttpPublisherClient, HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig, AggregatorAgent
from trio_events.agent._publisher import PublisherConfig, PublisherStatistics, RayEventPublisher
from trio_events.agent._spool import SpoolConfig, SpoolEventBuffer
from trio_events.agent._store_sink import StorePublishClient
from trio_events.agent._task_publishing import TaskEventsDestination, TaskEventsPublishing
from trio_events.store._sqlite import EventStore

if TYPE_CHECKING:
    from trio_events.agent._sink import BatchEncoder, PublishClient
    from trio_events.agent._task_metadata import TaskMetadataStore

logger = logging.getLogger("trio_events.agent")

STORE_CONSUMER = "local_store"


@final
@attrs.frozen
class Destination:
    """One HTTP export address with its publisher settings (``publisher.name`` must be unique)."""

    http: HttpPublisherConfig
    publisher: PublisherConfig


@final
@attrs.frozen
class ServiceConfig:
    """Everything ``trio-events agent`` runs. With no destinations, ``store_path`` keeps events.

    With ``spool`` the buffer is durable (docs/spool.md) and bounded by the spool's
    ``max_events`` and ``max_bytes`` instead of ``agent.buffer_size``. ``task_destinations``
    are Ray's GCS and dashboard-head publishers (task events and dropped task attempts).
    """

    agent: AgentConfig = attrs.field(factory=AgentConfig)
    destinations: tuple[Destination, ...] = ()
    task_destinations: tuple[TaskEventsDestination, ...] = ()
    store_path: str | None = None
    store_publisher: PublisherConfig = attrs.field(
        factory=lambda: PublisherConfig(name=STORE_CONSUMER)
    )
    metrics_listen: tuple[str, int] | None = None
    grace_period: float = 10.0
    unhealthy_after: float = 60.0
    spool: SpoolConfig | None = None

    def __attrs_post_init__(self) -> None:
        names = [d.publisher.name for d in self.destinations]
        names += [d.publisher.name for d in self.task_destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"Each destination needs its own publisher name; got {names}.")
        if self.spool is not None and self.spool.path == self.store_path:
            raise ValueError(
                f"The spool and the local store need different files; both are {self.store_path!r}."
            )
        if self.grace_period < 0 or self.unhealthy_after < 0:
            raise ValueError("grace_period and unhealthy_after must be >= 0 seconds.")


@final
@attrs.frozen
class ServiceAddresses:
    """What :meth:`AgentService.run` reports to ``task_status.started()``."""

    grpc_port: int
    metrics_port: int | None
    store_path: str | None
    spool_resumed: int | None = None  #: events found in the spool at start (None: no spool)


@final
@attrs.frozen
class ShutdownSummary:
    delivered: int
    dropped: int
    abandoned: int
    publishers: tuple[PublisherStatistics, ...]
    retained: int = 0  #: left in the spool for the next start

    def line(self) -> str:
        line = f"delivered={self.delivered} dropped={self.dropped} abandoned={self.abandoned}"
        return f"{line} retained={self.retained}" if self.retained else line


@final
class AgentService:
    """``trio-events agent``: ``addresses = await nursery.start(service.run)``."""

    def __init__(self, config: ServiceConfig, *, metrics: Metrics | None = None) -> None:
        self._config = config
        self._metrics = metrics if metrics is not None else Metrics()
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._publishers: list[RayEventPublisher] = []
        self._buffer: EventBuffer | None = None
        self._agent: AggregatorAgent | None = None
        self._store_client: StorePublishClient | None = None
        self.summary: ShutdownSummary | None = None

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def publishers(self) -> tuple[RayEventPublisher, ...]:
        return tuple(self._publishers)

    def request_stop(self) -> None:
        """Begin the ordered shutdown (what SIGTERM does); :meth:`run` returns when done."""
        self._stop.set()

    async def wait_stopped(self) -> ShutdownSummary | None:
        """Wait until :meth:`run` has finished its shutdown; the summary, if it got that far."""
        await self._stopped.wait()
        return self.summary

    async def run(
        self, *, task_status: trio.TaskStatus[ServiceAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with trio.open_nursery() as guard:
                addresses: ServiceAddresses = await guard.start(self._supervise)
                task_status.started(addresses)
                try:
                    await self._stop.wait()
                finally:
                    # Cancelled from outside or asked to stop: either way, the ordered shutdown.
                    self._stop.set()
        finally:
            self._stopped.set()

    async def _supervise(self, task_status: trio.TaskStatus[ServiceAddresses]) -> None:
        config = self._config
        with trio.CancelScope(shield=True):
            spool = None
            if config.spool is not None:
                spool = await trio.to_thread.run_sync(
                    functools.partial(
                        SpoolEventBuffer,
                        config.spool,
                        config.agent.max_batch_size,
                        metrics=self._metrics,
                    )
                )
            try:
                await self._run_stages(spool, task_status)
            finally:
                if spool is not None:
                    spool.close_database()  # after every stage: nothing uses it any more

    async def _run_stages(
        self, spool: SpoolEventBuffer | None, task_status: trio.TaskStatus[ServiceAddresses]
    ) -> None:
        config = self._config
        async with asyncio_loop(), trio.open_nursery() as nursery:
            buffer: EventBuffer = (
                spool
                if spool is not None
                else MultiConsumerEventBuffer(
                    config.agent.buffer_size, config.agent.max_batch_size, metrics=self._metrics
                )
            )
            self._buffer = buffer
            clients = await self._clients()
            task_metadata: list[TaskMetadataStore] = []
            for destination in config.task_destinations:
                built = TaskEventsPublishing.build(destination, metrics=self._metrics)
                clients.append((built.client, built.publisher, built.encoder))
                task_metadata.append(built.metadata)
            if spool is not None:
                await nursery.start(spool.run)
                _forget_stale_consumers(spool, [c.name for _, c, _ in clients])
            for client, publisher_config, encoder in clients:
                publisher = RayEventPublisher(
                    publisher_config, client, buffer, metrics=self._metrics, encoder=encoder
                )
                self._publishers.append(publisher)
                await nursery.start(publisher.run)
            store_path = config.store_path if self._store_client is not None else None
            agent = AggregatorAgent(
                config.agent,
                metrics=self._metrics,
                buffer=buffer,
                publishers_enabled=bool(self._publishers),
                task_metadata=task_metadata,
            )
            self._agent = agent
            agent_scope = trio.CancelScope()
            agent_done = trio.Event()

            async def serve_grpc(*, task_status: trio.TaskStatus[int]) -> None:
                try:
                    with agent_scope:
                        await agent.run(task_status=task_status)
                finally:
                    agent_done.set()

            grpc_port: int = await nursery.start(serve_grpc)
            metrics_port = None
            if config.metrics_listen is not None:
                host, port = config.metrics_listen
                metrics_port = await nursery.start(serve_http, self._handle_http, host, port)
                logger.info("Metrics and health on http://%s:%d/metrics.", host, metrics_port)
            resumed = spool.resumed_events if spool is not None else None
            task_status.started(
                ServiceAddresses(grpc_port, metrics_port, store_path, spool_resumed=resumed)
            )
            await self._stop.wait()
            logger.info("Stopping: closing the gRPC server, then draining publishers.")
            agent_scope.cancel()
            await agent_done.wait()
            self.summary = await self._drain()
            logger.info("Stopped: %s.", self.summary.line())
            nursery.cancel_scope.cancel()

    async def _clients(self) -> list[tuple[PublishClient, PublisherConfig, BatchEncoder | None]]:
        config = self._config
        clients: list[tuple[PublishClient, PublisherConfig, BatchEncoder | None]] = [
            (HttpPublisherClient(d.http), d.publisher, None) for d in config.destinations
        ]
        if not clients and config.store_path is not None:
            store = await trio.to_thread.run_sync(EventStore, config.store_path)
            self._store_client = StorePublishClient(store)
            clients.append((self._store_client, config.store_publisher, None))
            logger.info("No export address: storing events in %s.", config.store_path)
        return clients

    async def _drain(self) -> ShutdownSummary:
        deadline = trio.current_time() + self._config.grace_period
        results: list[PublisherStatistics] = []

        async def drain_one(publisher: RayEventPublisher) -> None:
            results.append(await publisher.drain(deadline))

        async with trio.open_nursery() as nursery:
            for publisher in self._publishers:
                nursery.start_soon(drain_one, publisher)
        return ShutdownSummary(
            delivered=sum(s.delivered for s in results),
            dropped=sum(s.dropped for s in results),
            abandoned=sum(s.abandoned for s in results),
            publishers=tuple(results),
            retained=sum(s.retained for s in results),
        )

    # --- /metrics and /healthz ----------------------------------------------------------------

    async def _handle_http(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, "Only GET is served here.")
        if request.path == "/metrics":
            self._refresh_gauges()
            body = generate_latest(self._metrics.registry)
            return Response(200, body, (("content-type", CONTENT_TYPE_LATEST),))
        if request.path == "/healthz":
            healthy, detail = self.health()
            body = orjson.dumps({"status": "healthy" if healthy else "unhealthy", **detail})
            return Response.json(200 if healthy else 503, body)
        return Response.text(404, "Not found; try /metrics or /healthz.")

    def _refresh_gauges(self) -> None:
        buffer = self._buffer
        if buffer is None:
            return
        m = self._metrics
        m.buffer_size.set(len(buffer))
        m.buffer_capacity.set(buffer.capacity)
        for publisher in self._publishers:
            m.buffer_unread.labels(publisher.name).set(publisher.statistics().unread)

    def health(self) -> tuple[bool, dict[str, object]]:
        """Unhealthy while the gRPC server is down or a publisher has failed for too long."""
        reasons: list[str] = []
        if self._agent is None or self._agent.port is None:
            reasons.append("the gRPC server is not serving")
        publishers: dict[str, object] = {}
        for publisher in self._publishers:
            stats = publisher.statistics()
            since = self._metrics.value(
                "ray_aggregator_agent_time_since_last_success_seconds",
                {"consumer": publisher.name},
            )
            publishers[publisher.name] = {
                "delivered": stats.delivered,
                "unread": stats.unread,
                "consecutive_failures": stats.consecutive_failures,
                "seconds_since_last_success": round(since, 3),
            }
            if stats.consecutive_failures and since > self._config.unhealthy_after:
                reasons.append(
                    f"publisher {publisher.name} has failed for {since:.0f} s "
                    f"({stats.consecutive_failures} attempts)"
                )
        return (not reasons, {"reasons": reasons, "publishers": publishers, "time": time.time()})


def _forget_stale_consumers(spool: SpoolEventBuffer, publishers: list[str]) -> None:
    """Let go of cursors no configured publisher will use, or they would pin events forever.

    With no publisher at all nothing reads the spool anyway, so nothing is let go.
    """
    if not publishers:
        return
    stats = spool.storage_statistics()
    for name in spool.known_consumers():
        if name not in publishers:
            logger.warning(
                "Spool %s: no publisher named %s is configured; forgetting its cursor (%d "
                "events were still waiting for it).",
                spool.path,
                name,
                stats.next_sequence - stats.settled[name],
            )
            spool.forget_consumer(name)
