"""Recorder hot paths: event generation, ``add`` from one task, and one export's CPU work.

    python benchmarks/bench_recorder.py [--events 10000] [--repeat 5]

Prints the best of ``--repeat`` runs for each figure (the machine may be shared):

- ``generate``: :func:`realistic_events` ("mixed") events per second;
- ``add``: ``recorder.add`` called once per event from one trio task;
- ``add_many``: ``recorder.add_many`` with chunks of 1,000;
- ``export``: one export of ``--events`` realistic mixed events: group by merge key, merge,
  serialize into an ``AddEventsRequest`` (what ``run()`` does before the RPC), in events/s;
- ``export+wire``: the same plus ``SerializeToString()`` of the request (what grpclib sends).
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import TYPE_CHECKING

import trio

from trio_events._cli._loadgen import realistic_events
from trio_events.producer._recorder import RayEventRecorder, RecorderConfig

if TYPE_CHECKING:
    from trio_events import pb


class NullClient:
    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        pass


def recorder(capacity: int) -> RayEventRecorder:
    config = RecorderConfig(max_queued_events=capacity)
    return RayEventRecorder(config, NullClient(), node_id=b"N" * 28)


def best(label: str, n: int, runs: list[float]) -> None:
    fastest = min(runs)
    print(f"{label:12s} {n / fastest:>12,.0f} events/s  ({fastest * 1e3:8.2f} ms for {n:,})")


def bench_generate(n: int, repeat: int) -> None:
    runs = []
    for seed in range(repeat):
        start = time.perf_counter()
        for _ in realistic_events("mixed", n, seed=seed):
            pass
        runs.append(time.perf_counter() - start)
    best("generate", n, runs)


async def bench_add(n: int, repeat: int) -> None:
    runs, runs_many = [], []
    for seed in range(repeat):
        events = list(realistic_events("mixed", n, seed=seed))
        rec = recorder(n)
        start = time.perf_counter()
        for event in events:
            rec.add(event)
        runs.append(time.perf_counter() - start)
        await trio.lowlevel.checkpoint()
        events = list(realistic_events("mixed", n, seed=seed))
        rec = recorder(n)
        start = time.perf_counter()
        for i in range(0, n, 1_000):
            rec.add_many(events[i : i + 1_000])
        runs_many.append(time.perf_counter() - start)
    best("add", n, runs)
    best("add_many", n, runs_many)


def bench_export(n: int, repeat: int) -> None:
    runs, runs_wire = [], []
    for seed in range(repeat):
        rec = recorder(n)
        rec.add_many(realistic_events("mixed", n, seed=seed))
        start = time.perf_counter()
        batch = rec._ring.take()  # the same two steps _export_once runs before the RPC
        request = rec._build_request(batch)
        middle = time.perf_counter()
        wire = request.SerializeToString()
        end = time.perf_counter()
        runs.append(middle - start)
        runs_wire.append(end - start)
    best("export", n, runs)
    best("export+wire", n, runs_wire)
    print(
        f"{'':12s} {len(batch.events):,} merged events, {len(wire) / 1e6:.2f} MB on the wire, "
        f"{len(wire) / len(batch.events):.0f} bytes per merged event"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    gc.collect()
    bench_generate(max(args.events, 100_000), args.repeat)
    trio.run(bench_add, max(args.events, 100_000), args.repeat)
    bench_export(args.events, args.repeat)


if __name__ == "__main__":
    main()
