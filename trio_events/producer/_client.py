"""The recorder's side of ``AddEvents``: a grpclib channel hosted on trio, errors mapped once.

grpclib is asyncio-only, so the client holds a trio-asyncio loop (:mod:`trio_events._bridge`)
from ``async with client`` to its end, and every call crosses into it once per RPC, never per
event, from whichever trio task makes the call. Everything grpclib or the socket layer can
raise is translated into :class:`ExportError` by :func:`classify`, the one place that decides
which failures are worth retrying.
"""

from __future__ import annotations

import ipaddress
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, final

import trio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from trio_events import pb
from trio_events._bridge import AsyncioLoop, asyncio_loop
from trio_events._refusal import too_large

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

# Closing a channel is local work; the bound only guards against one that misbehaves.
_CLOSE_TIMEOUT = 1.0


class ExportError(Exception):
    """An ``AddEvents`` export that did not succeed.

    ``reason`` is a short label for logs and metrics (``"unavailable"``, ``"deadline"``,
    ``"resource_exhausted"``, ``"unauthenticated"``, ``"rejected"`` ...). ``retryable`` says
    whether sending the same events again may succeed; a non-retryable export never will.
    """

    retryable: ClassVar[bool] = False
    #: True when the aggregator refused with RESOURCE_EXHAUSTED: keep the events and send them
    #: in smaller requests, or later.
    backpressure: ClassVar[bool] = False
    #: True when the aggregator refused the request for its size: a smaller request may pass,
    #: the same one never will.
    too_large: ClassVar[bool] = False

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RetryableExportError(ExportError):
    """A transient failure (aggregator down, connection reset, deadline): send again later."""

    retryable = True


@final
class BackpressureError(RetryableExportError):
    """The aggregator refused the events because it is full: keep them, back off, retry."""

    backpressure = True


@final
class RequestTooLargeError(RetryableExportError):
    """The aggregator refused the request for its size (RESOURCE_EXHAUSTED).

    Smaller requests may pass; a request of one event refused so never will, and the recorder
    drops that event with reason ``oversized``.
    """

    backpressure = True
    too_large = True


class AddEventsClient(Protocol):
    """What a recorder needs from a client; tests pass fakes with the same two methods.

    A client that needs something for its whole life (:class:`EventAggregatorClient`: an
    asyncio loop) is also an async context manager, which the recorder's ``run()`` enters.
    """

    # The deadline is a parameter (not only a cancel scope) because gRPC sends it to the server.
    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None: ...  # noqa: ASYNC109

    async def aclose(self) -> None: ...


# gRPC statuses after which the same request may succeed. Everything else is the server saying
# "not like this" (bad request, wrong service, no permission), and resending will not help.
_RETRYABLE_STATUS: dict[Status, str] = {
    Status.UNAVAILABLE: "unavailable",
    Status.DEADLINE_EXCEEDED: "deadline",
    Status.ABORTED: "aborted",
    Status.CANCELLED: "cancelled",
    # A crash or bug on the server side is often transient (restart, overload); the ring's bound
    # limits what a batch that keeps failing can cost.
    Status.INTERNAL: "internal",
    Status.UNKNOWN: "internal",
}
_PERMANENT_STATUS: dict[Status, str] = {
    Status.UNAUTHENTICATED: "unauthenticated",
    Status.PERMISSION_DENIED: "unauthenticated",
    Status.UNIMPLEMENTED: "unimplemented",
}


def classify(
    exc: BaseException,
    *,
    trailing_metadata: Mapping[str, object] | None = None,
    request_bytes: int = 0,
) -> ExportError | None:
    """The :class:`ExportError` for a failure of one ``AddEvents`` call, or None if it is a bug.

    This is the only place that maps transport and gRPC errors to retry decisions. For
    RESOURCE_EXHAUSTED, the answer's trailing metadata (:mod:`trio_events._refusal`), or else
    the request's size, tells a request that is too large from an aggregator that is full.
    """
    if isinstance(exc, GRPCError):
        detail = f"AddEvents failed with {exc.status.name}: {exc.message or 'no message'}."
        if exc.status is Status.RESOURCE_EXHAUSTED:
            if too_large(trailing_metadata, request_bytes):
                return RequestTooLargeError(detail, reason="resource_exhausted")
            return BackpressureError(detail, reason="resource_exhausted")
        if exc.status in _RETRYABLE_STATUS:
            return RetryableExportError(detail, reason=_RETRYABLE_STATUS[exc.status])
        return ExportError(detail, reason=_PERMANENT_STATUS.get(exc.status, "rejected"))
    if isinstance(exc, TimeoutError):  # grpclib's client-side deadline (asyncio.TimeoutError)
        return RetryableExportError(
            "AddEvents did not complete before its deadline.", reason="deadline"
        )
    if isinstance(exc, OSError | StreamTerminatedError | ProtocolError):
        return RetryableExportError(
            f"AddEvents could not reach the aggregator: {type(exc).__name__}: {exc}.",
            reason="unavailable",
        )
    return None


