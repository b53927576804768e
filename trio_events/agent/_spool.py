"""A durable event buffer: the multi-consumer buffer's semantics, kept in SQLite (WAL).

:class:`SpoolEventBuffer` is an ``EventBuffer`` (_buffer.py) with the in-memory buffer's bound,
eviction and per-consumer accounting, so the agent and the publishers use either alike. Each
add is one transaction, committed before the agent replies. A consumer's persisted cursor moves
only on :meth:`~SpoolEventBuffer.commit` (a batch delivered, or dropped and counted), so after a
restart a batch that was in flight is sent again. Closing a consumer handle keeps its place;
:meth:`~SpoolEventBuffer.forget_consumer` lets it go, as closing does in memory. The bounds
apply to unread events; the file also keeps batches taken and not settled. SQLite is called on
the trio thread (appending costs less than parsing the request); WAL checkpoints, with their
fsyncs, run in a worker thread. docs/spool.md has the design, what is durable when, and figures.
"""

from __future__ import annotations

import sqlite3
from array import array
from itertools import accumulate
from typing import TYPE_CHECKING, final

import trio

from trio_events._metrics import Metrics
from trio_events.agent._buffer import (
    BufferStatistics,
    EventBatch,
    EventConsumer,
    consumer_options,
    event_type_label,
)
from trio_events.agent._consumer import ConsumerState, count_within
from trio_events.agent._spool_db import SpoolConfig, SpoolFile, SpoolStatistics, logger
from trio_events.agent._spool_index import ChunkIndex

__all__ = ["SpoolConfig", "SpoolEventBuffer", "SpoolStatistics"]

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Sequence

    from trio_events.agent._spool_db import Chunk


