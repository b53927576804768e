"""Consumer handles: how a publisher reads the shared buffer, in trio's memory-channel shape.

``buffer.open_consumer(name)`` registers a consumer and returns an :class:`EventConsumer`, a
receive handle shaped like :class:`trio.MemoryReceiveChannel`: ``async for batch in consumer``,
:meth:`~EventConsumer.receive`, :meth:`~EventConsumer.receive_nowait`, a frozen
:meth:`~EventConsumer.statistics`, a synchronous :meth:`~EventConsumer.close` for ``finally``
blocks and :meth:`~EventConsumer.aclose`. Misuse is an error on the object (a closed handle raises
``trio.ClosedResourceError``), never a ``KeyError`` from a mistyped name.

Every consumer reads the same ring (no per-consumer copies): a handle is a cursor into it. The
buffer wakes a consumer's waiting tasks through a ``trio.lowlevel.ParkingLot`` of its own, so
``statistics().tasks_waiting`` is exact per consumer.

A batch received is *settled* with :meth:`EventConsumer.commit` once it is delivered, or dropped
and counted. Batches may be settled in any order; the consumer's **committed position** (what a
durable buffer persists, where a restart resumes) only advances over the contiguous prefix of
batches that are settled, so a batch still in flight before a settled one keeps both to be sent
again after a crash.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Protocol, final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from _typeshed import SupportsLenAndGetItem

__all__ = ["ConsumerState", "ConsumerStatistics", "EventBatch", "EventConsumer", "count_within"]


@final
@attrs.frozen
class EventBatch:
    """Events handed to one consumer: parallel lists, cheaper than one object per event.

    ``event_types[i]`` is the ``RayEvent.EventType`` number of the serialized event ``blobs[i]``
    (it may be a number newer than our schema). ``first_sequence`` is the buffer's sequence
    number of ``blobs[0]``; the events of one batch have consecutive sequence numbers.
    """

    event_types: list[int]
    blobs: list[bytes]
    first_sequence: int

    def __len__(self) -> int:
        return len(self.blobs)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return zip(self.event_types, self.blobs, strict=True)


@final
@attrs.frozen
class ConsumerStatistics:
    unread: int  #: buffered events this consumer has not received yet
    consumed: int  #: events handed to it since it was opened
    evicted: int  #: events evicted before it read them (its share of the dropped-events metric)
    uncommitted: int = 0  #: events received and not yet committed (in flight in a publisher)
    committed: int = 0  #: its committed position: the sequence number a restart resumes at
    tasks_waiting: int = 0  #: tasks blocked in receive() on this consumer


class ConsumerState:
    """A consumer's place in a buffer; the buffer owns it, the handle reads it."""

    __slots__ = ("consumed", "cursor", "evicted", "live", "lot", "name", "outstanding", "saved")

    def __init__(self, name: str, cursor: int, saved: int | None = None) -> None:
        self.name = name
        self.cursor = cursor  # absolute sequence number of the next unread event
        self.consumed = 0
        self.evicted = 0
        self.live = False  # a handle is open on it; a durable buffer keeps closed ones' places
        self.outstanding: dict[int, int] = {}  # batches received, not settled: first -> end
        self.saved = saved  # a durable buffer's cursor as its file has it
        self.lot = trio.lowlevel.ParkingLot()

    @property
    def settled(self) -> int:
        """The committed position: the first batch not settled, else the next unread event.
        Batches are taken in order, so the dict's first key is the oldest one."""
        return next(iter(self.outstanding)) if self.outstanding else self.cursor

    def take(self, start: int, count: int) -> None:
        self.cursor = start + count
        self.consumed += count
        self.outstanding[start] = start + count

    def settle(self, batch: EventBatch) -> bool:
        """Mark ``batch`` settled; True when the committed position moved."""
        first = batch.first_sequence
        if not batch or first not in self.outstanding:
            return False  # empty, or received before a durable buffer gave the place back
        moved = next(iter(self.outstanding)) == first
        del self.outstanding[first]
        return moved

    def uncommitted(self) -> int:
        return sum(end - first for first, end in self.outstanding.items())

    def statistics(self, tail: int) -> ConsumerStatistics:
        return ConsumerStatistics(
            unread=tail - self.cursor,
            consumed=self.consumed,
            evicted=self.evicted,
            uncommitted=self.uncommitted(),
            committed=self.settled,
            tasks_waiting=len(self.lot),
        )


def count_within(sizes_from: SupportsLenAndGetItem[int], count: int, max_bytes: int) -> int:
    """How many of ``count`` events fit in ``max_bytes``; always at least one.

    ``sizes_from[k]`` is the total size of the first ``k`` events (a nondecreasing sequence of
    ``count + 1`` numbers, ``sizes_from[0] == 0``). An event larger than ``max_bytes`` alone
    goes alone.
    """
    return max(1, bisect_right(sizes_from, max_bytes, 0, count + 1) - 1)


