"""A misbehaving HTTP sink on 127.0.0.1: a script decides how each POST is answered.

It speaks HTTP/1.1 through h11 itself (rather than through ``trio_events._http_server``) so
that it can do what no well-behaved server does: hang without answering, reset the connection
in the middle of a body, or present a certificate the client does not trust. Events of the
requests it answers with a 2xx are recorded by id (hex, as the loadgen writes them), with the
number of times each arrived.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from typing import TYPE_CHECKING, Final

import attrs
import h11
import orjson
import trio

from tests.harness import id_hex
from trio_events.store._collector import decode_content

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

_READ: Final = 64 * 1024
_HANG_LIMIT: Final = 60.0  # a hanging request is held at most this long (or until the peer goes)
_IO_TIMEOUT: Final = 30.0


@attrs.frozen
class Reply:
    """How to answer one request: a status (and headers), or a hang, or a reset mid-body."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False
    reset: bool = False

    @property
    def kind(self) -> str:
        return "hang" if self.hang else "reset" if self.reset else str(self.status)


OK = Reply()


@attrs.define
class Seen:
    """One request as the sink handled it (``at`` is trio time)."""

    at: float
    kind: str
    events: int
    index: int = -1  #: the n the script answered (requests on several connections interleave)


class ScriptedSink:
    """``port = await nursery.start(sink.run)``; ``sink.script(n)`` answers the n-th request.

    ``script`` may be replaced while the sink runs (to end a storm, say).
    """

    def __init__(self, script: Callable[[int], Reply] | None = None) -> None:
        self.script: Callable[[int], Reply] = script or (lambda n: OK)
        self.ids: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.handshake_failures = 0
        self._assigned = 0  # requests given an index as their head arrives, in that order
        self._changed = trio.Event()

    @property
    def requests(self) -> int:
        return len(self.seen)

    def kinds(self) -> Counter[str]:
        return Counter(s.kind for s in self.seen)

    async def wait_until(self, predicate: Callable[[], bool], *, within: float) -> None:
        """Until ``predicate()`` holds, re-checked after every request or handshake."""
        with trio.fail_after(within):
            while not predicate():
                await self._changed.wait()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port: int = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept, listener, ssl_context, nursery)
            task_status.started(port)

    async def _accept(
        self,
        listener: trio.SocketListener,
        ssl_context: ssl.SSLContext | None,
        nursery: trio.Nursery,
    ) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._connection, stream, ssl_context)

    async def _connection(self, raw: trio.SocketStream, ssl_context: ssl.SSLContext | None) -> None:
        stream: trio.abc.Stream = raw
        try:
            if ssl_context is not None:
                stream = trio.SSLStream(raw, ssl_context, server_side=True)
                try:
                    with trio.fail_after(_IO_TIMEOUT):
                        await stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    self.handshake_failures += 1
                    self._note()
                    return
            await self._serve(stream, raw)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass  # the client went away, which some scenarios are all about
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream, raw: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            head = await self._next(conn, stream)
            if not isinstance(head, h11.Request):
                return
            index = self._assigned
            self._assigned += 1
            reply = self.script(index)
            if reply.reset:
                # Read one piece of the body at most, then RST: SO_LINGER 0 makes close() abort.
                with trio.move_on_after(1.0):
                    await stream.receive_some(1024)
                self.seen.append(Seen(trio.current_time(), "reset", 0, index))
                self._note()
                raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.socket.close()
                return
            body = bytearray()
            while True:
                event = await self._next(conn, stream)
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            if reply.hang:
                self.seen.append(Seen(trio.current_time(), "hang", 0, index))
                self._note()
                with trio.move_on_after(_HANG_LIMIT):
                    while await stream.receive_some(_READ):
                        pass  # until the client gives up and closes
                return
            events = 0
            if 200 <= reply.status < 300:
                encoding = next(
                    (v.decode() for k, v in head.headers if k == b"content-encoding"), None
                )
                decoded = orjson.loads(decode_content(bytes(body), encoding, 1 << 30))
                events = len(decoded)
                self.ids.update(id_hex(e["eventId"]) for e in decoded)
            self.seen.append(Seen(trio.current_time(), reply.kind, events, index))
            self._note()
            payload = b"ok\n" if reply.status < 300 else b"the scripted sink says no\n"
            headers = [("content-length", str(len(payload))), *reply.headers]
            data = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
            data += conn.send(h11.Data(data=payload)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            with trio.fail_after(_IO_TIMEOUT):
                await stream.send_all(data)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _next(conn: h11.Connection, stream: trio.abc.Stream) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.fail_after(_IO_TIMEOUT):
                conn.receive_data(bytes(await stream.receive_some(_READ)))
