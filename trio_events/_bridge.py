"""The one place trio meets asyncio: grpclib runs on a trio-asyncio loop.

grpclib is asyncio-only. Every stage that speaks gRPC enters :func:`asyncio_loop`, which reuses
the trio-asyncio loop an enclosing supervisor already opened (so a whole service shares one
loop) or opens one for the duration of the block. Calls cross the boundary once per RPC, never
once per event.

:func:`asyncio_loop` yields an :class:`AsyncioLoop`: a reference to the loop that works from any
trio task while the block runs. An object that uses asyncio for its whole life (a client) holds
that reference, so it does not depend on which task happens to call it. :func:`run_asyncio` is
the shorthand for code that runs inside the block's own task tree (the agent's server).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar, final

import trio_asyncio

logger = logging.getLogger("trio_events.bridge")

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

P = ParamSpec("P")
T = TypeVar("T")


@final
class AsyncioLoop:
    """A running trio-asyncio loop, callable from any trio task of the same run while it runs."""

    def __init__(self, loop: trio_asyncio.TrioEventLoop) -> None:
        self._loop = loop

    @property
    def is_closed(self) -> bool:
        return bool(self._loop.is_closed())

    async def run(
        self, fn: Callable[P, Coroutine[object, object, T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await the asyncio coroutine function ``fn`` on this loop; trio cancellation applies."""
        if self._loop.is_closed():
            raise RuntimeError(
                "the asyncio loop this object was opened with has closed; open it again "
                "(async with) before using it."
            )
        result: T = await self._loop.run_aio_coroutine(fn(*args, **kwargs))
        return result


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[AsyncioLoop]:
    """Make sure a trio-asyncio loop is running in this task tree while the block runs."""
    existing = trio_asyncio.current_loop.get()
    if existing is not None and not existing.is_closed():
        yield AsyncioLoop(existing)
        return
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_unhandled)
        yield AsyncioLoop(loop)


def _log_unhandled(loop: object, context: dict[str, object]) -> None:
    # trio-asyncio's default handler re-raises asyncio's "unhandled error" reports into the
    # loop's nursery, which would tear down every gRPC stage for, e.g., a connection that
    # raced the server's close. Such reports describe one connection, not the service: log them.
    exc = context.get("exception")
    logger.error(
        "asyncio reported an unhandled error: %s",
        context.get("message", "no message"),
        exc_info=exc if isinstance(exc, BaseException) else None,
    )


async def run_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await an asyncio coroutine function from a task inside :func:`asyncio_loop`'s block."""
    result: T = await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
    return result
