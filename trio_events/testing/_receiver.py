"""An in-process HTTP receiver that captures what a publisher POSTs and can be told to fail.

It speaks HTTP/1.1 through h11 itself so that it can misbehave as no well-behaved server does:
answer late, or reset the connection instead of answering. Like ``httpx.MockTransport``, a
handler decides each answer::

    receiver = CapturingReceiver(lambda request: Reply(503) if request.number < 3 else Reply())
    port = await nursery.start(receiver.run)
"""

from __future__ import annotations

import inspect
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import h11
import orjson
import trio

from trio_events.store._collector import BadBodyError, decode_content

_READ: Final = 64 * 1024
_MAX_BODY: Final = 64 * 1024 * 1024
_IO_TIMEOUT: Final = 30.0


@final
@attrs.frozen
class Reply:
    """How to answer one request: a status with headers and body, after ``delay`` seconds; or,
    with ``reset``, no answer at all but a TCP reset (after the delay)."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0
    reset: bool = False


@final
@attrs.frozen
class CapturedRequest:
    """One request as received. ``events`` is the parsed JSON array of a POST (None when the
    body is not one); ``number`` counts requests from 0; ``answer`` is how it was answered."""

    number: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    events: list[dict[str, Any]] | None
    answer: Reply | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k == lowered), None)


Handler = Callable[[CapturedRequest], "Reply | Awaitable[Reply]"]


def _parse_events(body: bytes, encoding: str | None) -> list[dict[str, Any]] | None:
    try:
        value = orjson.loads(decode_content(body, encoding, _MAX_BODY))
    except (BadBodyError, orjson.JSONDecodeError):
        return None
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    return None


@final
class CapturingReceiver:
    """``port = await nursery.start(receiver.run)``; POSTs land in :attr:`requests`.

    :attr:`events` holds the events of the requests answered with a 2xx, in arrival order
    (what a publisher counts as delivered). Queue failures with :meth:`fail_next`, or pass a
    ``handler`` (sync or async) that returns a :class:`Reply` for each request.
    """

    def __init__(self, handler: Handler | None = None) -> None:
        self._handler = handler
        self._queued: deque[Reply] = deque()
        self.requests: list[CapturedRequest] = []
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("The receiver is not running; start it with nursery.start(run).")
        return self._port

    @property
    def url(self) -> str:
        """Where to POST: ``http://127.0.0.1:PORT/v1/events``."""
        return f"http://127.0.0.1:{self.port}/v1/events"

    def fail_next(self, count: int, reply: Reply) -> None:
        """Answer the next ``count`` requests with ``reply`` (before the handler is asked)."""
        self._queued.extend([reply] * count)

    async def wait_for_events(self, count: int, *, within: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events were accepted; all accepted events so far."""
        with trio.fail_after(within):
            while len(self.events) < count:
                await self._changed.wait()
        return list(self.events)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 (a free port) until cancelled; ``started()`` gets the port."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self._port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve, listeners)
                task_status.started(self._port)
        finally:
            self._port = None

    async def _answer_for(self, request: CapturedRequest) -> Reply:
        if self._queued:
            return self._queued.popleft()
        if self._handler is None:
            return Reply()
        answer = self._handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while True:
                    request = await self._read(stream, conn)
                    if request is None:
                        return
                    answer = await self._answer_for(request)
                    request = attrs.evolve(request, answer=answer)
                    self.requests.append(request)
                    await trio.sleep(answer.delay)
                    if answer.reset:
                        _reset(stream)
                        return
                    if 200 <= answer.status < 300 and request.events is not None:
                        self.events += request.events
                    self._changed.set()
                    self._changed = trio.Event()
                    await self._respond(stream, conn, answer)
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return  # the client went away or spoke nonsense: nothing to capture

    async def _read(
        self, stream: trio.SocketStream, conn: h11.Connection
    ) -> CapturedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        with trio.fail_after(_IO_TIMEOUT):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(_READ)
                    if not data and head is None:
                        return None
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return None
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
        encoding = next((v for k, v in headers if k == "content-encoding"), None)
        return CapturedRequest(
            number=len(self.requests),
            method=head.method.decode("ascii"),
            path=head.target.decode("latin-1"),
            headers=headers,
            body=bytes(body),
            events=_parse_events(bytes(body), encoding) if head.method == b"POST" else None,
        )

    async def _respond(self, stream: trio.SocketStream, conn: h11.Connection, reply: Reply) -> None:
        headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
        data = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
        if reply.body:
            data += conn.send(h11.Data(data=reply.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        with trio.fail_after(_IO_TIMEOUT):
            await stream.send_all(data)


def _reset(stream: trio.SocketStream) -> None:
    """Close with a TCP RST: SO_LINGER with a zero timeout, then close."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()
