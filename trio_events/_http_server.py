"""A small HTTP/1.1 server on trio and h11: the collector's ingest endpoint, /metrics, /healthz.

Requests are read whole (bounded by ``max_body_bytes``) and handed to one async handler; its
:class:`Response` is sent with a ``Content-Length``. Robustness is the point, not features:

- keep-alive, pipelining-safe (one request at a time per connection), ``Expect: 100-continue``;
- 400 (or h11's 431) for malformed requests, 413 for oversized bodies (from ``Content-Length``
  before reading, or while reading a chunked body), 408 when a started request does not arrive
  within ``request_timeout``; an idle keep-alive connection is closed after ``idle_timeout``;
- at most ``max_connections`` connections are served at once; further ones wait in the kernel's
  accept backlog, so memory is bounded by roughly ``max_connections * max_body_bytes``; when
  every slot is taken and a new connection is waiting, the connection idle the longest (between
  requests, or connected and silent) is closed to make room, so idle clients can never lock out
  a liveness probe (``/healthz``);
- ``on_refusal(status)`` is called for every request the server itself refuses (400, 408, 413,
  431), so an application can count them with its own refusals;
- a handler that raises gets a 500 and a logged traceback, and the server goes on serving.
"""

from __future__ import annotations

import email.utils
import errno
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn, final

import attrs
import h11
import trio

logger = logging.getLogger("trio_events.http_server")

DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS: Final = 64
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
DEFAULT_IDLE_TIMEOUT: Final = 60.0

_READ_SIZE: Final = 64 * 1024
_MAX_HEADER_BYTES: Final = 64 * 1024
# After an error answer we stop reading the request; closing with unread bytes makes the kernel
# send a reset that can destroy the answer in flight, so read and discard for a moment first.
_LINGER_SECONDS: Final = 1.0
# Out-of-resource accept errors, retried after a pause (as trio.serve_listeners does).
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_DELAY: Final = 0.1
# Framing is the server's job; a handler's values for these would contradict the real body.
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})