@final
class SpoolEventBuffer:
    """A :class:`~trio_events.agent.EventBuffer` in an SQLite file (see the module docstring).

    Opening reads the file's index (types and sizes, not the events), which takes a moment for
    a large spool; from trio use ``await trio.to_thread.run_sync(SpoolEventBuffer, config)``.
    Use it from the trio thread only. :meth:`close` refuses further adds as in memory;
    :meth:`close_database` (or leaving the ``with`` block) closes the file, after the consumers.
    """

    def __init__(
        self, config: SpoolConfig, max_batch_size: int = 1000, *, metrics: Metrics | None = None
    ) -> None:
        if isinstance(max_batch_size, bool) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}.")
        self._config = config
        self._capacity = config.max_events
        self._max_bytes = config.max_bytes
        self._max_batch_size = max_batch_size
        self._file = SpoolFile(config)
        try:
            self._load()
        except BaseException:
            self._file.close()
            raise
        self._added = self._evicted = 0
        self._closed = False
        self._metrics = metrics if metrics is not None else Metrics()
        self._metrics.buffer_capacity.set(self._capacity)
        self._metrics.buffer_size.set_function(lambda: float(self._index.tail - self._head))
        self._persist()  # cursors clamped while loading, if any

    def _load(self) -> None:
        chunks, cursors, saved_head = self._file.load()
        self._index = index = ChunkIndex(chunks, max([saved_head, *cursors.values()]))
        tail = index.tail
        self._consumers = {
            name: ConsumerState(name, min(max(cursor, index.start), tail), cursor)
            for name, cursor in cursors.items()
        }
        # With no consumer, the head recorded when the last one left or evictions moved it:
        # the first chunk may begin with events that were read and must not come back.
        self._saved_head = min(max(saved_head, index.start), tail)
        self._head = min((c.cursor for c in self._consumers.values()), default=self._saved_head)
        self.resumed_events = tail - self._head
        logger.info(
            "Spool %s: resumed with %d events (%d bytes) unread by its %d consumers%s.",
            self._file.path,
            self.resumed_events,
            index.size(self._head, tail),
            len(cursors),
            "".join(f"; {n}: {tail - c.cursor}" for n, c in sorted(self._consumers.items())),
        )

    # ---- producer side -----------------------------------------------------------------------

    def add_nowait(self, event_type: int, blob: bytes) -> None:
        self.add_many_nowait((event_type,), (blob,))

    def add_many_nowait(self, event_types: Sequence[int], blobs: Sequence[bytes]) -> None:
        """Append a request's events in one transaction, evicting as the bound requires.

        The same eviction as the in-memory buffer's. Raises trio.ClosedResourceError after
        :meth:`close` and trio.BrokenResourceError when the file cannot be written; then
        nothing was accepted and the buffer is unchanged.
        """
        self._check_open()
        count = len(blobs)
        if len(event_types) != count:
            raise ValueError(
                f"add_many_nowait needs one event type per blob, got {len(event_types)} event "
                f"types for {count} blobs."
            )
        if count == 0:
            return
        index = self._index
        head, tail = self._head, index.tail
        # Lists, not arrays, on this path: building an array from an iterator is slower.
        sizes = list(map(len, blobs))
        cum_in = list(accumulate(sizes, initial=index.stored_bytes))
        drop = index.to_evict(head, count, cum_in, self._capacity, self._max_bytes)
        new_head = head + min(drop, tail - head)
        skip = drop - (new_head - head)  # incoming events evicted at once (never stored)
        charges = self._charges(new_head, event_types[:skip], skip)
        settled = {name: new_head for name in charges if not self._consumers[name].outstanding}
        types = array("i", event_types[skip:] if skip else event_types)
        data = b"".join(blobs[skip:] if skip else blobs)
        chunk = None
        if count > skip:
            sizes_blob = array("q", sizes[skip:]).tobytes()
            chunk = (tail, count - skip, types.tobytes(), sizes_blob, data)
        dropped = self._write(chunk, new_head, settled)
        # Committed; now memory follows.
        for name, (lost, n) in charges.items():
            for event_type, k in lost.items():
                self._metrics.queue_dropped_events.labels(name, event_type_label(event_type)).inc(k)
            consumer = self._consumers[name]
            consumer.evicted += n
            consumer.cursor = new_head
        self._evicted += drop
        self._added += count
        self._head = new_head
        if chunk is not None:
            # Byte offsets, like sequence numbers, continue after the events stored.
            shift = cum_in[skip] - cum_in[0]
            index.append(types, [v - shift for v in cum_in[skip + 1 :]] if skip else cum_in[1:])
        index.drop(dropped)
        self._file.appended(len(data))
        self._wake()

    def _charges(
        self, new_head: int, lost_incoming: Sequence[int], skip: int
    ) -> dict[str, tuple[Counter[int], int]]:
        """For each consumer that loses unread events: their types, and how many."""
        charges: dict[str, tuple[Counter[int], int]] = {}
        for name, c in self._consumers.items():
            if c.cursor < new_head or skip:
                lost = self._index.count_types(c.cursor, new_head)
                lost.update(lost_incoming)
                charges[name] = (lost, new_head - c.cursor + skip)
        return charges

    def free_slots(self) -> int:
        """How many events can be added without evicting one that a consumer has not read."""
        return max(0, self._capacity - (self._index.tail - self._head))

    def free_bytes(self) -> int | None:
        """How many bytes of events fit without evicting; None when bytes are not bounded."""
        if self._max_bytes is None:
            return None
        return max(0, self._max_bytes - self._index.size(self._head, self._index.tail))

    # ---- consumer side -----------------------------------------------------------------------

    def open_consumer(
        self,
        name: str,
        *,
        linger: float = 0.0,
        max_batch_size: int | None = None,
        max_batch_bytes: int | None = None,
    ) -> EventConsumer:
        """Open a consumer at the oldest buffered event, or give a known one back its place.

        A consumer known from the file (or closed earlier) resumes at its committed position:
        batches it had received without committing them are handed out again. The options are
        :meth:`MultiConsumerEventBuffer.open_consumer`'s. Closing the handle keeps the place;
        :meth:`forget_consumer` lets it go.
        """
        size = consumer_options(self._max_batch_size, linger, max_batch_size, max_batch_bytes)
        self._check_database()
        consumer = self._consumers.get(name)
        if consumer is not None and consumer.live:
            raise ValueError(f"A consumer named {name!r} is already open on this buffer.")
        if consumer is None:
            consumer = self._consumers[name] = ConsumerState(name, self._head, None)
            self._persist()
        else:
            consumer.cursor = consumer.settled
            consumer.outstanding.clear()
            consumer.consumed = consumer.evicted = 0
            self._head = min(self._head, consumer.cursor)
        consumer.live = True
        state = consumer
        self._metrics.buffer_unread.labels(name).set_function(
            lambda: float(self._index.tail - state.cursor)
        )
        return EventConsumer(
            self, consumer, linger=linger, max_batch_size=size, max_batch_bytes=max_batch_bytes
        )

    def forget_consumer(self, name: str) -> None:
        """Remove a consumer for good, registered or not: what only it needed is freed."""
        self._check_database()
        consumer = self._consumer(name)
        rest = [c for n, c in self._consumers.items() if n != name]
        head = min((c.cursor for c in rest), default=self._head)
        dropped = self._write(None, head, {}, forget=name)
        del self._consumers[name]
        if consumer.live:
            consumer.live = False  # its handle is closed now; its waiters learn it
            self._metrics.buffer_unread.remove(name)
            consumer.lot.unpark_all()
        self._head = head
        self._index.drop(dropped)
        self._wake()

    def known_consumers(self) -> tuple[str, ...]:
        """Every consumer with a place in the spool, registered now or not."""
        return tuple(self._consumers)

    # What EventConsumer calls (ConsumerCore in _consumer.py).

    def _unread_of(self, state: ConsumerState) -> int:
        return self._index.tail - state.cursor

    def _unread_reach(self, state: ConsumerState, max_bytes: int) -> bool:
        return self._index.size(state.cursor, self._index.tail) >= max_bytes

    def _take(self, state: ConsumerState, max_items: int, max_bytes: int | None) -> EventBatch:
        """Hand ``state`` up to ``max_items`` unread events, oldest first; settled by commit."""
        self._check_database()
        start = state.cursor
        count = min(max_items, self._index.tail - start)
        if count <= 0:
            return EventBatch([], [], start)
        if max_bytes is not None:
            count = count_within(_SizesFrom(self._index, start), count, max_bytes)
        blobs = self._read(start, start + count)
        types = self._index.types(start, start + count)
        state.take(start, count)
        if start == self._head:  # it may have been the slowest consumer
            self._head = min(c.cursor for c in self._consumers.values())
        return EventBatch(types, blobs, start)

    def _commit(self, state: ConsumerState, batch: EventBatch) -> None:
        """Persist the committed position once it moved (a batch delivered, or dropped and
        counted, with no batch received before it still outstanding).

        A failed write is logged and retried with the next one; until then a restart would
        deliver the batch again, which at-least-once allows.
        """
        if state.settle(batch) and not self._file.closed:
            self._persist()

    def _release(self, state: ConsumerState) -> None:
        """The handle was closed: the consumer keeps its place, its events and its cursor."""
        state.live = False
        self._metrics.buffer_unread.remove(state.name)

    def _ended(self) -> bool:
        return self._closed

    def _tail_of(self) -> int:
        return self._index.tail

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Checkpoint the WAL in a worker thread until cancelled (:meth:`SpoolFile.checkpoints`).

        Without it SQLite checkpoints inside a commit now and then, fsyncs included, on the
        event loop. A checkpoint moves data; it makes no commit more or less durable.
        """
        await self._file.checkpoints(self._config.checkpoint_interval, task_status=task_status)

    def close(self) -> None:
        """Refuse further adds; consumers drain what is left, then get trio.EndOfChannel."""
        self._closed = True
        self._wake()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close_database(self) -> None:
        """Close the file (idempotent): after the consumers are done, and after :meth:`run`."""
        self.close()
        self._file.close()

    def __enter__(self) -> SpoolEventBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_database()

    def __len__(self) -> int:
        return self._index.tail - self._head

    @property
    def durable(self) -> bool:
        return True

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def path(self) -> str:
        return self._file.path

    def statistics(self) -> BufferStatistics:
        return BufferStatistics(
            buffered=self._index.tail - self._head,
            capacity=self._capacity,
            max_batch_size=self._max_batch_size,
            added=self._added,
            evicted=self._evicted,
            closed=self._closed,
            tasks_waiting=sum(len(c.lot) for c in self._consumers.values()),
            consumers={
                name: c.statistics(self._index.tail)
                for name, c in self._consumers.items()
                if c.live
            },
        )

    def storage_statistics(self) -> SpoolStatistics:
        index = self._index
        return SpoolStatistics(
            path=self._file.path,
            events_on_disk=index.tail - index.start,
            bytes_on_disk=index.size(index.start, index.tail),
            buffered_bytes=index.size(self._head, index.tail),
            max_bytes=self._max_bytes,
            resumed_events=self.resumed_events,
            next_sequence=index.tail,
            settled={name: c.settled for name, c in self._consumers.items()},
        )

    # ---- internals ---------------------------------------------------------------------------

    def _consumer(self, name: str) -> ConsumerState:
        try:
            return self._consumers[name]
        except KeyError:
            raise KeyError(f"The spool {self.path!r} has no consumer named {name!r}.") from None

    def _wake(self) -> None:
        for consumer in self._consumers.values():
            if consumer.lot:
                consumer.lot.unpark_all()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("The event buffer is closed; it accepts no more events.")

    def _check_database(self) -> None:
        if self._file.closed:
            raise trio.ClosedResourceError("The spool's database is closed.")

    def _write(
        self, chunk: Chunk | None, head: int, settled: dict[str, int], forget: str | None = None
    ) -> int:
        """Commit ``chunk``, the cursors that changed and the chunks no longer needed once the
        head is ``head`` and ``settled`` overrides consumers' cursors. Returns the number of
        leading chunks deleted, for the index to follow (:meth:`ChunkIndex.drop`)."""
        rows: list[tuple[str, int]] = []
        retain = head
        alone = True  # no consumer afterwards: the head itself must be recorded
        for name, c in self._consumers.items():
            if name == forget:
                continue
            alone = False
            cursor = settled.get(name, c.settled)
            retain = min(retain, cursor)
            if cursor != c.saved:
                rows.append((name, cursor))
        new_head = head if alone and head != self._saved_head else None
        dropped = self._index.settled_chunks(retain)
        delete_before = self._index.delete_before(dropped)
        if chunk is None and not rows and forget is None and not dropped and new_head is None:
            return 0  # nothing changed: no empty transaction
        try:
            self._file.write(
                chunk=chunk, cursors=rows, forget=forget, delete_before=delete_before, head=new_head
            )
        except sqlite3.Error as exc:
            raise trio.BrokenResourceError(
                f"The spool {self._file.path!r} could not be written ({exc})."
            ) from exc
        for name, cursor in rows:
            self._consumers[name].saved = cursor
        if new_head is not None:
            self._saved_head = new_head
        return dropped

    def _persist(self) -> None:
        """Write the cursors that moved and free chunks; on failure, log and try next time."""
        try:
            dropped = self._write(None, self._head, {})
        except trio.BrokenResourceError as exc:
            self._metrics.spool_cursor_write_failures.inc()
            logger.warning("%s A restart may deliver some events again.", exc)
            return
        self._index.drop(dropped)

    def _read(self, start: int, stop: int) -> list[bytes]:
        """The serialized events ``[start, stop)``, cut out of the chunks that hold them."""
        try:
            rows = self._file.read(self._index.chunk_of(start), stop)
        except sqlite3.Error as exc:
            raise trio.BrokenResourceError(
                f"The spool {self._file.path!r} could not be read ({exc})."
            ) from exc
        blobs = self._index.cut(rows, start, stop)
        if len(blobs) != stop - start:
            raise trio.BrokenResourceError(
                f"The spool {self._file.path!r} lacks some of events {start} to {stop - 1}; "
                "something else changed it."
            )
        return blobs


class _SizesFrom:
    """``sizes[k]``: the bytes of the ``k`` events from ``start`` (a lazy sequence to bisect)."""

    __slots__ = ("_index", "_start")

    def __init__(self, index: ChunkIndex, start: int) -> None:
        self._index = index
        self._start = start

    def __getitem__(self, k: int) -> int:
        return self._index.size(self._start, self._start + k)

    def __len__(self) -> int:
        return self._index.tail - self._start + 1
