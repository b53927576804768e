"""Send task lifecycle events with poison among them to an agent, as one gRPC client.

``python -m tests.poison_client PORT EVENTS IDS_OUT POISON...`` sends EVENTS good events in
requests of 1000, with the poison events first in the first request. A POISON is ``year2300``
(a timestamp past int64 nanoseconds: valid protobuf, valid RFC 3339) or ``empty_id`` (an event
with no id). It prints ``poison_client: sent=N acknowledged=M`` and writes the hex ids of the
acknowledged events, poison included (an empty id as ``-``), one per line, to IDS_OUT.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import trio

from trio_events import pb
from trio_events._bridge import asyncio_loop
from trio_events._proto.src.ray.protobuf import common_pb2
from trio_events.producer._client import EventAggregatorClient

YEAR_2300 = 10_413_792_000  # 2300-01-01T00:00:00Z in seconds since 1970
PER_REQUEST = 1000


def lifecycle(rng: random.Random, seconds: int, event_id: bytes | None = None) -> pb.RayEvent:
    event = pb.RayEvent(
        event_id=rng.randbytes(16) if event_id is None else event_id,
        source_type=pb.RayEvent.CORE_WORKER,
        event_type=pb.RayEvent.TASK_LIFECYCLE_EVENT,
        severity=pb.RayEvent.INFO,
        session_name="session_poison",
    )
    event.timestamp.seconds = seconds
    payload = event.task_lifecycle_event
    payload.task_id = rng.randbytes(24)
    payload.task_attempt = 0
    transition = payload.state_transitions.add()
    transition.state = common_pb2.TaskStatus.RUNNING
    transition.timestamp.seconds = seconds
    return event


def build(events: int, poison: list[str], seed: int = 2300) -> list[pb.RayEvent]:
    rng = random.Random(seed)
    made: list[pb.RayEvent] = []
    for kind in poison:
        if kind == "year2300":
            made.append(lifecycle(rng, YEAR_2300))
        elif kind == "empty_id":
            made.append(lifecycle(rng, 1_750_000_000, event_id=b""))
        else:
            raise ValueError(f"Unknown poison {kind!r}; use year2300 or empty_id.")
    made += [lifecycle(rng, 1_750_000_000 + i) for i in range(events)]
    return made


async def send(port: int, events: list[pb.RayEvent]) -> list[str]:
    acked: list[str] = []
    async with asyncio_loop(), EventAggregatorClient(f"127.0.0.1:{port}") as client:
        for start in range(0, len(events), PER_REQUEST):
            chunk = events[start : start + PER_REQUEST]
            request = pb.AddEventsRequest(events_data=pb.RayEventsData(events=chunk))
            await client.add_events(request, timeout=30)
            acked += [e.event_id.hex() or "-" for e in chunk]
    return acked


def main() -> None:
    port, count, ids_out, *poison = sys.argv[1:]
    events = build(int(count), poison)
    acked = trio.run(send, int(port), events)
    Path(ids_out).write_text("".join(f"{i}\n" for i in acked))
    print(f"poison_client: sent={len(events)} acknowledged={len(acked)}", flush=True)


if __name__ == "__main__":
    main()
