"""A stand-in for Ray's GCS: the two RPCs the task-event publishers call, with hooks.

A real grpclib server on 127.0.0.1 (port 0) on the trio-asyncio loop; ``script`` makes the next
AddEvents calls fail (``"unavailable"``, ``"status"`` for an OK reply with a non-zero status).
"""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from trio_events import pb
from trio_events._bridge import asyncio_loop, run_asyncio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from grpclib.server import Stream


class FakeGcs:
    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests: list[pb.AddEventsRequest] = []  # acknowledged with OK
        self.bodies: list[bytes] = []  # every AddEvents body, as received
        self.kv: dict[tuple[bytes, bytes], bytes] = {}
        self.kv_gets = 0
        self.port = 0

    async def add_events(self, stream: Stream[pb.AddEventsRequest, pb.AddEventsReply]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.bodies.append(request.SerializeToString())
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "unavailable":
            raise GRPCError(Status.UNAVAILABLE, "the GCS is restarting")
        reply = pb.AddEventsReply()
        if outcome == "status":
            reply.status.code = 5
            reply.status.message = "not stored"
        else:
            self.requests.append(request)
        await stream.send_message(reply)

    async def kv_get(self, stream: Stream[pb.InternalKVGetRequest, pb.InternalKVGetReply]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self.kv_gets += 1
        reply = pb.InternalKVGetReply()
        value = self.kv.get((request.namespace, request.key))
        if value is None:
            reply.status.code = 17  # Ray's NotFound
        else:
            reply.value = value
        await stream.send_message(reply)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class _Export(pb.RayEventExportGcsServiceBase):
    def __init__(self, gcs: FakeGcs) -> None:
        self._gcs = gcs

    async def AddEvents(self, stream: Stream[pb.AddEventsRequest, pb.AddEventsReply]) -> None:
        await self._gcs.add_events(stream)


class _Kv(pb.InternalKVGcsServiceBase):
    def __init__(self, gcs: FakeGcs) -> None:
        self._gcs = gcs

    async def InternalKVGet(
        self, stream: Stream[pb.InternalKVGetRequest, pb.InternalKVGetReply]
    ) -> None:
        await self._gcs.kv_get(stream)


@asynccontextmanager
async def running_gcs() -> AsyncIterator[FakeGcs]:
    gcs = FakeGcs()
    async with asyncio_loop():
        server = Server([_Export(gcs), _Kv(gcs)])
        sock = socket.create_server(("127.0.0.1", 0))
        gcs.port = sock.getsockname()[1]
        await run_asyncio(server.start, sock=sock)
        try:
            yield gcs
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                server.close()
                await run_asyncio(server.wait_closed)
