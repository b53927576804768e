"""A durable event buffer: the multi-consumer buffer's semantics, kept in SQLite (WAL).

:class:`SpoolEventBuffer` is an ``EventBuffer`` (_buffer.py) with the in-memory buffer's bound,
eviction and per-consumer accounting, so the agent and the publishers use either alike. Each
add is one transaction, committed before the agent replies. A consumer's persisted cursor moves
only on :meth:`~SpoolEventBuffer.commit` (a batch delivered, or dropped and counted), so after a
restart a batch that was in flight is sent again. Closing a consumer handle keeps its place;
:meth:`~SpoolEventBuffer.forget_consumer` lets it go, as closing does in memory. The bounds
apply to unread events; the file also keeps batches taken and not settled.

The agent adds with :meth:`~SpoolEventBuffer.add_many`, which writes in a worker thread (one at
a time, under a lock shared with cursor persistence) so a slow or stalled disk never freezes the
event loop, ``/healthz`` or the gRPC server: a request that cannot get the writer within
``write_timeout`` is refused (:class:`SpoolStalledError`). Before each write the spool checks
that its path still names its file (:class:`SpoolReplacedError` otherwise, for good) and that
its bound and its file system have room (:class:`SpoolFullError`, which clears by itself once
deliveries free space: settled chunks are deleted and the WAL checkpointed and truncated).
Cursors move in memory on :meth:`~SpoolEventBuffer.commit`; while :meth:`~SpoolEventBuffer.run`
runs they are written by its persister task, off the loop. Reads use a connection of their own,
which in WAL mode never waits for the writer. docs/spool.md has the design and figures.
"""

from __future__ import annotations

import sqlite3
from array import array
from itertools import accumulate
from typing import TYPE_CHECKING, Any, final

import attrs
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
from trio_events.agent._spool_db import (
    SpoolConfig,
    SpoolFile,
    SpoolFullError,
    SpoolReplacedError,
    SpoolStatistics,
    logger,
)
from trio_events.agent._spool_index import ChunkIndex
from trio_events.agent._spool_writer import SpoolStalledError, SpoolWriter

__all__ = [
    "SpoolConfig",
    "SpoolEventBuffer",
    "SpoolFullError",
    "SpoolReplacedError",
    "SpoolStalledError",
    "SpoolStatistics",
]


@final
@attrs.frozen
class _Add:
    """One request's events, planned: what to store and what its evictions imply."""

    chunk: Chunk | None
    new_head: int
    settled: dict[str, int]
    charges: dict[str, tuple[Counter[int], int]]
    drop: int
    count: int
    skip: int
    types: array[int]
    cum: list[int]
    size: int


