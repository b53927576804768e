"""The spool's index in memory: what its file holds, by sequence number, without the events.

The file holds chunks (one per AddEvents request, :mod:`trio_events.agent._spool_db`). Memory holds,
for every stored event, its type (evictions are charged by type, as Ray's metric is) and the
number of bytes stored before it (for the byte bound, and to cut a chunk's data into events):
12 bytes per event, so a spool can be much larger than the memory the agent may use.

Sequence numbers are given only to stored events, so they run without gaps from the first
chunk's first event to ``tail``; a chunk leaves the file, and the index, only from the front.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from itertools import accumulate, pairwise
from typing import Final, final

# The index drops its front lazily, in large steps, so dropping stays amortized O(1).
_COMPACT_AFTER: Final = 4096


@final
class ChunkIndex:
    def __init__(self, chunks: list[tuple[int, int, bytes, bytes]], tail: int) -> None:
        """From the file's ``(first_seq, count, types, sizes)`` rows, in order; ``tail`` is
        the next sequence number when there is no chunk."""
        self.firsts = [first for first, *_ in chunks]
        self.ends = [first + count for first, count, *_ in chunks]
        self.tail = self.ends[-1] if chunks else tail
        self._base = self.firsts[0] if chunks else self.tail  # sequence number of _types[0]
        self._types = array("i")
        sizes = array("q")
        for _, _, types, chunk_sizes in chunks:
            self._types.frombytes(types)
            sizes.frombytes(chunk_sizes)
        self._cum = array("q", accumulate(sizes, initial=0))  # bytes stored before each event

    @property
    def start(self) -> int:
        """The first sequence number the file holds (``tail`` when it holds none)."""
        return self.firsts[0] if self.firsts else self.tail

    @property
    def stored_bytes(self) -> int:
        """Bytes stored so far, counting from an arbitrary origin (see :meth:`append`)."""
        return self._cum[-1]

    def size(self, start: int, stop: int) -> int:
        return self._cum[stop - self._base] - self._cum[start - self._base]

    def types(self, start: int, stop: int) -> list[int]:
        return self._types[start - self._base : stop - self._base].tolist()

    def count_types(self, start: int, stop: int) -> Counter[int]:
        return Counter(self._types[start - self._base : stop - self._base])

    def to_evict(
        self, head: int, count: int, cum_in: list[int], max_events: int, max_bytes: int | None
    ) -> int:
        """How many of the oldest events the bounds evict when ``count`` more arrive.

        The unread events ``[head, tail)`` go first, then the incoming ones; ``cum_in`` is the
        incoming events' running byte total starting at :attr:`stored_bytes`.
        """
        buffered = self.tail - head
        drop = max(0, buffered + count - max_events)
        if max_bytes is not None:
            target = cum_in[-1] - max_bytes  # bytes that must come before the first one kept
            lo = head - self._base
            if target > self._cum[lo]:
                if target <= cum_in[0]:
                    by_bytes = bisect_left(self._cum, target, lo) - lo
                else:
                    by_bytes = buffered + bisect_left(cum_in, target, 1)
                drop = max(drop, by_bytes)
        return drop

    def append(self, types: array[int], cum: list[int]) -> None:
        """Index a stored chunk of ``len(types)`` events at ``tail``; ``cum`` continues the
        running byte total after each of them."""
        self.firsts.append(self.tail)
        self.tail += len(types)
        self.ends.append(self.tail)
        self._types.extend(types)
        self._cum.fromlist(cum)

    def settled_chunks(self, retain: int) -> int:
        """How many leading chunks hold only events before ``retain``."""
        return bisect_right(self.ends, retain)

    def delete_before(self, chunks: int) -> int | None:
        """The ``first_seq`` below which the file's rows go to delete ``chunks`` chunks."""
        if not chunks:
            return None
        return self.firsts[chunks] if chunks < len(self.firsts) else self.tail

    def drop(self, chunks: int) -> None:
        """Forget the first ``chunks`` chunks, already deleted from the file."""
        if not chunks:
            return
        del self.firsts[:chunks]
        del self.ends[:chunks]
        stale = self.start - self._base
        if stale > _COMPACT_AFTER and stale * 2 > len(self._types):
            del self._types[:stale]
            del self._cum[:stale]
            self._base += stale

    def chunk_of(self, seq: int) -> int:
        """The ``first_seq`` of the chunk holding event ``seq``."""
        return self.firsts[bisect_right(self.firsts, seq) - 1]

    def cut(self, rows: list[tuple[int, bytes]], start: int, stop: int) -> list[bytes]:
        """Events ``[start, stop)`` out of the chunks ``rows`` (``(first_seq, data)``, in
        order, from the one holding ``start``)."""
        blobs: list[bytes] = []
        cum, base = self._cum, self._base
        index = bisect_right(self.firsts, start) - 1
        for (first, data), end in zip(rows, self.ends[index:], strict=False):
            origin = cum[first - base]
            lo, hi = max(start, first) - base, min(stop, end) - base
            blobs.extend(data[a - origin : b - origin] for a, b in pairwise(cum[lo : hi + 1]))
        return blobs
