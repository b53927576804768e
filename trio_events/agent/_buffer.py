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

Consumers are handles (:meth:`MultiConsumerEventBuffer.open_consumer`, _consumer.py) in trio's
memory-channel shape. The core is synchronous (``*_nowait``) so a hypothesis state machine can
drive it; ``EventConsumer.receive`` is built on it with a ``ParkingLot`` per consumer.

:class:`EventBuffer` is what the agent and the publishers need from a buffer; the durable
``SpoolEventBuffer`` (_spool.py) is the other implementation.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from itertools import accumulate
from typing import TYPE_CHECKING, Protocol, cast, final

import attrs
import trio

from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.agent._consumer import (
    ConsumerState,
    ConsumerStatistics,
    EventBatch,
    EventConsumer,
    count_within,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "BufferStatistics",
    "ConsumerStatistics",
    "EventBatch",
    "EventBuffer",
    "EventConsumer",
    "MultiConsumerEventBuffer",
    "consumer_options",
    "event_type_label",
]


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

    Publishers read through handles from :meth:`open_consumer` (_consumer.py) and settle each
    batch with ``consumer.commit(batch)`` once delivered, or dropped and counted. In memory
    that only moves the consumer's committed position; a ``durable`` buffer persists it, so a
    batch never settled is sent again after a restart, and what a publisher leaves unsent is
    kept for the next start.
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
    def open_consumer(
        self,
        name: str,
        *,
        linger: float = 0.0,
        max_batch_size: int | None = None,
        max_batch_bytes: int | None = None,
    ) -> EventConsumer: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...
    def statistics(self) -> BufferStatistics: ...


def consumer_options(
    buffer_batch_size: int, linger: float, max_batch_size: int | None, max_batch_bytes: int | None
) -> int:
    """Validate ``open_consumer``'s options; returns the batch size to use."""
    if not (linger >= 0 and math.isfinite(linger)):
        raise ValueError(f"linger must be a number of seconds >= 0, got {linger!r}.")
    size = buffer_batch_size if max_batch_size is None else max_batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {size!r}.")
    if max_batch_bytes is not None and (
        isinstance(max_batch_bytes, bool)
        or not isinstance(max_batch_bytes, int)
        or max_batch_bytes < 1
    ):
        raise ValueError(f"max_batch_bytes must be None or an int >= 1, got {max_batch_bytes!r}.")
    return size


def event_type_label(event_type: int) -> str:
    """The metric label of an event type: its name, or its number when our schema lacks it."""
    return pb.EVENT_TYPE_NAMES.get(event_type, str(event_type))


@final
class MultiConsumerEventBuffer:
    """A bounded ring of serialized events read independently by consumer handles.

    ``max_size`` bounds the number of buffered events (Ray 2.60 default 100 000) and
    ``max_batch_size`` is the default length of the batches a consumer receives (1000).
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
        self._consumers: dict[str, ConsumerState] = {}
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
        self._wake()

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
        self._wake()

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

    def open_consumer(
        self,
        name: str,
        *,
        linger: float = 0.0,
        max_batch_size: int | None = None,
        max_batch_bytes: int | None = None,
    ) -> EventConsumer:
        """Register a consumer at the oldest buffered event and return its handle.

        ``linger`` is how long :meth:`EventConsumer.receive` waits for a full batch once it has
        one event; ``max_batch_size`` (default: the buffer's) and ``max_batch_bytes`` (default:
        unbounded) bound the batches it receives. Closing the handle unregisters the consumer.
        """
        size = consumer_options(self._max_batch_size, linger, max_batch_size, max_batch_bytes)
        if name in self._consumers:
            raise ValueError(f"A consumer named {name!r} is already open on this buffer.")
        state = ConsumerState(name, self._head)
        state.live = True
        self._consumers[name] = state
        self._metrics.buffer_unread.labels(name).set_function(
            lambda: float(self._tail - state.cursor)
        )
        return EventConsumer(
            self, state, linger=linger, max_batch_size=size, max_batch_bytes=max_batch_bytes
        )

    # What EventConsumer calls (ConsumerCore in _consumer.py).

    def _unread_of(self, state: ConsumerState) -> int:
        return self._tail - state.cursor

    def _unread_reach(self, state: ConsumerState, max_bytes: int) -> bool:
        total = 0
        for blob in self._blobs_between(state.cursor, self._tail):
            total += len(blob)
            if total >= max_bytes:
                return True
        return False

    def _take(self, state: ConsumerState, max_items: int, max_bytes: int | None) -> EventBatch:
        """Hand ``state`` up to ``max_items`` unread events (possibly none), oldest first."""
        start = state.cursor
        count = min(max_items, self._tail - start)
        if count <= 0:
            return EventBatch([], [], start)
        blobs = self._blobs_between(start, start + count)
        if max_bytes is not None:
            count = count_within(list(accumulate(map(len, blobs), initial=0)), count, max_bytes)
            del blobs[count:]
        begin = start % self._capacity
        end = begin + count
        if end <= self._capacity:
            types = self._types[begin:end].tolist()
        else:
            types = self._types[begin:].tolist() + self._types[: end - self._capacity].tolist()
        state.take(start, count)
        if start == self._head:  # it may have been the slowest consumer
            self._free_consumed()
        return EventBatch(types, blobs, start)

    def _commit(self, state: ConsumerState, batch: EventBatch) -> None:
        state.settle(batch)  # in memory, only the statistics see the committed position

    def _release(self, state: ConsumerState) -> None:
        """The handle was closed: events only it had not read are freed if others remain."""
        state.live = False
        del self._consumers[state.name]
        self._metrics.buffer_unread.remove(state.name)
        self._free_consumed()

    def _ended(self) -> bool:
        return self._closed

    def _tail_of(self) -> int:
        return self._tail

    # ---- lifecycle and introspection -----------------------------------------------------------

    def close(self) -> None:
        """Refuse further adds; consumers drain what is left, then get trio.EndOfChannel."""
        self._closed = True
        self._wake()

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
            tasks_waiting=sum(len(c.lot) for c in self._consumers.values()),
            consumers={name: c.statistics(self._tail) for name, c in self._consumers.items()},
        )

    # ---- internals -----------------------------------------------------------------------------

    def _wake(self) -> None:
        for consumer in self._consumers.values():
            if consumer.lot:
                consumer.lot.unpark_all()

    def _blobs_between(self, start: int, stop: int) -> list[bytes]:
        begin = start % self._capacity
        end = begin + stop - start
        if end <= self._capacity:
            blobs = self._blobs[begin:end]
        else:
            blobs = self._blobs[begin:] + self._blobs[: end - self._capacity]
        return cast("list[bytes]", blobs)

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