@final
@attrs.frozen
class _Write:
    """One transaction, prepared: the arguments of SpoolFile.write and what follows it."""

    kwargs: dict[str, Any]
    rows: list[tuple[str, int]]
    new_head: int | None
    dropped: int


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
        self._writer = SpoolWriter(self._file, config.write_timeout)
        self._evicting = False  # a write that evicts unread events is in flight: no takes
        self._persist_soon = trio.Event()
        self._persister_running = False
        self._metrics.spool_state.set_function(lambda: 0.0 if self.problem() else 1.0)

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
        nothing was accepted and the buffer is unchanged. This writes on the calling thread;
        the agent uses :meth:`add_many`, which does not.
        """
        plan = self._plan_add(event_types, blobs)
        if plan is None:
            return
        dropped = self._write(plan.chunk, plan.new_head, plan.settled)
        self._apply_add(plan, dropped)

    async def add_many(self, event_types: Sequence[int], blobs: Sequence[bytes]) -> None:
        """:meth:`add_many_nowait` with the write in a worker thread, checked and bounded.

        Raises, with nothing accepted: trio.ClosedResourceError after :meth:`close`;
        :class:`SpoolFullError` when the bound or the file system has no room;
        :class:`SpoolStalledError` when the writer has been busy for ``write_timeout``;
        trio.BrokenResourceError when the file was replaced or cannot be written.
        """
        self._check_open()
        async with self._writer.turn():
            plan = self._plan_add(event_types, blobs)
            if plan is None:
                return
            write = self._prepare(plan.chunk, plan.new_head, plan.settled)
            assert write is not None  # a chunk, or evictions: something to write
            # From here the write runs to its end and memory follows it, even if the request
            # is cancelled (its client gone): the file and the index must agree.
            with trio.CancelScope(shield=True):
                self._evicting = plan.drop > 0
                try:
                    await self._writer.write_chunk(plan.size, write.kwargs)
                finally:
                    self._evicting = False
                self._apply_add(plan, self._finish(write))

    def problem(self) -> str | None:
        """Why the spool cannot keep its promise now (for /healthz), or None."""
        return self._writer.problem()

    def _plan_add(self, event_types: Sequence[int], blobs: Sequence[bytes]) -> _Add | None:
        self._check_open()
        count = len(blobs)
        if len(event_types) != count:
            raise ValueError(
                f"add_many_nowait needs one event type per blob, got {len(event_types)} event "
                f"types for {count} blobs."
            )
        if count == 0:
            return None
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
        return _Add(chunk, new_head, settled, charges, drop, count, skip, types, cum_in, len(data))

    def _apply_add(self, plan: _Add, dropped: int) -> None:
        """The write committed; now memory follows."""
        for name, (lost, n) in plan.charges.items():
            for event_type, k in lost.items():
                self._metrics.queue_dropped_events.labels(name, event_type_label(event_type)).inc(k)
            consumer = self._consumers[name]
            consumer.evicted += n
            consumer.cursor = max(consumer.cursor, plan.new_head)
        self._evicted += plan.drop
        self._added += plan.count
        self._head = plan.new_head
        index, cum_in, skip = self._index, plan.cum, plan.skip
        if plan.chunk is not None:
            # Byte offsets, like sequence numbers, continue after the events stored.
            shift = cum_in[skip] - cum_in[0]
            index.append(
                plan.types, [v - shift for v in cum_in[skip + 1 :]] if skip else cum_in[1:]
            )
        index.drop(dropped)
        self._file.appended(plan.size)
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
        if self._evicting:
            return 0  # the write in flight deletes some of them: wait for it (add unparks)
        return self._index.tail - state.cursor

    def _unread_reach(self, state: ConsumerState, max_bytes: int) -> bool:
        if self._evicting:
            return False  # see _unread_of()
        return self._index.size(state.cursor, self._index.tail) >= max_bytes

    def _take(self, state: ConsumerState, max_items: int, max_bytes: int | None) -> EventBatch:
        """Hand ``state`` up to ``max_items`` unread events, oldest first; settled by commit."""
        self._check_database()
        start = state.cursor
        if self._evicting:
            return EventBatch([], [], start)  # see _unread_of()
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
        if not state.settle(batch) or self._file.closed:
            return
        if self._persister_running:
            self._persist_soon.set()  # written off the loop by run()'s persister
        else:
            self._persist()

    def _release(self, state: ConsumerState) -> None:
        """The handle was closed: the consumer keeps its place, its events and its cursor."""
        state.live = False
        self._metrics.buffer_unread.remove(state.name)

    def _ended(self) -> bool:
        return self._closed

    def _tail_of(self) -> int:
        return self._index.tail

    # ---- lifecycle and introspection ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: checkpoint the WAL in a worker thread (:meth:`SpoolFile.checkpoints`)
        and write settled cursors there too, deleting the chunks nobody needs any more; while
        the spool is full, also try to truncate the WAL so that the space comes back.

        Without it SQLite checkpoints inside a commit now and then, fsyncs included, and
        cursors are written on the event loop. A checkpoint moves data; it makes no commit more
        or less durable.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._file.checkpoints, self._config.checkpoint_interval)
            self._persister_running = True
            try:
                task_status.started()
                await self._persister()
            finally:
                self._persister_running = False
                # Shielded, and bounded while waiting for the writer (a stalled disk).
                with trio.move_on_after(self._config.write_timeout, shield=True):
                    await self._persist_in_thread()

    async def _persister(self) -> None:
        while True:
            with trio.move_on_after(self._config.checkpoint_interval):
                await self._persist_soon.wait()
            self._persist_soon = trio.Event()
            await self._persist_in_thread()
            await self._writer.release_space()

    async def _persist_in_thread(self) -> None:
        """:meth:`_persist` with the write in a worker thread, under the write lock."""
        if self._file.closed:
            return
        async with self._writer.background_turn():
            write = self._prepare(None, self._head, {})
            if write is None:
                return
            if await self._writer.write_cursors(write.kwargs):
                self._index.drop(self._finish(write))
            else:
                self._metrics.spool_cursor_write_failures.inc()

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

    def _prepare(
        self, chunk: Chunk | None, head: int, settled: dict[str, int], forget: str | None = None
    ) -> _Write | None:
        """The transaction that commits ``chunk``, the cursors that changed and the chunks no
        longer needed once the head is ``head`` and ``settled`` overrides consumers' cursors;
        None when nothing would change."""
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
            return None  # nothing changed: no empty transaction
        kwargs: dict[str, Any] = {
            "chunk": chunk,
            "cursors": rows,
            "forget": forget,
            "delete_before": delete_before,
            "head": new_head,
        }
        return _Write(kwargs, rows, new_head, dropped)

    def _finish(self, write: _Write) -> int:
        """The transaction committed: remember what the file now says. Returns the number of
        leading chunks deleted, for the index to follow (:meth:`ChunkIndex.drop`)."""
        for name, cursor in write.rows:
            if name in self._consumers:
                self._consumers[name].saved = cursor
        if write.new_head is not None:
            self._saved_head = write.new_head
        return write.dropped

    def _write(
        self, chunk: Chunk | None, head: int, settled: dict[str, int], forget: str | None = None
    ) -> int:
        """:meth:`_prepare`, write on this thread, :meth:`_finish`."""
        write = self._prepare(chunk, head, settled, forget)
        if write is None:
            return 0
        try:
            self._file.write(**write.kwargs)
        except sqlite3.Error as exc:
            raise trio.BrokenResourceError(
                f"The spool {self._file.path!r} could not be written ({exc})."
            ) from exc
        return self._finish(write)

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
