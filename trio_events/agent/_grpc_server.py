"""grpclib plumbing for the agent: a server that can really shut down, and a bounded receive.

Two gaps in grpclib 0.4 that the aggregator cannot live with:

- ``Server.close()`` leaves accepted connections open (grpclib#21); :class:`GrpcServer` tracks
  them so shutdown can close them.
- There is no maximum message size; :func:`recv_raw_message` refuses an oversized request from
  its length prefix, before the body is buffered, and one that would take the bytes being
  received by all streams past a :class:`ReceiveBudget`.

Both lean on grpclib internals (``Server._protocol_factory``, ``server.Stream._stream``), stable
across grpclib 0.4.x; the agent's tests exercise both over real sockets.

One CPU fix: h2 formats ``repr(frame)`` for every frame it receives, whether or not anything
logs it, and hyperframe's repr of a DATA frame hex-encodes the whole payload (16 KiB) only to
keep its first 20 hex digits: about 10% of the agent's ingest CPU. :func:`_short_data_repr`
gives the same text from the first bytes only.
"""

from __future__ import annotations

import asyncio
import binascii
import struct
from typing import TYPE_CHECKING, Any, cast, final

import hyperframe.frame
import trio
import trio_asyncio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from trio_events._bridge import run_asyncio

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

    from grpclib._typing import IServable
    from grpclib.protocol import H2Protocol


def _short_data_repr(data: bytes | None) -> str:
    """``hyperframe.frame._raw_data_repr`` (the same text) without hex-encoding all of ``data``."""
    if not data:
        return "None"
    r = binascii.hexlify(data[:10]).decode("ascii")
    return f"<hex:{r}...>" if len(data) > 10 else f"<hex:{r}>"


# h2 calls repr(frame) for each received frame before its (no-op by default) logger sees it.
hyperframe.frame._raw_data_repr = _short_data_repr


class _Connection(asyncio.Protocol):
    """Forwards to grpclib's protocol and keeps the transport, so that shutdown can close it."""

    def __init__(self, protocol: H2Protocol, live: set[_Connection]) -> None:
        self._protocol = protocol
        self._live = live
        self._transport: asyncio.Transport | None = None
        self._close_when_made = False
        self.lost = trio.Event()  # set from the asyncio side, which runs inside a trio task
        live.add(self)  # from creation: shutdown may come before connection_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        self._protocol.connection_made(transport)
        if self._close_when_made:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._live.discard(self)
            self.lost.set()

    def close(self, *, abort: bool = False) -> None:
        if self._transport is None:
            self._close_when_made = True
        elif abort:
            self._transport.abort()
        else:
            self._transport.close()


@final
class GrpcServer(Server):
    """grpclib's server, keeping track of its connections so that shutdown can close them.

    grpclib's ``Server.close()`` stops listening and cancels running handlers but leaves
    accepted connections open (grpclib#21): they go on serving new calls, ``wait_closed`` can
    wait for them forever (Python 3.12+), and their sockets leak once the loop closes.
    """

    def __init__(self, handlers: Sequence[IServable]) -> None:
        super().__init__(handlers)
        self._connections: set[_Connection] = set()

    # asyncio only needs a Protocol here; grpclib's annotation names its own class.
    def _protocol_factory(self) -> _Connection:  # type: ignore[override]
        return _Connection(super()._protocol_factory(), self._connections)

    async def stop_accepting(self, sock: socket.socket) -> None:
        """Stop accepting, then let connections asyncio already accepted reach our factory.

        Python 3.11's asyncio fails (AssertionError in ``Server._attach``, which trio-asyncio
        re-raises into the loop) for a connection accepted just before ``Server.close()``.
        """
        trio_asyncio.current_loop.get().remove_reader(sock.fileno())
        await run_asyncio(asyncio.sleep, 0)

    async def close_connections(self, *, abort: bool = False) -> None:
        """Close every connection (flushing what is queued, unless aborting); wait until gone."""
        while self._connections:
            connection = next(iter(self._connections))
            connection.close(abort=abort)
            await connection.lost.wait()


@final
class ReceiveBudget:
    """The bytes all requests being received at once may announce (see recv_raw_message).

    Used from the asyncio loop's thread only; a reservation is given back when its request
    has been received, refused, cancelled (a client that disconnects) or timed out.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0

    def reserve(self, size: int) -> None:
        if self.reserved + size > self.limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"Requests being received already take {self.reserved} bytes of this server's "
                f"receive budget of {self.limit}; this one ({size} bytes) must wait. Retry later.",
            )
        self.reserved += size

    def release(self, size: int) -> None:
        self.reserved -= size


async def recv_raw_message(
    stream: Stream[Any, Any], limit: int, budget: ReceiveBudget | None = None
) -> bytes:
    """Receive a unary request's serialized message, refusing one larger than ``limit`` bytes.

    grpclib has no maximum message size: ``Stream.recv_message`` buffers whatever length the
    5-byte gRPC prefix announces (up to 4 GiB). So we do its two reads ourselves on grpclib's
    HTTP/2 stream (``Stream._stream``, private, like ``Server._protocol_factory``) and refuse an
    oversized message before its body is read. The error reply ends the stream with
    RST_STREAM(NO_ERROR); the connection and other calls on it carry on.
    """
    h2_stream = stream._stream
    prefix = await _recv_exactly(h2_stream, 5, "its 5-byte message prefix")
    if len(prefix) < 5:
        raise GRPCError(Status.INVALID_ARGUMENT, "The request carried no message.")
    compressed, length = struct.unpack(">?I", prefix)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "Compressed requests are not supported.")
    if length > limit:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"The request message is {length} bytes, more than this server's limit of {limit}.",
        )
    if budget is None:
        return await _recv_exactly(h2_stream, length, f"the {length} bytes its prefix announces")
    budget.reserve(length)
    try:
        return await _recv_exactly(h2_stream, length, f"the {length} bytes its prefix announces")
    finally:
        budget.release(length)


async def _recv_exactly(h2_stream: Any, size: int, what: str) -> bytes:
    """``size`` bytes, or b"" if the stream ended before any; a request cut short in between is
    the client's error. grpclib's buffer signals that with an AssertionError ("Received less
    data than expected"), which would otherwise reach the client as UNKNOWN and be logged as
    an application error with a traceback."""
    try:
        return bytes(await h2_stream.recv_data(size))
    except AssertionError:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"The request ended before {what} had arrived."
        ) from None
