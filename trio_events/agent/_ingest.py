"""The aggregator agent: a grpclib server, hosted on trio through trio-asyncio, feeding the buffer.

It answers ``/ray.rpc.events.EventAggregatorService/AddEvents`` (what Ray's core workers and GCS
call) and ``/ray.rpc.ReporterService/HealthCheck`` (GCS only starts exporting once that succeeds).
Any other path, such as the OpenCensus/OTLP metric exports Ray also sends to this port, gets
grpclib's UNIMPLEMENTED without disturbing anything.

Received events stay serialized: the request is parsed once to validate it (unknown fields and
enum values from a newer Ray survive), then each event is re-serialized on its own and buffered
as bytes with its event type.
"""

from __future__ import annotations

import hmac
import logging
import socket
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, final

import attrs
import trio
from google.protobuf.message import DecodeError, Message
from grpclib.const import Status
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError

from trio_events import pb
from trio_events._bridge import asyncio_loop, run_asyncio
from trio_events.agent._buffer import EventBuffer, MultiConsumerEventBuffer
from trio_events.agent._grpc_server import GrpcServer, recv_raw_message

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from grpclib.server import Stream

    from trio_events._metrics import Metrics
    from trio_events.agent._task_metadata import TaskMetadataStore

logger = logging.getLogger(__name__)

_ON_FULL_POLICIES = ("drop_oldest", "reject")
_M = TypeVar("_M", bound=Message)


