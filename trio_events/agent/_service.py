"""The agent as a service: gRPC ingest, buffer, publishers, /metrics and /healthz, one nursery.

Start-up is in dependency order (the spool, publishers registering as buffer consumers, the gRPC
server binding, the metrics endpoint), each stage signalling ``started()`` when ready, so a
setup failure surfaces before any traffic. Start-up can be cancelled at any point: nothing in it
is shielded, and a spool or store that hangs while opening is abandoned (and closed once its
thread returns).

Once started, the stages stop only through the ordered shutdown, whose every step is bounded:

1. the gRPC server stops accepting RPCs and closes (within ``agent.shutdown_timeout``);
2. the publishers stop. After :meth:`AgentService.request_stop` they first drain what is still
   buffered within ``grace_period`` (retrying while time allows); after a cancellation of
   :meth:`AgentService.run` they stop at once, without a new delivery attempt (a cancellation
   during the drain cuts it short the same way). What is left is counted as abandoned, or
   retained in the spool for the next start;
3. the rest is cancelled and the spool closed; the final log line states delivered / dropped /
   abandoned (/ retained).

Only that shutdown is shielded from the caller's cancellation: it is what keeps the counts
exact, and it is bounded. With a spool (``ServiceConfig.spool``) the buffer is a
:class:`SpoolEventBuffer` opened before the stages and closed after them (docs/spool.md).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, TypeVar, final

import trio

from trio_events._bridge import asyncio_loop
from trio_events._http_server import serve_http
from trio_events._metrics import Metrics
from trio_events.agent._buffer import EventBuffer, MultiConsumerEventBuffer
from trio_events.agent._convert_pool import ConversionPool
from trio_events.agent._http_sink import HttpPublisherClient
from trio_events.agent._ingest import AggregatorAgent
from trio_events.agent._publisher import PublisherConfig, RayEventPublisher
from trio_events.agent._service_config import (
    DEFAULT_METRICS_LISTEN as DEFAULT_METRICS_LISTEN,
)
from trio_events.agent._service_config import STORE_CONSUMER as STORE_CONSUMER
from trio_events.agent._service_config import Destination as Destination
from trio_events.agent._service_config import ServiceAddresses as ServiceAddresses
from trio_events.agent._service_config import ServiceConfig as ServiceConfig
from trio_events.agent._service_config import ShutdownSummary as ShutdownSummary
from trio_events.agent._service_config import summary_of
from trio_events.agent._spool import SpoolEventBuffer
from trio_events.agent._status import answer_status, health
from trio_events.agent._store_sink import StorePublishClient
from trio_events.agent._task_publishing import TaskEventsPublishing
from trio_events.store._sqlite import EventStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_events.agent._delivery import BatchConverter
    from trio_events.agent._sink import BatchEncoder, PublishClient, PublishOutcome
    from trio_events.agent._task_metadata import TaskMetadataStore

logger = logging.getLogger("trio_events.agent.service")
T = TypeVar("T")

# Closing a client is local work; the bound only guards against one that misbehaves.
_CLOSE_TIMEOUT = 1.0


@final
class AgentService:
    """``trio-events agent`` as a trio service: ``addresses = await nursery.start(service.run)``.

    Two ways to stop it (docs/service.md):

    - :meth:`request_stop` (what SIGTERM and Ctrl-C do): the graceful stop. The gRPC server
      closes, the publishers drain within ``grace_period``, and :meth:`run` returns.
    - cancelling :meth:`run`: the prompt stop. The gRPC server closes and the publishers stop
      at once; what they had not delivered is counted as abandoned (or retained in the spool).
      :meth:`run` re-raises the cancellation after that bounded shutdown.

    Either way :attr:`summary` then holds the final counts and :meth:`wait_stopped` returns them.
    """

    def __init__(self, config: ServiceConfig, *, metrics: Metrics | None = None) -> None:
        self._config = config
        self._metrics = metrics if metrics is not None else Metrics()
        self._stop = trio.Event()
        self._hurry = trio.Event()
        self._stopped = trio.Event()
        self._stopped_stages = trio.Event()
        self._prompt = False  # stop without draining (run() was cancelled)
        self._drain_scope: trio.CancelScope | None = None
        self._publishers: list[RayEventPublisher] = []
        self._agent: AggregatorAgent | None = None
        self._store_client: StorePublishClient | None = None
        self._spool: SpoolEventBuffer | None = None
        self._pool: ConversionPool | None = None
        self.summary: ShutdownSummary | None = None

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def conversion_pool(self) -> ConversionPool | None:
        """The publishers' JSON conversion pool, once :meth:`run` has started it."""
        return self._pool

    @property
    def publishers(self) -> tuple[RayEventPublisher, ...]:
        return tuple(self._publishers)

    def request_stop(self) -> None:
        """Begin the graceful shutdown (what SIGTERM does); :meth:`run` returns when done."""
        self._stop.set()

    def hurry(self) -> None:
        """Cut the shutdown's drain short (what a second SIGTERM or SIGINT does): publishers
        stop at once and what they still hold is counted as abandoned (or stays in the spool),
        so the summary is still complete."""
        self._stop.set()
        self._hurry.set()

    async def wait_stopped(self) -> ShutdownSummary | None:
        """Wait until :meth:`run` has finished its shutdown; the summary, if it got that far."""
        await self._stopped.wait()
        return self.summary

    async def run(
        self, *, task_status: trio.TaskStatus[ServiceAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the stages, report their addresses, serve until stopped (see the class)."""
        try:
            async with trio.open_nursery() as guard:
                addresses: ServiceAddresses = await guard.start(self._supervise)
                task_status.started(addresses)
                try:
                    await self._stop.wait()
                    # A graceful shutdown is under way: a cancellation now makes it prompt.
                    await self._stopped_stages.wait()
                except trio.Cancelled:
                    self._stop_promptly()
                    raise
        finally:
            self._stopped.set()

    def _stop_promptly(self) -> None:
        self._prompt = True
        self._stop.set()
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def _supervise(self, task_status: trio.TaskStatus[ServiceAddresses]) -> None:
        config = self._config
        try:
            # Not shielded until every stage has started: start-up can be cancelled.
            with trio.CancelScope() as shutdown_shield:
                spool = None
                if config.spool is not None:
                    spool = await _open_in_thread(
                        functools.partial(
                            SpoolEventBuffer,
                            config.spool,
                            config.agent.max_batch_size,
                            metrics=self._metrics,
                        ),
                        SpoolEventBuffer.close_database,
                    )
                self._spool = spool
                try:
                    await self._run_stages(spool, shutdown_shield, task_status)
                finally:
                    if spool is not None:
                        spool.close_database()  # after every stage: nothing uses it any more
        finally:
            self._stopped_stages.set()

    async def _run_stages(
        self,
        spool: SpoolEventBuffer | None,
        shutdown_shield: trio.CancelScope,
        task_status: trio.TaskStatus[ServiceAddresses],
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
            clients = await self._clients()
            task_metadata: list[TaskMetadataStore] = []
            for destination in config.task_destinations:
                built = TaskEventsPublishing.build(destination, metrics=self._metrics)
                clients.append((built.client, built.publisher, built.encoder))
                task_metadata.append(built.metadata)
            if spool is not None:
                await nursery.start(spool.run)
                _forget_stale_consumers(spool, [c.name for _, c, _ in clients])
            pool = self._pool = ConversionPool(config.conversion_workers)
            await nursery.start(pool.run)  # before the publishers, which use it
            await self._start_publishers(nursery, buffer, clients)
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

            try:
                grpc_port: int = await nursery.start(serve_grpc)
            except OSError as exc:
                raise _unservable("gRPC", config.agent.host, config.agent.port, exc) from None
            metrics_port = None
            if config.metrics_listen is not None:
                host, port = config.metrics_listen
                handler = functools.partial(answer_status, self._metrics, self.health)
                try:
                    metrics_port = await nursery.start(serve_http, handler, host, port)
                except OSError as exc:
                    raise _unservable("metrics", host, port, exc) from None
                logger.info("Metrics and health on http://%s:%d/metrics.", host, metrics_port)
            if store_path is not None:
                logger.info("No export address: storing events in %s.", store_path)
            resumed = spool.resumed_events if spool is not None else None
            # From here on the stages stop only through the ordered shutdown below, which is
            # bounded: the server's close timeout, the grace period (or none), the clients'.
            shutdown_shield.shield = True
            task_status.started(
                ServiceAddresses(grpc_port, metrics_port, store_path, spool_resumed=resumed)
            )
            await self._stop.wait()
            logger.info(
                "Stopping: closing the gRPC server, then %s.",
                "stopping publishers at once" if self._prompt else "draining publishers",
            )
            agent_scope.cancel()
            await agent_done.wait()
            await self._drain()
            nursery.cancel_scope.cancel()
        # Every publisher has ended: its statistics are final.
        self.summary = summary_of([p.statistics() for p in self._publishers])
        logger.info("Stopped: %s.", self.summary.line())
        if self._pool is not None:
            logger.info("JSON conversion: %s.", self._pool.statistics().line())

    async def _start_publishers(
        self,
        nursery: trio.Nursery,
        buffer: EventBuffer,
        clients: list[tuple[PublishClient, PublisherConfig, BatchEncoder | None]],
    ) -> None:
        """Start one publisher per client; a client whose publisher never started is closed."""
        started = 0
        try:
            for client, publisher_config, encoder in clients:
                publisher = RayEventPublisher(
                    publisher_config,
                    client,
                    buffer,
                    metrics=self._metrics,
                    converter=self._converter(publisher_config),
                    encoder=encoder,
                )
                self._publishers.append(publisher)
                await nursery.start(publisher.run)
                started += 1
        finally:
            for client, _, _ in clients[started:]:
                with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                    await client.aclose()

    def _converter(self, config: PublisherConfig) -> BatchConverter | None:
        """The pool's converter for a compiled publisher (the protobuf reference converter, for
        benchmarks, stays in-process); one conversion serves publishers with the same settings."""
        if config.converter != "compiled" or self._pool is None:
            return None
        return self._pool.converter(preserving_proto_field_name=config.preserve_proto_field_name)

    async def _clients(self) -> list[tuple[PublishClient, PublisherConfig, BatchEncoder | None]]:
        config = self._config
        clients: list[tuple[PublishClient, PublisherConfig, BatchEncoder | None]] = [
            (
                _Counted(
                    HttpPublisherClient(d.http, max_connections=d.publisher.max_in_flight),
                    d.publisher.name,
                    self._metrics,
                ),
                d.publisher,
                None,
            )
            for d in config.destinations
        ]
        if not clients and config.store_path is not None:
            try:
                store = await _open_in_thread(
                    functools.partial(EventStore, config.store_path), EventStore.close
                )
            except (OSError, sqlite3.Error) as exc:
                raise OSError(
                    f"the local store {config.store_path} cannot be opened ({exc})"
                ) from None
            self._store_client = StorePublishClient(store, metrics=self._metrics)
            clients.append((self._store_client, config.store_publisher, None))
        return clients

    async def _drain(self) -> None:
        """Let the publishers deliver what is left within ``grace_period``; not when prompt."""
        deadline = trio.current_time() + self._config.grace_period
        with trio.CancelScope() as self._drain_scope:
            if self._prompt:
                self._drain_scope.cancel()
            async with trio.open_nursery() as watcher:
                watcher.start_soon(self._cut_short, watcher)
                async with trio.open_nursery() as nursery:
                    for publisher in self._publishers:
                        nursery.start_soon(publisher.drain, deadline)
                watcher.cancel_scope.cancel()
        self._drain_scope = None

    async def _cut_short(self, watcher: trio.Nursery) -> None:
        """A second stop request (:meth:`hurry`) ends the drain now; every event is counted."""
        await self._hurry.wait()
        logger.warning("Asked again to stop: ending the drain now.")
        for publisher in self._publishers:
            watcher.start_soon(publisher.drain, trio.current_time())

    # --- /metrics and /healthz (agent/_status.py) -----------------------------------------------

    def health(self) -> tuple[bool, dict[str, object]]:
        """Unhealthy while the gRPC server is down, the spool is full, stalled or replaced, or
        a publisher has failed for too long."""
        serving = self._agent is not None and self._agent.port is not None
        stats = [p.statistics() for p in self._publishers]
        problems = []
        if self._spool is not None and (problem := self._spool.problem()) is not None:
            problems.append(f"the spool cannot keep its promise: {problem}")
        return health(serving, stats, self._config.unhealthy_after, problems)


async def _open_in_thread(open_: Callable[[], T], close: Callable[[T], object]) -> T:
    """``open_()`` in a worker thread that a cancellation abandons.

    A file on a hung disk must not hold up a cancelled start-up. What the abandoned thread
    opens after all is closed, by the thread itself or here, never leaked.
    """
    lock = threading.Lock()
    abandoned = False
    opened: list[T] = []

    def work() -> T:
        result = open_()
        with lock:
            if abandoned:
                close(result)
            else:
                opened.append(result)
        return result

    try:
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except trio.Cancelled:
        with lock:
            abandoned = True
            late = list(opened)  # finished, but the cancellation won the race to the result
        for result in late:
            close(result)
        raise


def _unservable(what: str, host: str, port: int, exc: OSError) -> OSError:
    """A bind failure as one sentence naming the address (and only the errno's words)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    error = OSError(f"the {what} address {host}:{port} cannot be served ({reason})")
    error.errno = exc.errno
    return error


@final
class _Counted:
    """A destination's client, counting requests by outcome and bytes sent."""

    def __init__(self, inner: HttpPublisherClient, name: str, metrics: Metrics) -> None:
        self._inner = inner
        self._requests = metrics.publish_requests
        self._bytes = metrics.publish_sent_bytes.labels(name)
        self._name = name

    async def publish(self, body: bytes) -> PublishOutcome:
        outcome = await self._inner.publish(body)
        self._requests.labels(self._name, outcome.outcome.value).inc()
        self._bytes.inc(len(body))
        return outcome

    async def aclose(self) -> None:
        await self._inner.aclose()


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
