"""Throughput of the publish path: buffer -> filter -> JSON -> HTTP POST, 1000-event batches.

Standalone: ``python benchmarks/bench_publisher.py [--events N]``. Fills a buffer with realistic
Ray events (``trio_events._cli._workload``, kind "mixed"), then drains it through a
``RayEventPublisher`` into (a) an in-memory ``httpx.MockTransport`` and (b) a local HTTP server on
127.0.0.1 (``trio_events._http_server``, answering 200), once per body compression. Prints
events/s and the time spent converting a batch, plain and cooperatively.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Literal

import httpx
import trio

from trio_events._cli._workload import realistic_events
from trio_events._http_server import Request, Response, serve_http
from trio_events._metrics import Metrics
from trio_events.agent._buffer import MultiConsumerEventBuffer
from trio_events.agent._convert import JsonConverter
from trio_events.agent._http_sink import HttpPublisherClient, HttpPublisherConfig
from trio_events.agent._publisher import PublisherConfig, RayEventPublisher

COMPRESSIONS: tuple[Literal["none", "gzip", "zstd"], ...] = ("none", "gzip", "zstd")


def make_blobs(n: int) -> tuple[list[int], list[bytes]]:
    events = [e.serialize() for e in realistic_events("mixed", n, seed=1)]
    return [e.event_type for e in events], [e.SerializeToString() for e in events]


async def drain_through(
    types: list[int],
    blobs: list[bytes],
    config: HttpPublisherConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[float, int]:
    metrics = Metrics()
    buffer = MultiConsumerEventBuffer(len(blobs) + 1, 1000, metrics=metrics)
    buffer.add_many_nowait(types, blobs)
    client = HttpPublisherClient(config, transport=transport)
    publisher = RayEventPublisher(
        PublisherConfig(exposable_event_types=None), client, buffer, metrics=metrics
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        start = time.perf_counter()
        stats = await publisher.drain(trio.current_time() + 600)
        elapsed = time.perf_counter() - start
    assert stats.delivered == len(blobs), stats
    return elapsed, stats.delivered


async def main(n: int) -> None:
    types, blobs = make_blobs(n)
    converter = JsonConverter()
    batch = blobs[:1000]
    converter.dumps_serialized(batch)
    plain = []
    for _ in range(20):
        t = time.perf_counter()
        body = converter.dumps_serialized(batch)
        plain.append(time.perf_counter() - t)
    coop = []
    for _ in range(20):
        t = time.perf_counter()
        await converter.dumps_serialized_cooperatively(batch)
        coop.append(time.perf_counter() - t)
    print(
        f"convert 1000 events: {statistics.median(plain) * 1e3:.2f} ms plain, "
        f"{statistics.median(coop) * 1e3:.2f} ms cooperative (5 checkpoints); "
        f"body {len(body) / 1024:.0f} KiB"
    )

    async def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    for compression in COMPRESSIONS:
        config = HttpPublisherConfig("http://sink.test/", compression=compression)
        elapsed, count = await drain_through(types, blobs, config, httpx.MockTransport(ok))
        print(f"MockTransport  {compression:>4}: {count / elapsed:>9,.0f} events/s")

    received = [0]

    async def handler(request: Request) -> Response:
        received[0] += len(request.body)
        return Response(200, b"ok")

    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, handler, "127.0.0.1", 0))
        for compression in COMPRESSIONS:
            received[0] = 0
            config = HttpPublisherConfig(f"http://127.0.0.1:{port}/", compression=compression)
            elapsed, count = await drain_through(types, blobs, config)
            print(
                f"local server   {compression:>4}: {count / elapsed:>9,.0f} events/s, "
                f"{received[0] / count:.0f} bytes/event on the wire"
            )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    trio.run(main, parser.parse_args().events)
