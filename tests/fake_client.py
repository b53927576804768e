"""A scripted stand-in for EventAggregatorClient: no sockets, hooks for every outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from trio_events import pb
from trio_events.producer._client import BackpressureError, ExportError, RetryableExportError

if TYPE_CHECKING:
    from collections.abc import Callable

#: What the next call does. "delivered_then_*" reach the sink and then fail anyway, which is
#: what a timeout after the server processed the request looks like to the sender.
OUTCOMES = (
    "ok",
    "unavailable",
    "backpressure",
    "rejected",
    "deadline",
    "hang",
    "delivered_then_deadline",
    "delivered_then_hang",
)


class FakeClient:
    def __init__(self) -> None:
        self.script: list[str] = []  # outcomes of the next calls; "ok" once it runs out
        self.delay = 0.0  # virtual seconds every call takes before its outcome
        self.attempts: list[tuple[float, pb.AddEventsRequest]] = []  # every call
        self.delivered: list[pb.AddEventsRequest] = []  # what reached the "sink"
        self.acked: list[pb.AddEventsRequest] = []  # what the recorder was told succeeded
        self.timeouts: list[float] = []
        self.in_flight = self.max_in_flight = 0
        self.closed = False
        # Optional, run at the start of each call (e.g. to add events while one is in flight).
        self.on_call: Callable[[pb.AddEventsRequest], object] | None = None

    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        copy = pb.AddEventsRequest()
        copy.CopyFrom(request)
        self.attempts.append((trio.current_time(), copy))
        self.timeouts.append(timeout)
        outcome = self.script.pop(0) if self.script else "ok"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.on_call is not None:
                self.on_call(copy)
            if self.delay:
                await trio.sleep(self.delay)
            else:
                await trio.lowlevel.checkpoint()
            if outcome.startswith("delivered_then_") or outcome == "ok":
                self.delivered.append(copy)
            if outcome == "ok":
                self.acked.append(copy)
                return
            if outcome in ("hang", "delivered_then_hang"):
                await trio.sleep_forever()
            if outcome == "unavailable":
                raise RetryableExportError("the aggregator is down.", reason="unavailable")
            if outcome == "backpressure":
                raise BackpressureError("the aggregator is full.", reason="resource_exhausted")
            if outcome == "rejected":
                raise ExportError("the aggregator refused it.", reason="rejected")
            if outcome in ("deadline", "delivered_then_deadline"):
                raise RetryableExportError("too late.", reason="deadline")
            raise AssertionError(f"unknown outcome {outcome!r}")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True

    @property
    def attempt_times(self) -> list[float]:
        return [t for t, _ in self.attempts]
