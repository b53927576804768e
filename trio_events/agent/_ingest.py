"""The aggregator agent: a grpclib server, hosted on trio through trio-asyncio, feeding the buffer.

It answers ``/ray.rpc.events.EventAggregatorService/AddEvents`` (what Ray's core workers and GCS
call) and ``/ray.rpc.ReporterService/HealthCheck`` (GCS only starts exporting once that succeeds).
Any other path, such as the OpenCensus/OTLP metric exports Ray also sends to this port, gets
grpclib's UNIMPLEMENTED without disturbing anything.

Received events stay serialized: the request is parsed once to validate it and read the event
types (unknown fields and enum values from a newer Ray survive), and each event's bytes are
sliced out of the request (``_wire.py``) and buffered with its event type.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import socket
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, final

import attrs
import trio
import trio_asyncio
from google.protobuf.message import DecodeError, Message
from grpclib.const import Status
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError

from trio_events import pb
from trio_events._bridge import asyncio_loop, run_asyncio
from trio_events._refusal import BUFFER_FULL, REFUSAL_KEY, TOO_LARGE
from trio_events.agent._buffer import EventBuffer, MultiConsumerEventBuffer
from trio_events.agent._grpc_server import GrpcServer, ReceiveBudget, recv_raw_message
from trio_events.agent._spool import (
    SpoolEventBuffer,
    SpoolFullError,
    SpoolStalledError,
)
from trio_events.agent._wire import event_slices

if TYPE_CHECKING:
    from collections.abc import Sequence

    from grpclib.server import Stream

    from trio_events._metrics import Metrics
    from trio_events.agent._task_metadata import TaskMetadataStore

logger = logging.getLogger("trio_events.agent.ingest")

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
    if config.receive_budget_bytes < config.max_message_bytes:
        raise ValueError(
            f"AgentConfig.receive_budget_bytes ({config.receive_budget_bytes}) must be at least "
            f"max_message_bytes ({config.max_message_bytes}), or no request that large could "
            "ever be received."
        )
    if not (config.receive_timeout > 0 and math.isfinite(config.receive_timeout)):
        raise ValueError(
            f"AgentConfig.receive_timeout must be > 0 seconds, got {config.receive_timeout}."
        )
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

    ``receive_budget_bytes`` bounds the bytes of all requests being received at once (each
    counted at the size its prefix announces): a request that would pass it is refused with
    RESOURCE_EXHAUSTED before its body is read. ``receive_timeout`` is how long one request
    may take to arrive once its call has started; a slower one gets DEADLINE_EXCEEDED. Either
    way its memory is released, as it is when the client disconnects.
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_message_bytes: int = 20 * 1024 * 1024  # Ray's AGENT_GRPC_MAX_MESSAGE_LENGTH
    auth_token: str | None = attrs.field(default=None, repr=False)  # never logged
    on_full: Literal["drop_oldest", "reject"] = "drop_oldest"
    buffer_size: int = 100_000
    max_batch_size: int = 1000
    shutdown_timeout: float = 5.0  # bound on waiting for grpclib's server to close
    receive_budget_bytes: int = 64 * 1024 * 1024
    receive_timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        _check_config(self)


class _EventAggregatorServicer(pb.EventAggregatorServiceBase):
    def __init__(self, agent: AggregatorAgent) -> None:
        self._agent = agent

    async def AddEvents(self, stream: Stream[pb.AddEventsRequest, pb.AddEventsReply]) -> None:
        await self._agent.answer_add_events(stream)


class _ReporterServicer(pb.ReporterServiceBase):
    def __init__(self, agent: AggregatorAgent) -> None:
        self._agent = agent

    async def HealthCheck(self, stream: Stream[pb.HealthCheckRequest, pb.HealthCheckReply]) -> None:
        await self._agent.answer_health_check(stream)


class _Refusal(GRPCError):
    """RESOURCE_EXHAUSTED with the reason a sender needs (:mod:`trio_events._refusal`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(Status.RESOURCE_EXHAUSTED, message)
        self.reason = reason

    async def send(self, stream: Stream[Any, Any]) -> None:
        await stream.send_trailing_metadata(
            status=self.status, status_message=self.message, metadata={REFUSAL_KEY: self.reason}
        )


@final
class AggregatorAgent:
    """Ray's aggregator agent as a trio service: ``await nursery.start(agent.run)`` -> port.

    ``buffer`` is shared with the publishers (created from ``config`` when omitted). With
    ``publishers_enabled=False`` the agent behaves like Ray's with no publisher: it accepts
    AddEvents, discards the events and counts them (``trio_events_agent_discarded_events``).
    Each store in ``task_metadata`` receives every accepted request's ``task_events_metadata``.

    Accounting, as Ray's metrics mean it: ``ray_aggregator_agent_events_received`` counts the
    events of every request that reached the buffer (Ray counts every event it tried to add),
    and ``..._events_buffer_add_failures`` those of them the buffer could not take (UNAVAILABLE:
    shutting down, a spool that cannot be written), so received = acknowledged + add failures,
    with ``trio_events_agent_acknowledged_events`` counting the acknowledged ones. Requests
    refused before that (malformed, oversized, unauthenticated, over the receive budget or
    deadline, RESOURCE_EXHAUSTED by the overflow policy or a full spool) are counted in their
    own metrics and not in received.
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
        durable = self._buffer if isinstance(self._buffer, SpoolEventBuffer) else None
        self._spool = durable if publishers_enabled else None
        self._budget = ReceiveBudget(config.receive_budget_bytes)
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

    # --- what the gRPC servicers call ---------------------------------------------------------

    async def answer_add_events(
        self, stream: Stream[pb.AddEventsRequest, pb.AddEventsReply]
    ) -> None:
        """Answer one AddEvents call: receive, validate, buffer all events or none, reply.

        Refusals are gRPC errors, counted; RESOURCE_EXHAUSTED says in its trailing metadata
        whether the message was too large or the buffer full.
        """
        try:
            data = await self._receive(stream)
            # This runs in an asyncio task of the trio-asyncio loop, which executes inside a
            # trio task on the same thread; so the buffer's synchronous methods (and the trio
            # ParkingLot they unpark) are safe to call right here. The whole request is handled
            # in this one synchronous call: no trio/asyncio crossing at all, let alone one per
            # event.
            spool = self._spool
            if spool is None:
                self._add_events(data)
            else:
                # A spool writes in a worker thread (a stalled disk must not freeze the loop):
                # one crossing into trio per request, not per event.
                await trio_asyncio.trio_as_aio(self._add_events_to_spool)(spool, data)
        except _Refusal as refusal:
            await refusal.send(stream)
            return
        await stream.send_message(pb.AddEventsReply())  # Ray's reply: empty, status unset

    async def answer_health_check(
        self, stream: Stream[pb.HealthCheckRequest, pb.HealthCheckReply]
    ) -> None:
        """Answer one ReporterService/HealthCheck call (GCS exports only once it succeeds)."""
        try:
            data = await self._receive(stream)
        except _Refusal as refusal:
            await refusal.send(stream)
            return
        self._parse(pb.HealthCheckRequest, data)
        await stream.send_message(pb.HealthCheckReply())

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
        config = self._config
        try:
            async with asyncio.timeout(config.receive_timeout):
                return await recv_raw_message(stream, config.max_message_bytes, self._budget)
        except TimeoutError:
            self._metrics.agent_refused_streams.labels("receive_deadline").inc()
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"The request did not arrive within {config.receive_timeout} s "
                "(receive_timeout); send it again.",
            ) from None
        except asyncio.CancelledError:
            self._metrics.agent_refused_streams.labels("client_gone").inc()
            raise
        except GRPCError as exc:
            if exc.status is Status.RESOURCE_EXHAUSTED and "budget" in (exc.message or ""):
                # The agent is receiving too much at once: a sender should retry later.
                self._metrics.agent_refused_streams.labels("receive_budget").inc()
                busy = exc.message or "The agent is busy; retry later."
                raise _Refusal(BUFFER_FULL, busy) from None
            if exc.status is Status.RESOURCE_EXHAUSTED:
                self._metrics.agent_invalid_requests.labels("oversized").inc()
                raise _Refusal(TOO_LARGE, exc.message or "The request is too large.") from None
            self._metrics.agent_invalid_requests.labels("malformed").inc()
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
        events_data, types, blobs = self._checked(data)
        if types:
            if self._publishers_enabled:
                self._metrics.events_received.inc(len(types))
                try:
                    self._buffer.add_many_nowait(types, blobs)
                except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                    self._add_failed(len(types), exc)
            else:
                self._metrics.events_received.inc(len(types))
                self._discard(len(types))
        self._accepted(events_data, len(types))

    async def _add_events_to_spool(self, spool: SpoolEventBuffer, data: bytes) -> None:
        """:meth:`_add_events` for a spool, whose write runs in a worker thread (in trio)."""
        events_data, types, blobs = self._checked(data)
        if types:
            try:
                await spool.add_many(types, blobs)
            except SpoolFullError as exc:
                self._metrics.agent_rejected_events.inc(len(types))
                raise _Refusal(BUFFER_FULL, f"{exc} Retry later.") from None
            except SpoolStalledError as exc:
                self._metrics.agent_rejected_events.inc(len(types))
                logger.warning("%s", exc)
                raise GRPCError(Status.UNAVAILABLE, f"{exc} Retry later.") from None
            except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
                self._metrics.events_received.inc(len(types))
                self._add_failed(len(types), exc)
            self._metrics.events_received.inc(len(types))
        self._accepted(events_data, len(types))

    def _checked(self, data: bytes) -> tuple[pb.RayEventsData, list[int], list[bytes]]:
        """Parse a request and apply the overflow policy; its events as types and blobs."""
        events_data = self._parse(pb.AddEventsRequest, data).events_data
        events = events_data.events
        count = len(events)
        reject = self._publishers_enabled and self._config.on_full == "reject"
        if reject and count > (free := self._buffer.free_slots()):
            self._reject(count, f"{free} more events, not {count}")
        if not self._publishers_enabled:
            return events_data, [0] * count, []  # only counted
        types: list[int] = [event.event_type for event in events]
        # Each event's bytes are already in the request: sliced out, not re-encoded (_wire.py).
        sliced = event_slices(data, count)
        blobs = (
            sliced
            if sliced is not None
            else [event.SerializeToString() for event in events]  # unknown fields are kept
        )
        # Only a spool bounds bytes; the in-memory buffer answers None at once.
        if reject and (free_bytes := self._buffer.free_bytes()) is not None:
            size = sum(map(len, blobs))
            if size > free_bytes:
                self._reject(count, f"{free_bytes} more bytes of events, not {size}")
        return events_data, types, blobs

    def _accepted(self, events_data: pb.RayEventsData, count: int) -> None:
        self._metrics.agent_acknowledged_events.inc(count)
        # Only once the events are in: a request refused above is retried with its metadata.
        for store in self._task_metadata:
            store.add(events_data.task_events_metadata)

    def _reject(self, count: int, room: str) -> NoReturn:
        self._metrics.agent_rejected_events.inc(count)
        raise _Refusal(BUFFER_FULL, f"The aggregator's buffer has room for {room}; retry later.")

    def _add_failed(self, count: int, exc: Exception) -> NoReturn:
        self._metrics.buffer_add_failures.inc(count)
        if isinstance(exc, trio.ClosedResourceError):
            raise GRPCError(
                Status.UNAVAILABLE, "The aggregator is shutting down; retry later."
            ) from None
        # The spool's file cannot be written, or was deleted or replaced.
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