@final
@attrs.frozen
class Request:
    """One complete request. Header names are lower-case, in the order they were received."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k == lowered), None)


@final
@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, message: str) -> Response:
        """A plain-text response; a newline is added so ``curl`` output ends cleanly."""
        body = (message + "\n").encode()
        return cls(status, body, (("content-type", "text/plain; charset=utf-8"),))

    @classmethod
    def json(cls, status: int, body: bytes) -> Response:
        """A response carrying already-encoded JSON."""
        return cls(status, body, (("content-type", "application/json"),))


Handler = Callable[[Request], Awaitable[Response]]


def _ignore_refusal(status: int) -> None:
    pass


@final
@attrs.frozen
class _Limits:
    max_body_bytes: int
    request_timeout: float
    idle_timeout: float
    on_refusal: Callable[[int], None] = _ignore_refusal


@final
class _Pool:
    """The connection slots, and the connections idle now (oldest first), which may be evicted."""

    def __init__(self, size: int) -> None:
        self.slots = trio.Semaphore(size)
        self.idle: dict[object, trio.CancelScope] = {}
        self.changed = trio.lowlevel.ParkingLot()  # a slot was released or a connection idles

    def set_idle(self, key: object, scope: trio.CancelScope) -> None:
        self.idle[key] = scope
        self.changed.unpark_all()

    def release(self) -> None:
        self.slots.release()
        self.changed.unpark_all()

    async def make_room(self, listener: trio.SocketListener) -> None:
        """When every slot is taken: once a connection waits to be accepted, close the one idle
        the longest; return when a slot is free or one is being freed."""
        while not self.slots.value:
            await trio.lowlevel.wait_readable(listener.socket)
            if self.slots.value:
                return
            if self.evict_oldest_idle():
                logger.debug("All HTTP connection slots are taken; closed an idle connection.")
                return
            await self.changed.park()

    def evict_oldest_idle(self) -> bool:
        for key, scope in self.idle.items():
            del self.idle[key]
            scope.cancel()
            return True
        return False


async def serve_http(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    on_refusal: Callable[[int], None] = _ignore_refusal,
) -> NoReturn:
    """Serve ``handler`` on ``host:port`` until cancelled; ``started()`` gets the bound port.

    ``host=None`` listens on every interface. With ``port=0`` the kernel picks a port; if the
    host resolves to several addresses only the first is served, since each would get a
    different port and the caller can only be told one.
    """
    if max_body_bytes < 0:
        raise ValueError(f"max_body_bytes must be >= 0, not {max_body_bytes}.")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, not {max_connections}.")
    if request_timeout <= 0 or idle_timeout <= 0:
        raise ValueError("request_timeout and idle_timeout must be positive numbers of seconds.")
    limits = _Limits(max_body_bytes, request_timeout, idle_timeout, on_refusal)
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0:
        for extra in listeners[1:]:
            extra.socket.close()  # synchronous, so no checkpoint can leave a listener unowned
        del listeners[1:]
    bound_port: int = listeners[0].socket.getsockname()[1]
    pool = _Pool(max_connections)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, pool, nursery, handler, limits)
        task_status.started(bound_port)
    raise AssertionError("The accept loops of serve_http returned, which they never do.")


async def _accept_loop(
    listener: trio.SocketListener,
    pool: _Pool,
    nursery: trio.Nursery,
    handler: Handler,
    limits: _Limits,
) -> NoReturn:
    slots = pool.slots
    async with listener:
        while True:
            await pool.make_room(listener)
            # Take a slot before accepting, so excess connections queue in the kernel backlog
            # instead of in our memory.
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                pool.release()
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                logger.error(
                    "accept() failed with %s (%s); retrying in %s s.",
                    errno.errorcode.get(exc.errno, exc.errno),
                    exc.strerror,
                    _ACCEPT_RETRY_DELAY,
                )
                await trio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            except BaseException:
                pool.release()
                raise
            nursery.start_soon(_serve_connection, stream, pool, handler, limits)


async def _serve_connection(
    stream: trio.SocketStream, pool: _Pool, handler: Handler, limits: _Limits
) -> None:
    try:
        async with stream:
            await _Connection(stream, handler, limits, pool).serve()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # The peer went away mid-exchange: that ends this connection, not the server.
        logger.debug("HTTP connection ended by the peer: %r", exc)
    finally:
        pool.release()


class _StopConnection(Exception):
    """Raised inside a connection to close it after whatever answer was possible was sent."""


class _BodyTooLarge(Exception):
    pass


@final
class _Connection:
    def __init__(
        self, stream: trio.SocketStream, handler: Handler, limits: _Limits, pool: _Pool
    ) -> None:
        self._stream = stream
        self._handler = handler
        self._limits = limits
        self._pool = pool
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)

    async def serve(self) -> None:
        try:
            while True:
                request = await self._read_request()
                response = await self._respond_to(request)
                await self._send(response, method=request.method)
                if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
                    return  # Connection: close (either side) or HTTP/1.0
                self._h11.start_next_cycle()
        except _StopConnection:
            return

    async def _read_request(self) -> Request:
        # Waiting for the first byte of a request is idle time; once it has started, the whole
        # request (headers and body) must arrive within request_timeout.
        buffered, closed = self._h11.trailing_data
        if not buffered and not closed:
            with trio.move_on_after(self._limits.idle_timeout) as idle:
                self._pool.set_idle(self, idle)  # evictable while it waits here
                try:
                    await self._receive()
                finally:
                    self._pool.idle.pop(self, None)
            if idle.cancelled_caught:
                raise _StopConnection
        limit = self._limits.max_body_bytes
        try:
            with trio.move_on_after(self._limits.request_timeout):
                return await self._read_request_events(limit)
        except h11.RemoteProtocolError as exc:
            await self._fail(exc.error_status_hint, f"Malformed HTTP request: {exc}.")
        except _BodyTooLarge:
            await self._fail(413, f"The request body exceeds the limit of {limit} bytes.")
        await self._fail(408, "The request did not arrive in time.")

    async def _read_request_events(self, limit: int) -> Request:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
            elif isinstance(event, h11.Request):
                head = event
                length = _content_length(event)
                if length is not None and length > limit:
                    raise _BodyTooLarge
                if self._h11.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(status_code=100, headers=[])
                    await self._send_bytes(self._h11.send(continue_))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
                method, target = head.method.decode("ascii"), head.target.decode("ascii", "replace")
                return Request(method, target, headers, bytes(body))
            else:  # ConnectionClosed (EOF between requests), or PAUSED, which cannot happen here
                raise _StopConnection

    async def _receive(self) -> None:
        # b"" tells h11 about EOF: between requests it becomes ConnectionClosed, in the middle of
        # one a RemoteProtocolError.
        self._h11.receive_data(await self._stream.receive_some(_READ_SIZE))

    async def _respond_to(self, request: Request) -> tuple[h11.Response, bytes]:
        try:
            response = await self._handler(request)
            return _to_h11(response)
        except Exception:
            # The one deliberate catch-all: a bug in one handler must not take the whole server
            # down with it (it also serves the agent's /metrics and /healthz). The client gets a
            # 500, the traceback is logged, the next request is served. Cancellation is a
            # BaseException and passes through.
            logger.exception("The HTTP handler failed on %s %s.", request.method, request.target)
            return _to_h11(Response.text(500, "Internal server error."))

    async def _send(self, response: tuple[h11.Response, bytes], *, method: str) -> None:
        head, body = response
        data = self._h11.send(head) or b""
        if body and method != "HEAD" and head.status_code not in (204, 304):
            data += self._h11.send(h11.Data(data=body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        await self._send_bytes(data)

    async def _send_bytes(self, data: bytes | None) -> None:
        # Writes get the same deadline as reads: a client that stops reading cannot pin a slot.
        with trio.move_on_after(self._limits.request_timeout):
            await self._stream.send_all(data or b"")
            return
        raise _StopConnection

    async def _fail(self, status: int, reason: str) -> NoReturn:
        """Answer an unreadable request with ``status`` (if still possible), then close."""
        self._limits.on_refusal(status)
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            head, body = _to_h11(Response.text(status, reason), close=True)
            try:
                await self._send((head, body), method="")
            except h11.LocalProtocolError:
                pass  # h11 knows the exchange cannot be answered any more
            else:
                await self._linger()
        raise _StopConnection

    async def _linger(self) -> None:
        with trio.move_on_after(_LINGER_SECONDS):
            await self._stream.send_eof()
            while await self._stream.receive_some(_READ_SIZE):
                pass


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has already checked that it is a number
    return None


def _to_h11(response: Response, *, close: bool = False) -> tuple[h11.Response, bytes]:
    headers = [(k, v) for k, v in response.headers if k.lower() not in _FRAMING_HEADERS]
    headers.append(("date", email.utils.formatdate(usegmt=True)))
    if response.status not in (204, 304):
        headers.append(("content-length", str(len(response.body))))
    if close:
        headers.append(("connection", "close"))
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    head = h11.Response(status_code=response.status, headers=headers, reason=reason)
    return head, response.body
