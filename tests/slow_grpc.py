"""A hostile gRPC client: streams that announce a large AddEvents message and hold it one byte
short (the slowloris of the reliability issue), over raw HTTP/2 (h2) on a trio socket.

Run as ``python -m tests.slow_grpc PORT CONNECTIONS STREAMS SIZE SECONDS`` it holds them for
SECONDS and prints, per stream, the grpc-status it got (or ``open``), as ``status=<n> count``.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter

import h2.config
import h2.connection
import h2.events
import trio

PATH = "/ray.rpc.events.EventAggregatorService/AddEvents"


class SlowConnection:
    """One HTTP/2 connection whose streams each send all but the last byte of a message."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.status: dict[int, str] = {}  # stream id -> grpc-status, once the server answered
        self.closed = False

    async def start(self, streams: int, size: int) -> None:
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(2**30)
        await self._flush()
        body = struct.pack(">?I", False, size) + b"\0" * (size - 1)
        for _ in range(streams):
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(
                sid,
                [
                    (":method", "POST"), (":scheme", "http"), (":path", PATH),
                    (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )  # fmt: skip
            self.status[sid] = "open"
            await self._send_body(sid, body)

    async def _send_body(self, sid: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0 or self.status.get(sid) != "open":
                # Wait for the server to open the window (or answer) before sending more.
                await self.receive_once()
                if self.closed or self.status.get(sid) != "open":
                    return
                continue
            chunk, view = view[:window], view[window:]
            self.h2.send_data(sid, chunk.tobytes())
            await self._flush()

    async def receive_once(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                for name, value in event.headers:
                    if name in (b"grpc-status", "grpc-status"):
                        got = value.decode() if isinstance(value, bytes) else value
                        self.status[event.stream_id] = got
            elif isinstance(event, h2.events.StreamReset):
                self.status.setdefault(event.stream_id, "reset")
                if self.status[event.stream_id] == "open":
                    self.status[event.stream_id] = "reset"
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
        await self._flush()

    async def hold(self, *, until_answered: bool = False) -> None:
        """Keep answering the server (acks, pings) until cancelled or closed, or (with
        ``until_answered``) until every stream has its answer."""
        while not self.closed:
            if until_answered and "open" not in self.status.values():
                return
            await self.receive_once()

    async def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)


async def slowloris(
    port: int, connections: int, streams: int, size: int, seconds: float | None
) -> Counter[str]:
    """Hold ``connections`` x ``streams`` streams for ``seconds`` (None: until each has its
    answer); their statuses, counted (``open``: no answer yet)."""
    conns: list[SlowConnection] = []
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            conn = SlowConnection(await trio.open_tcp_stream("127.0.0.1", port))
            conns.append(conn)

            async def run(c: SlowConnection = conn) -> None:
                await c.start(streams, size)
                await c.hold(until_answered=seconds is None)

            nursery.start_soon(run)
        if seconds is not None:
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()
    for conn in conns:
        await conn.stream.aclose()
    return Counter(status for conn in conns for status in conn.status.values())


def main() -> None:
    port, connections, streams, size = (int(a) for a in sys.argv[1:5])
    seconds = float(sys.argv[5])
    counts = trio.run(slowloris, port, connections, streams, size, seconds)
    for status, count in sorted(counts.items()):
        print(f"status={status} {count}", flush=True)


if __name__ == "__main__":
    main()
