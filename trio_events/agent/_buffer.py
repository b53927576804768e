"""The aggregator's bounded multi-consumer buffer (Ray's ``MultiConsumerEventBuffer`` on trio).

Events are kept as the agent received them: serialized ``RayEvent`` bytes plus their event type
number, in a preallocated ring (a list of ``bytes`` references and an ``array`` of types) indexed
by absolute sequence numbers. Each consumer (publisher) owns one absolute cursor: the sequence
number of the next event it has not read. Memory per buffered event is the ``bytes`` object plus
12 bytes of ring slot.

Overflow policy (Ray's, ray-reference.md 3.3): the buffer never blocks a producer; when it is full
the **oldest** event is evicted. Each consumer that had not yet read the evicted event is charged
one eviction (``ray_aggregator_agent_queue_dropped_events{consumer, event_type}``) and its cursor
moves past it. An event stays buffered until every registered consumer has read it, so a slow
consumer keeps events alive for everyone; with no consumer registered events simply accumulate up
to the bound, and a consumer registered later starts at the oldest one. A producer that prefers
backpressure to eviction checks :meth:`MultiConsumerEventBuffer.free_slots` first (the agent's
``on_full="reject"`` policy).

The core is synchronous (``*_nowait``) so a hypothesis state machine can drive it; the only async
method, :meth:`~MultiConsumerEventBuffer.wait_for_batch`, is built on it with a ``ParkingLot``.

:class:`EventBuffer` is what the agent and the publishers need from a buffer; the durable
``SpoolEventBuffer`` (_spool.py) is the other implementation.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import TYPE_CHECKING, Protocol, cast, final

import attrs
import trio

from trio_events import pb
from trio_events._metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence


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
    unread: int  #: buffered events this consumer has not read yet
    consumed: int  #: events handed to it since it registered
    evicted: int  #: events evicted before it read them (its share of the dropped-events metric)


@final
@attrs.frozen
class BufferStatistics:
    buffered: int
    capacity: int
    max_batch_size: int
    added: int  #: events ever added
    evicted: int  #: events ever evicted by overflow, whether or not anyone had read them
    closed: bool
    tasks_waiting: int
    consumers: Mapping[str, ConsumerStatistics]


class EventBuffer(Protocol):
    """What the agent and the publishers use: an in-memory buffer or a durable spool.

    A batch taken is settled with :meth:`commit` once delivered, or dropped and counted. In
    memory that does nothing; a ``durable`` buffer persists the cursor, so a batch never settled
    is sent again after a restart, and what a publisher leaves unsent is kept for the next start.
    """

    @property
    def durable(self) -> bool: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_batch_size(self) -> int: ...
    def __len__(self) -> int: ...
    def add_nowait(self, event_type: int, blob: bytes) -> None: ...
    def add_many_nowait(self, event_types: Sequence[int], blobs: Sequence[bytes]) -> None: ...
    def free_slots(self) -> int: ...
    def free_bytes(self) -> int | None: ...
    def register_consumer(self, name: str) -> None: ...
    def unregister_consumer(self, name: str) -> None: ...
    def unread(self, name: str) -> int: ...
    def take_nowait(self, name: str, max_items: int) -> EventBatch: ...
    async def wait_for_batch(self, consumer: str, timeout: float) -> EventBatch: ...  # noqa: ASYNC109
    def commit(self, consumer: str, batch: EventBatch) -> None: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...
    def statistics(self) -> BufferStatistics: ...


async def linger_and_take(
    buffer: EventBuffer,
    lot: trio.lowlevel.ParkingLot,
    closed: Callable[[], bool],
    consumer: str,
    timeout: float,  # noqa: ASYNC109
) -> EventBatch:
    """``wait_for_batch`` of both buffers, on their synchronous core: one copy of the logic
    that makes cancellation lose nothing. ``lot`` is unparked by adds, unregistering and
    closing; ``closed`` tells whether the buffer was closed."""
    await trio.lowlevel.checkpoint_if_cancelled()
    scheduled = False
    batch_size = buffer.max_batch_size
    while True:
        while not buffer.unread(consumer):  # KeyError once the consumer is gone
            if closed():
                raise trio.EndOfChannel(
                    "The event buffer was closed and this consumer has read every event."
                )
            await lot.park()
            scheduled = True
        with trio.move_on_after(max(0.0, timeout)):
            while not closed() and buffer.unread(consumer) < batch_size:
                await lot.park()
                scheduled = True
        if not scheduled:
            await trio.lowlevel.cancel_shielded_checkpoint()
            scheduled = True
        # No checkpoint from here to the return: the events taken cannot be lost.
        batch = buffer.take_nowait(consumer, batch_size)
        if batch:
            return batch
        # Another task waiting for the same consumer took them first; wait again.


def event_type_label(event_type: int) -> str:
    """The metric label of an event type: its name, or its number when our schema lacks it."""
    return pb.EVENT_TYPE_NAMES.get(event_type, str(event_type))


class _Consumer:
    __slots__ = ("consumed", "cursor", "evicted")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor  # absolute sequence number of the next unread event
        self.consumed = 0
        self.evicted = 0


@final
class MultiConsumerEventBuffer:
    """A bounded ring of serialized events read independently by named consumers.

    ``max_size`` bounds the number of buffered events (Ray 2.60 default 100 000) and
    ``max_batch_size`` the length of a batch :meth:`wait_for_batch` returns (default 1000).
    Not thread-safe: use it from the trio thread (where trio-asyncio's asyncio callbacks, and so
    the agent's gRPC handlers, run too).
    """

    def __init__(
        self, max_size: int = 100_000, max_batch_size: int = 1000, *, metrics: Metrics | None = None
    ) -> None:
        for name, value in (("max_size", max_size), ("max_batch_size", max_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}.")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self._capacity = max_size
        self._max_batch_size = max_batch_size
        self._blobs: list[bytes | None] = [None] * max_size
        self._types = array("i", [0]) * max_size
        self._head = 0  # sequence number of the oldest buffered event
        self._tail = 0  # sequence number the next added event gets (= events ever added)
        self._evicted = 0
        self._consumers: dict[str, _Consumer] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._metrics = metrics if metrics is not None else Metrics()
        # Gauges are computed when scraped, so the hot path never touches them.
        self._metrics.buffer_capacity.set(max_size)
        self._metrics.buffer_size.set_function(lambda: float(self._tail - self._head))

    # ---- producer side -------------------------------------------------------------------------

    def add_nowait(self, event_type: int, blob: bytes) -> None:
        """Append one event, evicting the oldest one when the buffer is full."""
        self._check_open()
        if self._tail - self._head == self._capacity:
            self._evict_until(self._head + 1, (event_type,))
        slot = self._tail % self._capacity
        self._types[slot] = event_type
        self._blobs[slot] = blob
        self._tail += 1
        if self._lot:
            self._lot.unpark_all()

    def add_many_nowait(self, event_types: Sequence[int], blobs: Sequence[bytes]) -> None:
        """Append a whole request's events in order, exactly as repeated :meth:`add_nowait`.

        When there are more than :meth:`free_slots` the oldest events are evicted; when there
        are more than the capacity the first ones of ``blobs`` themselves are evicted at once
        (and charged to every consumer), as one-at-a-time adds would do.
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
        new_tail = self._tail + count
        new_head = max(self._head, new_tail - self._capacity)
        if new_head > self._head:
            self._evict_until(new_head, event_types)
        # Store the events that survive: sequence numbers [first, new_tail).
        first = max(self._tail, new_head)
        skip = first - self._tail
        types = array("i", event_types[skip:] if skip else event_types)
        kept = blobs[skip:] if skip else blobs
        start = first % self._capacity
        split = min(len(kept), self._capacity - start)
        self._blobs[start : start + split] = kept[:split]
        self._types[start : start + split] = types[:split]
        if split < len(kept):
            self._blobs[: len(kept) - split] = kept[split:]
            self._types[: len(kept) - split] = types[split:]
        self._tail = new_tail
        if self._lot:
            self._lot.unpark_all()

    def free_slots(self) -> int:
        """How many events can be added without evicting one that a consumer has not read.

        Events every consumer has read are freed when a batch is taken, so every buffered event
        is still unread by some consumer (or waiting for the first one to register).
        """
        return self._capacity - (self._tail - self._head)

    def free_bytes(self) -> int | None:
        """None: this buffer bounds events, not bytes."""
        return None

    def _evict_until(self, new_head: int, incoming_types: Sequence[int]) -> None:
        """Evict sequence numbers [head, new_head), charging each consumer for those it had not
        read. Numbers at or past the tail belong to ``incoming_types`` (added and evicted at
        once). The slots are not cleared: the caller overwrites every one of them."""
        for name, consumer in self._consumers.items():
            if consumer.cursor >= new_head:
                continue
            lost = self._types_between(consumer.cursor, min(new_head, self._tail))
            if new_head > self._tail:
                lost.update(incoming_types[: new_head - self._tail])
            for event_type, n in lost.items():
                self._metrics.queue_dropped_events.labels(name, event_type_label(event_type)).inc(n)
            consumer.evicted += new_head - consumer.cursor
            consumer.cursor = new_head
        self._evicted += new_head - self._head
        self._head = new_head

    # ---- consumer side -------------------------------------------------------------------------

    def register_consumer(self, name: str) -> None:
        """Add a consumer; it starts at the oldest buffered event."""
        if name in self._consumers:
            raise ValueError(f"A consumer named {name!r} is already registered with this buffer.")
        consumer = _Consumer(self._head)
        self._consumers[name] = consumer
        self._metrics.buffer_unread.labels(name).set_function(
            lambda: float(self._tail - consumer.cursor)
        )

    def unregister_consumer(self, name: str) -> None:
        """Remove a consumer; events only it had not read are freed if others remain."""
        self._consumer(name)
        del self._consumers[name]
        self._metrics.buffer_unread.remove(name)
        self._free_consumed()
        if self._lot:
            self._lot.unpark_all()  # its waiters learn it is gone

    def unread(self, name: str) -> int:
        return self._tail - self._consumer(name).cursor

    def take_nowait(self, name: str, max_items: int) -> EventBatch:
        """Hand ``name`` up to ``max_items`` of its unread events (possibly none), oldest first."""
        consumer = self._consumer(name)
        if max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}.")
        start = consumer.cursor
        count = min(max_items, self._tail - start)
        if count <= 0:
            return EventBatch([], [], start)
        begin = start % self._capacity
        end = begin + count
        if end <= self._capacity:
            blobs = self._blobs[begin:end]
            types = self._types[begin:end].tolist()
        else:
            end -= self._capacity
            blobs = self._blobs[begin:] + self._blobs[:end]
            types = self._types[begin:].tolist() + self._types[:end].tolist()
        consumer.cursor += count
        consumer.consumed += count
        if start == self._head:  # it may have been the slowest consumer
            self._free_consumed()
        return EventBatch(types, cast("list[bytes]", blobs), start)

    def commit(self, consumer: str, batch: EventBatch) -> None:
        """Nothing to do: in memory, taking a batch is final (see :class:`EventBuffer`)."""

    # ``timeout`` is Ray's name for the linger after the first event, not an overall deadline
    # (that is the caller's cancel scope), hence the noqa.
    async def wait_for_batch(self, consumer: str, timeout: float) -> EventBatch:  # noqa: ASYNC109
        """Wait for at least one unread event, then up to ``timeout`` seconds for a full batch.

        Returns between 1 and ``max_batch_size`` events, oldest first. Like Ray's, the linger
        deadline starts when the first event is available; with a full batch available it
        returns at once. An unconditional checkpoint. Cancellation loses nothing: events are
        only taken (the cursor only moves) after the last checkpoint, so everything not returned
        stays unread; while the consumer lingers its unread events can still be evicted by
        overflow, and are then charged to it as usual.

        Raises KeyError for an unknown (or meanwhile unregistered) consumer and
        trio.EndOfChannel once the buffer is closed and the consumer has read everything; after
        :meth:`close` the remaining events are returned without lingering.
        """
        return await linger_and_take(self, self._lot, lambda: self._closed, consumer, timeout)

    # ---- lifecycle and introspection -----------------------------------------------------------

    def close(self) -> None:
        """Refuse further adds; consumers drain what is left, then get trio.EndOfChannel."""
        self._closed = True
        self._lot.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __len__(self) -> int:
        return self._tail - self._head

    @property
    def durable(self) -> bool:
        return False

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    def statistics(self) -> BufferStatistics:
        return BufferStatistics(
            buffered=self._tail - self._head,
            capacity=self._capacity,
            max_batch_size=self._max_batch_size,
            added=self._tail,
            evicted=self._evicted,
            closed=self._closed,
            tasks_waiting=len(self._lot),
            consumers={
                name: ConsumerStatistics(self._tail - c.cursor, c.consumed, c.evicted)
                for name, c in self._consumers.items()
            },
        )

    # ---- internals -----------------------------------------------------------------------------

    def _consumer(self, name: str) -> _Consumer:
        try:
            return self._consumers[name]
        except KeyError:
            raise KeyError(f"No consumer named {name!r} is registered with this buffer.") from None

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("The event buffer is closed; it accepts no more events.")

    def _types_between(self, start: int, stop: int) -> Counter[int]:
        """Count the event types of the buffered sequence numbers [start, stop)."""
        if stop <= start:
            return Counter()
        begin, end = start % self._capacity, stop % self._capacity or self._capacity
        if begin < end:
            return Counter(self._types[begin:end])
        return Counter(self._types[begin:]) + Counter(self._types[:end])

    def _free_consumed(self) -> None:
        """Release the events every consumer has read (the slots are cleared for the GC)."""
        if not self._consumers:
            return  # keep everything for the first consumer to come
        low = min(c.cursor for c in self._consumers.values())
        count = low - self._head
        if count <= 0:
            return
        begin = self._head % self._capacity
        end = begin + count
        if end <= self._capacity:
            self._blobs[begin:end] = [None] * count
        else:
            self._blobs[begin:] = [None] * (self._capacity - begin)
            self._blobs[: end - self._capacity] = [None] * (end - self._capacity)
        self._head = low