def _check_config(config: AgentConfig) -> None:
    if not 0 <= config.port <= 65535:
        raise ValueError(f"AgentConfig.port must be between 0 and 65535, got {config.port}.")
    for name in ("max_message_bytes", "buffer_size", "max_batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"AgentConfig.{name} must be a positive integer, got {value!r}.")
    if config.on_full not in _ON_FULL_POLICIES:
        raise ValueError(
            f"AgentConfig.on_full must be 'drop_oldest' or 'reject', got {config.on_full!r}."
        )
    if config.auth_token is not None and not config.auth_token.strip():
        raise ValueError("AgentConfig.auth_token must be None (no authentication) or non-empty.")
    if not config.shutdown_timeout >= 0:
        raise ValueError(
            f"AgentConfig.shutdown_timeout must be >= 0 seconds, got {config.shutdown_timeout}."
        )


@final
@attrs.frozen
class AgentConfig:
    """Settings of one :class:`AggregatorAgent` (built by the caller; never from the environment).

    ``on_full`` is the overflow policy: ``"drop_oldest"`` (Ray's: always accept, the buffer evicts
    its oldest events and counts them per consumer) or ``"reject"`` (refuse with
    RESOURCE_EXHAUSTED a request whose events would evict unread ones, so the sender keeps and
    retries them). ``buffer_size`` and ``max_batch_size`` size the buffer the agent creates when
    it is not handed one. ``auth_token`` requires ``authorization: Bearer <token>`` metadata.
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_message_bytes: int = 20 * 1024 * 1024  # Ray's AGENT_GRPC_MAX_MESSAGE_LENGTH
    auth_token: str | None = attrs.field(default=None, repr=False)  # never logged
    on_full: Literal["drop_oldest", "reject"] = "drop_oldest"
    buffer_size: int = 100_000
    max_batch_size: int = 1000
    shutdown_timeout: float = 5.0  # bound on waiting for grpclib's server to close

    def __attrs_post_init__(self) -> None:
        _check_config(self)


class _EventAggregatorServicer(pb.EventAggregatorServiceBase):
    def __init__(self, agent: AggregatorAgent) -> None:
        self._agent = agent

    async def AddEvents(self, stream: Stream[pb.AddEventsRequest, pb.AddEventsReply]) -> None:
        data = await self._agent._receive(stream)
        # This runs in an asyncio task of the trio-asyncio loop, which executes inside a trio
        # task on the same thread; so the buffer's synchronous methods (and the trio
        # ParkingLot they unpark) are safe to call right here. The whole request is handled in
        # this one synchronous call: no trio/asyncio crossing at all, let alone one per event.
        # With a spool that includes its SQLite commit, which costs less than parsing the
        # request (docs/spool.md), so it stays here rather than paying a thread hop and a lock;
        # the slow part, checkpointing with its fsyncs, runs in a worker thread.
        self._agent._add_events(data)
        await stream.send_message(pb.AddEventsReply())  # Ray's reply: empty, status unset


class _ReporterServicer(pb.ReporterServiceBase):
    def __init__(self, agent: AggregatorAgent) -> None:
        self._agent = agent

    async def HealthCheck(self, stream: Stream[pb.HealthCheckRequest, pb.HealthCheckReply]) -> None:
        data = await self._agent._receive(stream)
        self._agent._parse(pb.HealthCheckRequest, data)
        await stream.send_message(pb.HealthCheckReply())


@final
class AggregatorAgent:
    """Ray's aggregator agent as a trio service: ``await nursery.start(agent.run)`` -> port.

    ``buffer`` is shared with the publishers (created from ``config`` when omitted). With
    ``publishers_enabled=False`` the agent behaves like Ray's with no publisher: it accepts
    AddEvents, discards the events and counts them (``trio_events_agent_discarded_events``).
    Each store in ``task_metadata`` receives every accepted request's ``task_events_metadata``.

    ``ray_aggregator_agent_events_received`` counts the events of every accepted request
    (buffered or discarded); refused requests (malformed, oversized, unauthenticated, rejected)
    are counted in their own metrics and leave the buffer unchanged.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        metrics: Metrics,
        buffer: EventBuffer | None = None,
        publishers_enabled: bool = True,
        task_metadata: Sequence[TaskMetadataStore] = (),
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._buffer: EventBuffer = (
            buffer
            if buffer is not None
            else MultiConsumerEventBuffer(
                config.buffer_size, config.max_batch_size, metrics=metrics
            )
        )
        self._publishers_enabled = publishers_enabled
        self._task_metadata = tuple(task_metadata)
        self._warned_discarding = False
        self._port: int | None = None
        token = config.auth_token
        self._authorization = None if token is None else f"Bearer {token}".encode()

    @property
    def buffer(self) -> EventBuffer:
        return self._buffer

    @property
    def port(self) -> int | None:
        """The bound port while :meth:`run` is serving, else None."""
        return self._port

    async def run(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Serve until cancelled; ``task_status.started(port)`` once the socket listens.

        Uses the trio-asyncio loop an enclosing supervisor opened, or opens one. On cancellation
        the server stops accepting, grpclib cancels in-flight handlers, and closing is awaited
        for at most ``config.shutdown_timeout`` seconds.
        """
        sock = await self._bind()  # before the loop: a bind error surfaces unwrapped
        # The server closes the socket when it stops; ``with`` covers failing before that.
        with sock:
            await self._serve(sock, task_status)

    async def _serve(self, sock: socket.socket, task_status: trio.TaskStatus[int]) -> NoReturn:
        async with asyncio_loop():
            server = GrpcServer([_EventAggregatorServicer(self), _ReporterServicer(self)])
            if self._authorization is not None:
                listen(server, RecvRequest, self._authenticate)
            await run_asyncio(server.start, sock=sock)
            try:
                self._port = sock.getsockname()[1]
                logger.info("Aggregator agent listening on %s:%d.", self._config.host, self._port)
                task_status.started(self._port)
                await trio.sleep_forever()
            finally:
                self._port = None
                await self._shut_down(server, sock)

    async def _shut_down(self, server: GrpcServer, sock: socket.socket) -> None:
        # Stop accepting and cancel running handlers (they are short: one synchronous buffer
        # call once the request is in), then close the connections, within the time allowed.
        with trio.move_on_after(self._config.shutdown_timeout, shield=True) as scope:
            try:
                await server.stop_accepting(sock)
            finally:
                server.close()
            await server.close_connections()
            await run_asyncio(server.wait_closed)
        if scope.cancelled_caught:
            logger.warning(
                "The gRPC server did not close within %.1f s; dropping its connections.",
                self._config.shutdown_timeout,
            )
            with trio.move_on_after(1.0, shield=True):  # aborted transports go at once
                await server.close_connections(abort=True)

    async def _bind(self) -> socket.socket:
        # Binding here, not in grpclib, gives us the port without reaching into its Server.
        host, port = self._config.host, self._config.port
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family = infos[0][0]
        sock = socket.create_server((host, port), family=family)
        # create_server leaves proto=0, so asyncio does not set TCP_NODELAY on accepted sockets
        # and every AddEvents reply waited ~40 ms for a delayed ACK (Nagle). Accepted sockets
        # inherit the option from the listener on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def _authenticate(self, event: RecvRequest) -> None:
        assert self._authorization is not None
        given = event.metadata.get("authorization")
        if isinstance(given, str):
            given = given.encode()
        if not isinstance(given, bytes) or not hmac.compare_digest(given, self._authorization):
            self._metrics.agent_invalid_requests.labels("unauthenticated").inc()
            raise GRPCError(
                Status.UNAUTHENTICATED,
                "This aggregator requires 'authorization: Bearer <token>' metadata with its token.",
            )

    async def _receive(self, stream: Stream[Any, Any]) -> bytes:
        try:
            return await recv_raw_message(stream, self._config.max_message_bytes)
        except GRPCError as exc:
            reason = "oversized" if exc.status is Status.RESOURCE_EXHAUSTED else "malformed"
            self._metrics.agent_invalid_requests.labels(reason).inc()
            raise

    def _parse(self, message_type: type[_M], data: bytes) -> _M:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            self._metrics.agent_invalid_requests.labels("malformed").inc()
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"The {message_type.DESCRIPTOR.name} could not be parsed ({exc}).",
            ) from None

    def _add_events(self, data: bytes) -> None:
        """Validate one serialized AddEventsRequest and buffer its events, all or none."""
        events_data = self._parse(pb.AddEventsRequest, data).events_data
        events = events_data.events
        count = len(events)
        reject = self._publishers_enabled and self._config.on_full == "reject"
        if reject and count > (free := self._buffer.free_slots()):
            self._reject(count, f"{free} more events, not {count}")
        if count:
            if self._publishers_enabled:
                self._buffer_events(events, count, reject=reject)
            else:
                self._metrics.events_received.inc(count)
                self._discard(count)
        # Only once the events are in: a request refused above is retried with its metadata.
        for store in self._task_metadata:
            store.add(events_data.task_events_metadata)

    def _reject(self, count: int, room: str) -> NoReturn:
        self._metrics.agent_rejected_events.inc(count)
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"The aggregator's buffer has room for {room}; retry later.",
        )

    def _buffer_events(self, events: Iterable[pb.RayEvent], count: int, *, reject: bool) -> None:
        event_types: list[int] = []
        blobs: list[bytes] = []
        for event in events:
            event_types.append(event.event_type)
            blobs.append(event.SerializeToString())  # unknown fields are kept
        # Only a spool bounds bytes; the in-memory buffer answers None at once.
        if reject and (free := self._buffer.free_bytes()) is not None:
            size = sum(map(len, blobs))
            if size > free:
                self._reject(count, f"{free} more bytes of events, not {size}")
        self._metrics.events_received.inc(count)
        try:
            self._buffer.add_many_nowait(event_types, blobs)
        except trio.ClosedResourceError:
            self._metrics.buffer_add_failures.inc(count)
            raise GRPCError(
                Status.UNAVAILABLE, "The aggregator is shutting down; retry later."
            ) from None
        except trio.BrokenResourceError as exc:  # the spool's file cannot be written
            self._metrics.buffer_add_failures.inc(count)
            logger.error("%s The AddEvents request was refused with UNAVAILABLE.", exc)
            raise GRPCError(
                Status.UNAVAILABLE, "The aggregator cannot store events right now; retry later."
            ) from None

    def _discard(self, count: int) -> None:
        self._metrics.agent_discarded_events.inc(count)
        if not self._warned_discarding:
            self._warned_discarding = True
            logger.warning(
                "No publisher is enabled: AddEvents requests are accepted and their events "
                "discarded (counted in trio_events_agent_discarded_events)."
            )