class ConsumerCore(Protocol):
    """What a buffer gives the consumer handles it opens (both buffers implement it)."""

    def _unread_of(self, state: ConsumerState) -> int: ...
    def _take(self, state: ConsumerState, max_items: int, max_bytes: int | None) -> EventBatch: ...
    def _commit(self, state: ConsumerState, batch: EventBatch) -> None: ...
    def _unread_reach(self, state: ConsumerState, max_bytes: int) -> bool: ...
    def _release(self, state: ConsumerState) -> None: ...
    def _ended(self) -> bool: ...
    def _tail_of(self) -> int: ...


@final
class EventConsumer:
    """A receive handle on a buffer: ``consumer = buffer.open_consumer(name)`` (see the module).

    ``receive()`` waits for at least one unread event, then lingers up to ``linger`` seconds for
    a full batch of ``max_batch_size`` events (Ray's MAX_BUFFER_SEND_INTERVAL); with a full batch
    available it returns at once, and once the buffer is closed it returns what is left without
    lingering, then raises ``trio.EndOfChannel``. A batch never holds more than
    ``max_batch_bytes`` bytes of serialized events, except a single event larger than that,
    which comes alone.
    """

    __slots__ = ("_closed", "_core", "_linger", "_max_batch_bytes", "_max_batch_size", "_state")

    def __init__(
        self,
        core: ConsumerCore,
        state: ConsumerState,
        *,
        linger: float,
        max_batch_size: int,
        max_batch_bytes: int | None,
    ) -> None:
        # Made by open_consumer(), which validated the arguments and registered ``state``.
        self._core = core
        self._state = state
        self._linger = linger
        self._max_batch_size = max_batch_size
        self._max_batch_bytes = max_batch_bytes
        self._closed = False  # a durable buffer may give the same state to a later handle

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def max_batch_bytes(self) -> int | None:
        return self._max_batch_bytes

    @property
    def closed(self) -> bool:
        return self._closed or not self._state.live

    def receive_nowait(self, *, max_items: int | None = None) -> EventBatch:
        """Up to a batch of unread events, oldest first, without waiting or lingering.

        ``max_items`` lowers the batch size for this call. Raises trio.WouldBlock when there is
        no unread event, trio.EndOfChannel once the buffer is closed and every event was
        received, and trio.ClosedResourceError once this handle is closed.
        """
        self._check_open()
        size = self._max_batch_size
        if max_items is not None:
            if max_items < 1:
                raise ValueError(f"max_items must be >= 1, got {max_items!r}.")
            size = min(size, max_items)
        if not self._core._unread_of(self._state):
            if self._core._ended():
                raise trio.EndOfChannel(
                    "The event buffer was closed and this consumer has received every event."
                )
            raise trio.WouldBlock
        return self._core._take(self._state, size, self._max_batch_bytes)

    async def receive(self) -> EventBatch:
        """Wait for events, linger for a full batch, and return 1 to ``max_batch_size`` of them.

        An unconditional checkpoint. Cancellation loses nothing: events are only taken (the
        cursor only moves) after the last checkpoint, so everything not returned stays unread;
        while the consumer lingers its unread events can still be evicted by overflow, and are
        then charged to it as usual. Raises trio.EndOfChannel once the buffer is closed and
        every event was received, trio.ClosedResourceError when this handle is (or gets) closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        core, state = self._core, self._state
        scheduled = False
        while True:
            while not core._unread_of(state):
                if core._ended():
                    raise trio.EndOfChannel(
                        "The event buffer was closed and this consumer has received every event."
                    )
                await state.lot.park()
                scheduled = True
                self._check_open()
            with trio.move_on_after(self._linger):
                while not core._ended() and self._lacks_a_full_batch():
                    await state.lot.park()
                    scheduled = True
                    self._check_open()
            self._check_open()
            if not scheduled:
                await trio.lowlevel.cancel_shielded_checkpoint()
                scheduled = True
            # No checkpoint from here to the return: the events taken cannot be lost.
            batch = core._take(state, self._max_batch_size, self._max_batch_bytes)
            if batch:
                return batch
            # Another task receiving on this consumer took them first; wait again.

    def commit(self, batch: EventBatch) -> None:
        """Settle ``batch`` (delivered, or dropped and counted); see the module docstring.

        Batches may be committed in any order; the committed position advances over the
        contiguous prefix of settled batches. A durable buffer persists it.
        """
        self._check_open()
        self._core._commit(self._state, batch)

    def statistics(self) -> ConsumerStatistics:
        return self._state.statistics(self._core._tail_of())

    def close(self) -> None:
        """Stop consuming (idempotent). Tasks blocked in receive() get ClosedResourceError.

        In memory the consumer is gone and events only it still needed are freed; a durable
        buffer keeps its place, and the batches it did not commit are sent again when a
        consumer of the same name is opened.
        """
        if not self.closed:
            self._closed = True
            self._core._release(self._state)
            self._state.lot.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> EventConsumer:
        return self

    async def __anext__(self) -> EventBatch:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _lacks_a_full_batch(self) -> bool:
        unread = self._core._unread_of(self._state)
        if unread >= self._max_batch_size:
            return False
        if self._max_batch_bytes is None:
            return True
        return not self._core._unread_reach(self._state, self._max_batch_bytes)

    def _check_open(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError(f"The consumer {self.name!r} is closed.")
