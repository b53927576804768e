"""The one place trio meets asyncio: grpclib runs on a trio-asyncio loop.

grpclib is asyncio-only. Every stage that speaks gRPC enters :func:`asyncio_loop`, which reuses
the trio-asyncio loop an enclosing supervisor already opened (so a whole service shares one
loop) or opens one for the duration of the block. Calls cross the boundary once per RPC with
:func:`run_asyncio`, never once per event.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import trio_asyncio

logger = logging.getLogger("trio_events.bridge")

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

P = ParamSpec("P")
T = TypeVar("T")


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """Make sure a trio-asyncio loop is running in this task tree while the block runs."""
    existing = trio_asyncio.current_loop.get()
    if existing is not None and not existing.is_closed():
        yield
        return
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_unhandled)
        yield


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
    """Await an asyncio coroutine function from trio (inside :func:`asyncio_loop`)."""
    result: T = await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
    return result
