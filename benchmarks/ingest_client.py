"""An AddEvents client in its own process: flat out (ingest, memory) or paced (latency).

``python -m benchmarks.ingest_client --target HOST:PORT MODE ...``; the last line on stdout is
one JSON object with the results.

It uses grpcio (C core), a client independent of the agent's grpclib, like Ray's C++ core
workers, and cheap enough not to starve the agent of the machine's second core. Requests are
built and serialized before the clock starts, so the client measures the agent, not itself.

- ``flat``: ``--streams`` concurrent calls, each sending the next pre-serialized request of
  ``--batch`` merged realistic events as soon as the previous one is acknowledged, for
  ``--warmup`` then ``--seconds``; reports the events acknowledged per second in the measured
  window. ``--total N`` instead sends exactly N events (then stops) and reports the time and
  when the first of them was sent (``start_ns``, on ``time.monotonic_ns()``).
- ``paced``: one request of ``--batch`` events every ``batch / rate`` seconds (each in its own
  task, so a slow answer never delays the schedule), every event of request ``i`` carrying
  ``message = "bench:i"``; reports, per request, the send time and the time its answer
  (acceptance) arrived, on ``time.monotonic_ns()``, which the sink shares.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Any

import grpc
import grpc.aio

from benchmarks.workload import ADD_EVENTS, merged_events, request_pool
from trio_events import pb

_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=_OPTIONS)


async def flat(args: argparse.Namespace) -> dict[str, Any]:
    pool = request_pool(args.pool, args.batch)
    async with _channel(args.target) as channel:
        call = channel.unary_unary(ADD_EVENTS)  # bytes in, bytes out: nothing to serialize
        await call(pool[0], timeout=10)  # connect (and count it as warm-up)
        sent = itertools.count(1)
        acked = 0
        start = time.monotonic()
        measure_from = start + args.warmup
        stop = measure_from + args.seconds
        total_requests = None if args.total is None else max(1, args.total // args.batch)

        async def stream() -> None:
            nonlocal acked
            while True:
                i = next(sent)
                if total_requests is not None:
                    if i >= total_requests:  # request 0 was the connecting call
                        return
                elif time.monotonic() >= stop:
                    return
                await call(pool[i % len(pool)], timeout=30)
                if total_requests is not None or time.monotonic() >= measure_from:
                    acked += args.batch

        start_ns = time.monotonic_ns()  # CLOCK_MONOTONIC, which the sinks share
        t0 = time.monotonic()
        await asyncio.gather(*(stream() for _ in range(args.streams)))
        elapsed = time.monotonic() - t0
    if total_requests is not None:
        return {"events": total_requests * args.batch, "seconds": elapsed, "start_ns": start_ns}
    return {"events": acked, "seconds": args.seconds, "events_per_s": acked / args.seconds}


async def paced(args: argparse.Namespace) -> dict[str, Any]:
    events = merged_events(args.pool * args.batch)
    templates = []
    for i in range(args.pool):
        request = pb.AddEventsRequest()
        request.events_data.events.extend(events[i * args.batch : (i + 1) * args.batch])
        templates.append(request)
    interval = args.batch / args.rate
    count = int((args.warmup + args.seconds) / interval)
    sends: dict[int, tuple[int, int]] = {}
    failures = 0
    async with _channel(args.target) as channel:
        call = channel.unary_unary(ADD_EVENTS)
        await call(templates[0].SerializeToString(), timeout=10)

        async def one(i: int, blob: bytes) -> None:
            nonlocal failures
            sent_ns = time.monotonic_ns()
            try:
                await call(blob, timeout=30)
            except grpc.aio.AioRpcError:
                failures += 1
                return
            sends[i] = (sent_ns, time.monotonic_ns())

        tasks = set()
        start = time.monotonic()
        for i in range(count):
            request = templates[i % len(templates)]
            tag = f"bench:{i}"
            for event in request.events_data.events:
                event.message = tag
            blob = request.SerializeToString()
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i, blob))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        behind = time.monotonic() - (start + count * interval)
    warm = int(args.warmup / interval)
    return {
        "batch": args.batch,
        "rate": args.rate,
        "warmup_requests": warm,
        "failures": failures,
        "schedule_overrun_s": round(behind, 4),
        "requests": {str(i): v for i, v in sends.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("mode", choices=("flat", "paced"))
    parser.add_argument("--batch", type=int, default=1000, help="events per request")
    parser.add_argument("--pool", type=int, default=20, help="distinct requests to cycle")
    parser.add_argument("--streams", type=int, default=4, help="concurrent calls (flat)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--total", type=int, default=None, help="send exactly this many events")
    parser.add_argument("--rate", type=float, default=25_000.0, help="events/s (paced)")
    args = parser.parse_args()
    run = flat if args.mode == "flat" else paced
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
