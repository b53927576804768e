"""The benchmarks' events: realistic Ray events as the aggregator receives them.

:func:`trio_events._cli._workload.realistic_events` gives what a core worker *records* (several
partial lifecycle events per task attempt). An aggregator receives them after a recorder has
merged each export window, so :func:`merged_events` runs the stream through a real recorder's
ring and request builder, window by window (Ray's default ring of 10,000 events), and returns the
``RayEvent`` messages of those requests: the events every agent-side benchmark sends, buffers,
converts and publishes.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

import trio

from trio_events import pb
from trio_events._cli._workload import realistic_events
from trio_events.producer._recorder import RayEventRecorder, RecorderConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Recorded events per export window: Ray's ray_event_recorder_max_queued_events default.
WINDOW = 10_000
ADD_EVENTS = "/ray.rpc.events.EventAggregatorService/AddEvents"


class NullClient:
    """An AddEvents client that accepts everything (for in-process recorder measurements)."""

    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def recorder(capacity: int = WINDOW) -> RayEventRecorder:
    return RayEventRecorder(
        RecorderConfig(max_queued_events=capacity), NullClient(), node_id=os.urandom(28)
    )


def merged_windows(count: int, *, seed: int = 1) -> Iterator[pb.AddEventsRequest]:
    """Export requests of a recorder fed ``realistic_events("mixed")``, ``count`` events in all."""
    rec = recorder()
    raw = realistic_events("mixed", 1 << 62, seed=seed)
    produced = 0
    while produced < count:
        rec.add_many(itertools.islice(raw, WINDOW))
        batch = rec._ring.take()  # exactly what an export does before the RPC
        rec._ring.exported(batch)
        request = rec._build_request(batch)
        events = request.events_data.events
        if produced + len(events) > count:
            del events[count - produced :]
        produced += len(events)
        yield request


def merged_events(count: int, *, seed: int = 1) -> list[pb.RayEvent]:
    """``count`` merged realistic events, in export order."""
    return [e for request in merged_windows(count, seed=seed) for e in request.events_data.events]


def merged_blobs(count: int, *, seed: int = 1) -> tuple[list[int], list[bytes]]:
    """Event types and serialized events, as the agent's buffer holds them."""
    events = merged_events(count, seed=seed)
    return [e.event_type for e in events], [e.SerializeToString() for e in events]


def request_pool(requests: int, per_request: int, *, seed: int = 1) -> list[bytes]:
    """``requests`` distinct serialized AddEventsRequests of ``per_request`` merged events."""
    events = merged_events(requests * per_request, seed=seed)
    pool = []
    for i in range(requests):
        request = pb.AddEventsRequest()
        request.events_data.events.extend(events[i * per_request : (i + 1) * per_request])
        pool.append(request.SerializeToString())
    return pool
