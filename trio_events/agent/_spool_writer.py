"""The spool's writer: every write in a worker thread, one at a time, checked and watched.

:class:`SpoolWriter` is what lets the spool say when it cannot keep its promise. It owns the
lock that serializes the spool's writes (a request's chunk, the persister's cursors) and the
``CapacityLimiter(1)`` that runs them in a worker thread, so a slow or frozen disk blocks that
thread and never the event loop. Before a chunk is written it checks, in that thread, that the
path still names the file opened (else :class:`SpoolReplacedError`, for good) and that the
bound and the file system have room (else :class:`SpoolFullError`, after trying once to give
free pages and the WAL back). It remembers why it last failed, for ``/healthz``
(:meth:`SpoolWriter.problem`), and refuses a request at once when the write in flight has run
longer than ``write_timeout`` (:class:`SpoolStalledError`).
"""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import trio

from trio_events.agent._spool_db import (
    SpoolFile,
    SpoolFullError,
    SpoolReplacedError,
    is_disk_full,
    logger,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class SpoolStalledError(Exception):
    """A write has been in flight longer than ``write_timeout`` (a stalled disk); requests are
    refused until it finishes. ``str()`` is one sentence."""


@final
class SpoolWriter:
    """Serialized, checked writes of one :class:`SpoolFile` in a worker thread."""

    def __init__(self, file: SpoolFile, write_timeout: float) -> None:
        self._file = file
        self._timeout = write_timeout
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)  # one SQLite call in a worker thread at a time
        self._started: float | None = None  # trio time the chunk write in flight began
        self.full: str | None = None  # why the last chunk found no room (clears on success)
        self._replaced: str | None = None  # the file was deleted or replaced (for good)

    def problem(self) -> str | None:
        """Why the spool cannot keep its promise now (for /healthz), or None."""
        if self._replaced is not None:
            return self._replaced
        if self._started is not None and trio.current_time() - self._started > self._timeout:
            return self._stalled_sentence()
        return self.full

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the writer: at once refused when the file is gone or a write is stalled, and
        refused after waiting ``write_timeout`` for the write in flight."""
        if self._replaced is not None:
            raise trio.BrokenResourceError(self._replaced)
        if self._started is not None and trio.current_time() - self._started > self._timeout:
            raise SpoolStalledError(self._stalled_sentence())
        try:
            with trio.fail_after(self._timeout):
                await self._lock.acquire()
        except trio.TooSlowError:
            raise SpoolStalledError(self._stalled_sentence()) from None
        try:
            yield
        finally:
            self._lock.release()

    @asynccontextmanager
    async def background_turn(self) -> AsyncIterator[None]:
        """Hold the writer for background work (the persister): it waits as long as it takes
        and is never refused; cursors go on being recorded in a deleted file until restart."""
        async with self._lock:
            yield

    async def write_chunk(self, incoming: int, kwargs: dict[str, Any]) -> None:
        """During :meth:`turn`: check and write one transaction adding ``incoming`` bytes.

        Not cancellable (the caller shields it): the file and the caller's memory must agree.
        """
        self._started = trio.current_time()
        try:
            await trio.to_thread.run_sync(
                self._checked_write, incoming, kwargs, limiter=self._limiter
            )
        finally:
            self._started = None
        if self.full is not None:
            logger.warning("Spool %s: there is room again; accepting events.", self._file.path)
            self.full = None

    async def write_cursors(self, kwargs: dict[str, Any]) -> bool:
        """During :meth:`turn`: write cursors and deletions; False (logged) if that failed."""
        try:
            await trio.to_thread.run_sync(lambda: self._file.write(**kwargs), limiter=self._limiter)
        except sqlite3.Error as exc:
            logger.warning(
                "The spool %r could not record deliveries (%s); a restart may deliver some "
                "events again.",
                self._file.path,
                exc,
            )
            return False
        return True

    async def release_space(self) -> None:
        """While full: give free pages and the WAL back to the file system (under the lock)."""
        if self.full is None:
            return
        async with self._lock:
            await trio.to_thread.run_sync(self._file.release_space, limiter=self._limiter)

    def _checked_write(self, incoming: int, kwargs: dict[str, Any]) -> None:
        """In the worker thread: check the file and the room, then write."""
        file = self._file
        try:
            file.check_identity()
            if incoming:
                try:
                    file.check_room(incoming)
                except SpoolFullError:
                    # Free pages and the WAL may hold most of the space: give it back, decide.
                    if not file.release_space():
                        raise
                    file.check_room(incoming)
            file.write(**kwargs)
        except SpoolReplacedError as exc:
            self._replaced = str(exc)
            logger.error("%s Refusing events from now on.", exc)
            raise trio.BrokenResourceError(str(exc)) from None
        except SpoolFullError as exc:
            self._note_full(str(exc))
            raise
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                sentence = f"The spool {file.path!r} could not be written ({exc})."
                self._note_full(sentence)
                raise SpoolFullError(sentence) from None
            raise trio.BrokenResourceError(
                f"The spool {file.path!r} could not be written ({exc})."
            ) from exc

    def _note_full(self, sentence: str) -> None:
        if self.full is None:
            logger.warning("%s Refusing requests until deliveries free space.", sentence)
        self.full = sentence

    def _stalled_sentence(self) -> str:
        started = self._started
        waited = 0.0 if started is None else trio.current_time() - started
        return (
            f"The spool {self._file.path!r} has not finished a write for {waited:.1f} s (a "
            f"stalled disk?); refusing requests after {self._timeout} s of waiting."
        )
