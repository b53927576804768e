"""An in-process grpclib aggregator with hooks, served on 127.0.0.1 through the trio bridge."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import grpclib.server

from trio_events import pb
from trio_events._bridge import asyncio_loop, run_asyncio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


@attrs.define
class Received:
    request: pb.AddEventsRequest
    metadata: dict[str, str]


class FakeAggregator(pb.EventAggregatorServiceBase):
    """Records every request; ``hook`` (an asyncio coroutine) runs first and may raise."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.hook: Callable[[pb.AddEventsRequest], Awaitable[None]] | None = None

    async def AddEvents(self, stream) -> None:
        request = await stream.recv_message()
        assert request is not None
        if self.hook is not None:
            await self.hook(request)
        self.received.append(Received(request, {k: v for k, v in stream.metadata.items()}))
        await stream.send_message(pb.AddEventsReply())

    @property
    def event_ids(self) -> list[bytes]:
        return [e.event_id for r in self.received for e in r.request.events_data.events]


@asynccontextmanager
async def serve(servicer: FakeAggregator, port: int = 0) -> AsyncIterator[int]:
    """Serve ``servicer`` on 127.0.0.1 inside a trio-asyncio loop; yields the bound port."""
    async with asyncio_loop():
        server = grpclib.server.Server([servicer])

        async def start() -> int:
            await server.start("127.0.0.1", port)
            listener = server._server
            assert isinstance(listener, asyncio.Server)
            return int(listener.sockets[0].getsockname()[1])

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        bound = await run_asyncio(start)
        try:
            yield bound
        finally:
            await run_asyncio(stop)


def blocking_hook() -> tuple[Callable[[pb.AddEventsRequest], Awaitable[None]], asyncio.Event]:
    """A hook that holds every call until the returned asyncio.Event is set."""
    release = asyncio.Event()

    async def hook(request: pb.AddEventsRequest) -> None:
        await release.wait()

    return hook, release