def parse_target(target: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) as ``(host, port)``."""
    host, sep, port_text = target.rpartition(":")
    valid = bool(sep and host and port_text.isdigit() and 0 < int(port_text) < 65536)
    if valid and host.startswith("["):
        host = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            valid = False
    if not valid:
        raise ValueError(
            f"target {target!r} is not HOST:PORT; pass e.g. 127.0.0.1:50051 or [::1]:50051."
        )
    return host, int(port_text)


@final
class EventAggregatorClient:
    """Sends ``AddEventsRequest``s to one aggregator (``/ray.rpc.events.EventAggregatorService``).

    Use it as ``async with EventAggregatorClient(target) as client:``; a recorder's ``run()``
    does that for the client it owns. From entry to exit the client holds a trio-asyncio loop
    (the one already running in the entering task, or its own), so any trio task may call it
    meanwhile. Entering again while it is open is allowed; the outermost exit closes it. The
    channel connects lazily on the first call and reconnects after a failure. ``token``, when
    given, is sent as ``authorization: Bearer <token>`` and never appears in logs or reprs.
    """

    def __init__(self, target: str, *, token: str | None = None) -> None:
        self._host, self._port = parse_target(target)
        self.target = target
        self._metadata: dict[str, str] = {}
        if token is not None:
            if not token or "\n" in token:
                raise ValueError("token must be a non-empty single line; check the token file.")
            self._metadata["authorization"] = f"Bearer {token}"
        self._channel: Channel | None = None
        self._stub: pb.EventAggregatorServiceStub | None = None
        self._closed = False
        self._loop: AsyncioLoop | None = None
        self._loop_stack: AsyncExitStack | None = None
        self._entered = 0

    def __repr__(self) -> str:
        return f"EventAggregatorClient({self.target!r}, token={'***' if self._metadata else None})"

    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        """Send one request; raise :class:`ExportError` unless the aggregator acknowledged it."""
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        if self._closed:
            raise RuntimeError("this EventAggregatorClient was closed; create a new one.")
        if self._loop is None:
            raise RuntimeError(
                "this EventAggregatorClient is not open; use it as `async with "
                "EventAggregatorClient(target) as client:` or give it to a running recorder."
            )
        await self._loop.run(self._add_events, request, timeout)

    async def _add_events(self, request: pb.AddEventsRequest, seconds: float) -> None:
        # Runs on the asyncio side: grpclib needs the running loop when the channel is created.
        if self._stub is None:
            self._channel = Channel(self._host, self._port)
            self._stub = pb.EventAggregatorServiceStub(self._channel)
        stream = None
        try:
            async with self._stub.AddEvents.open(
                timeout=seconds, metadata=self._metadata
            ) as stream:
                await stream.send_message(request, end=True)
                await stream.recv_message()
        except (GRPCError, TimeoutError, OSError, StreamTerminatedError, ProtocolError) as exc:
            # A RESOURCE_EXHAUSTED answer says why in its trailing metadata.
            mapped = classify(
                exc,
                trailing_metadata=None if stream is None else stream.trailing_metadata,
                request_bytes=request.ByteSize(),
            )
            assert mapped is not None
            raise mapped from exc

    async def aclose(self) -> None:
        """Close the connection (idempotent); the loop is let go where ``async with`` ends."""
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None and self._loop is not None and not self._loop.is_closed:
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await self._loop.run(self._close_channel, channel)

    @staticmethod
    async def _close_channel(channel: Channel) -> None:
        channel.close()

    async def __aenter__(self) -> Self:
        if self._closed:
            raise RuntimeError("this EventAggregatorClient was closed; create a new one.")
        self._entered += 1
        if self._entered == 1:
            stack = AsyncExitStack()
            try:
                self._loop = await stack.enter_async_context(asyncio_loop())
            except BaseException:
                self._entered -= 1
                raise
            self._loop_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered -= 1
        if self._entered:
            return
        stack, self._loop_stack = self._loop_stack, None
        try:
            with trio.CancelScope(shield=True):  # bounded: aclose waits _CLOSE_TIMEOUT at most
                await self.aclose()
        finally:
            self._loop = None
            if stack is not None:
                await stack.__aexit__(exc_type, exc, tb)
