"""The agent's publish path in its own process: buffer -> filter -> JSON -> HTTP POST.

``python -m benchmarks.publish_driver --url URL --events N --batch-sizes 1000[,...]``; the last
line on stdout is JSON. For each batch size: a ``MultiConsumerEventBuffer`` filled with N merged
realistic events (not timed), one ``RayEventPublisher`` (Ray's default exposable types, default
linger) with an ``HttpPublisherClient`` to the sink in another process, drained to the end;
reports events delivered per second of wall time, and the CPU time of this process.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Literal

import trio

from benchmarks.workload import merged_blobs
from trio_events._metrics import Metrics
from trio_events.agent._buffer import MultiConsumerEventBuffer
from trio_events.agent._http_sink import HttpPublisherClient, HttpPublisherConfig
from trio_events.agent._publisher import PublisherConfig, RayEventPublisher


async def drain_once(
    url: str,
    types: list[int],
    blobs: list[bytes],
    batch_size: int,
    converter: Literal["compiled", "protobuf"],
) -> dict[str, Any]:
    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(len(blobs) + 1, batch_size, metrics=metrics)
    buffer.add_many_nowait(types, blobs)
    client = HttpPublisherClient(HttpPublisherConfig(url))
    publisher = RayEventPublisher(
        PublisherConfig(converter=converter), client, buffer, metrics=metrics
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        cpu = time.process_time()
        start = time.perf_counter()
        stats = await publisher.drain(trio.current_time() + 600)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        nursery.cancel_scope.cancel()
    if stats.delivered != len(blobs):
        raise RuntimeError(f"the publisher did not deliver every event: {stats}")
    return {
        "batch_size": batch_size,
        "converter": converter,
        "events": stats.delivered,
        "seconds": elapsed,
        "events_per_s": stats.delivered / elapsed,
        "cpu_s": cpu,
        "attempts": stats.attempts,
    }


async def main(args: argparse.Namespace) -> None:
    types, blobs = merged_blobs(args.events)
    results = []
    # Warm-up: the converter compiles its functions, httpx opens its connection.
    await drain_once(args.url, types[:2000], blobs[:2000], 1000, args.converter)
    for size in args.batch_sizes:
        results.append(await drain_once(args.url, types, blobs, size, args.converter))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000]
    )
    parser.add_argument("--converter", choices=("compiled", "protobuf"), default="compiled")
    trio.run(main, parser.parse_args())
