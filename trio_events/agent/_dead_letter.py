"""The optional dead-letter file: events a sink refused, kept for inspection and replay.

In the manner of Fluent Bit's ``storage.keep.rejected``: when a publisher drops events it could
convert (a permanent refusal, an event isolated by bisection, retries exhausted), each one is
appended to a JSON-lines file, one object per line::

    {"time": "2026-12-04T17:00:00.000000Z", "publisher": "http_service",
     "reason": "http_400", "status": 400, "detail": "...", "event": {...}}

``event`` is the event exactly as it was posted (Ray's JSON). The drop is counted in
``trio_events_publisher_dropped_events{reason}`` whether or not the file keeps it. The file is
bounded by ``max_bytes``: past it, further events are not written (counted in
:attr:`DeadLetterFile.skipped`, logged once). Writes run in a worker thread, never on the event
loop. docs/publishing.md shows how to replay the file.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import TYPE_CHECKING, BinaryIO, final

import orjson
import trio

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DeadLetterFile"]

logger = logging.getLogger("trio_events.agent.dead_letter")


@final
class DeadLetterFile:
    """An append-only JSON-lines file of refused events (see the module docstring)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"The dead-letter file's max_bytes must be >= 1, got {max_bytes}.")
        self.path = path
        self._max_bytes = max_bytes
        self._file: BinaryIO | None = None
        self._size = 0
        self._lock = trio.Lock()
        self.written = 0  #: events written
        self.skipped = 0  #: events not written because the file was full or failed

    async def open(self) -> None:
        """Open (create or append to) the file, in a worker thread."""

        def _open() -> tuple[BinaryIO, int]:
            handle = open(self.path, "ab")  # noqa: SIM115 - closed by aclose()
            return handle, handle.seek(0, os.SEEK_END)

        try:
            self._file, self._size = await trio.to_thread.run_sync(_open)
        except OSError as exc:
            raise OSError(
                f"The dead-letter file {self.path!r} cannot be opened for appending ({exc})."
            ) from exc

    async def write(
        self,
        publisher: str,
        reason: str,
        status: int | None,
        detail: str,
        events: Sequence[bytes],
    ) -> None:
        """Append one line per event (each the JSON of one event as posted)."""
        if self._file is None or not events:
            self.skipped += len(events)
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        head = orjson.dumps(
            {
                "time": now,
                "publisher": publisher,
                "reason": reason,
                "status": status,
                "detail": detail,
            }
        )[:-1]
        data = b"".join(head + b',"event":' + event + b"}\n" for event in events)
        async with self._lock:
            if self._size + len(data) > self._max_bytes:
                if not self.skipped:
                    logger.warning(
                        "The dead-letter file %s is full (%d bytes); refused events are no "
                        "longer kept (still counted as dropped).",
                        self.path,
                        self._max_bytes,
                    )
                self.skipped += len(events)
                return
            file = self._file

            def _append() -> None:
                file.write(data)
                file.flush()

            try:
                await trio.to_thread.run_sync(_append)
            except OSError as exc:
                logger.error("The dead-letter file %s could not be written: %s", self.path, exc)
                self.skipped += len(events)
                return
            self._size += len(data)
            self.written += len(events)

    async def aclose(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await trio.to_thread.run_sync(file.close)
        else:
            await trio.lowlevel.checkpoint()


def split_events(body: bytes) -> list[bytes]:
    """The JSON of each event of a posted body (a JSON array), for the dead-letter file."""
    return [orjson.dumps(value) for value in orjson.loads(body)]
