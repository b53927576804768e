"""A publisher's window of batches in flight, adaptive in the manner of Vector's ARC.

Vector's Adaptive Request Concurrency (vector.dev, "adaptive request concurrency"; its
``adaptive_concurrency`` controller) treats the number of requests in flight to one destination
like TCP's congestion window: additive increase, multiplicative decrease (AIMD), driven by the
round-trip time the destination shows.

* The limit starts at 1 and never leaves ``[1, max_in_flight]``.
* RTTs are averaged over an *interval* of about one past RTT. At the end of each interval the
  interval's mean RTT is compared with ``past``, an exponentially weighted moving average of
  earlier intervals (``ewma_alpha`` 0.4), and its deviation:

  - the limit grows by 1 when the window was full at some point of the interval (the limit was
    what held requests back), no back-pressure was seen, and the mean RTT did not rise
    (``current <= past``);
  - it is multiplied by ``decrease_ratio`` (0.9, at least -1, never below 1) when back-pressure
    was seen (429, 503, a timeout) or the mean RTT rose past ``past + rtt_deviation_scale *
    deviation`` (2.5);

  then ``past`` absorbs the interval's mean.

One guard is ours. A sink that serves requests one at a time answers k requests in flight in
about k times its service time; ``past`` then follows the mean up step by step, and noise alone
lets the limit creep up while every request just waits longer. So the lowest interval mean is
kept as the *floor*, the latency without queueing (taken afresh whenever the limit is 1, when
nothing of ours waits, so that a sink that became slower for good is re-measured): an interval
whose mean is over ``RTT_TOLERANCE`` (2) times the floor never grows the limit and shrinks it
as rising latency does. A sink whose latency does not depend on the load (40 ms
whatever the number in flight) keeps its mean at the floor, and the limit grows to the bound.

A *slot* is held by one batch from the moment it is dispatched until it is settled (delivered,
or dropped and counted), retries and splits included, so with ``max_in_flight=1`` batches are
settled strictly in order. ``adaptive=False`` fixes the limit at ``max_in_flight``.
"""

from __future__ import annotations

import math
from typing import Final, final

import attrs
import trio

__all__ = ["AdaptiveWindow", "WindowStatistics"]

DECREASE_RATIO: Final = 0.9
EWMA_ALPHA: Final = 0.4
RTT_DEVIATION_SCALE: Final = 2.5
#: RTTs closer than this are equal: clock arithmetic in floats must not decide "did not rise".
RTT_RESOLUTION: Final = 1e-6
RTT_TOLERANCE: Final = 2.0


@final
@attrs.frozen
class WindowStatistics:
    limit: int  #: batches allowed in flight now
    in_flight: int  #: batches dispatched and not settled
    max_in_flight: int
    adaptive: bool
    past_rtt: float | None  #: the moving baseline, seconds (None before the first interval)
    floor_rtt: float | None  #: the lowest interval mean (latency without queueing), seconds
    increases: int  #: times the limit grew
    decreases: int  #: times it shrank


class _Ewma:
    """An exponentially weighted mean and variance (West's incremental form)."""

    __slots__ = ("alpha", "mean", "variance")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.mean: float | None = None
        self.variance = 0.0

    def update(self, value: float) -> None:
        if self.mean is None:
            self.mean = value
            return
        diff = value - self.mean
        increment = self.alpha * diff
        self.mean += increment
        self.variance = (1 - self.alpha) * (self.variance + diff * increment)


@final
class AdaptiveWindow:
    """Slots for batches in flight: ``await acquire()``, ``release()``, ``record(...)``."""

    def __init__(
        self,
        max_in_flight: int,
        *,
        adaptive: bool = True,
        decrease_ratio: float = DECREASE_RATIO,
        ewma_alpha: float = EWMA_ALPHA,
        rtt_deviation_scale: float = RTT_DEVIATION_SCALE,
    ) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise TypeError(f"max_in_flight must be an int, not {type(max_in_flight).__name__}.")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}.")
        self._max = max_in_flight
        self._adaptive = adaptive and max_in_flight > 1
        self._limit = 1 if self._adaptive else max_in_flight
        self._in_flight = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._decrease_ratio = decrease_ratio
        self._scale = rtt_deviation_scale
        self._past = _Ewma(ewma_alpha)
        self._floor: float | None = None  # the lowest interval mean: latency without queueing
        self._sum = 0.0
        self._count = 0
        self._reached_limit = False
        self._back_pressure = False
        self._next_update = -math.inf
        self._increases = self._decreases = 0

    @property
    def limit(self) -> int:
        return self._limit

    async def acquire(self) -> None:
        """Wait for a free slot and take it. An unconditional checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        scheduled = False
        while self._in_flight >= self._limit:
            await self._lot.park()
            scheduled = True
        if not scheduled:
            await trio.lowlevel.cancel_shielded_checkpoint()
        self._in_flight += 1
        if self._in_flight >= self._limit:
            self._reached_limit = True

    def release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def record(self, rtt: float | None, now: float, *, back_pressure: bool) -> None:
        """One response: its round-trip time (None to leave it out) and whether it asked us to
        slow down. Adjusts the limit at the end of each interval (see the module docstring)."""
        if not self._adaptive:
            return
        if rtt is not None:
            self._sum += rtt
            self._count += 1
        self._back_pressure = self._back_pressure or back_pressure
        if now < self._next_update:
            return
        current = self._sum / self._count if self._count else None
        past = self._past.mean
        queueing = False
        if current is not None:
            if self._floor is None or current < self._floor or self._limit == 1:
                self._floor = current
            queueing = current > RTT_TOLERANCE * self._floor + RTT_RESOLUTION
        if past is not None:
            threshold = math.sqrt(self._past.variance) * self._scale
            if (
                self._limit < self._max
                and self._reached_limit
                and not self._back_pressure
                and not queueing
                and current is not None
                and current <= past + RTT_RESOLUTION
            ):
                self._limit += 1
                self._increases += 1
                self._wake()
            elif self._limit > 1 and (
                self._back_pressure
                or queueing
                or (current is not None and current > past + threshold + RTT_RESOLUTION)
            ):
                self._limit = max(1, min(self._limit - 1, int(self._limit * self._decrease_ratio)))
                self._decreases += 1
        if current is not None:
            self._past.update(current)
        self._next_update = now + (self._past.mean or 0.0)
        self._sum, self._count = 0.0, 0
        self._reached_limit = self._in_flight >= self._limit
        self._back_pressure = False

    def statistics(self) -> WindowStatistics:
        return WindowStatistics(
            limit=self._limit,
            in_flight=self._in_flight,
            max_in_flight=self._max,
            adaptive=self._adaptive,
            past_rtt=self._past.mean,
            floor_rtt=self._floor,
            increases=self._increases,
            decreases=self._decreases,
        )

    def _wake(self) -> None:
        free = self._limit - self._in_flight
        if free > 0 and self._lot:
            self._lot.unpark(count=free)
