"""Ingest with and without the durable spool, in one process, in the same run.

``python -m benchmarks.bench_spool [--events N] [--runs R] [--batch B] [--synchronous full]``;
the last line on stdout is JSON (per-run lists, like :mod:`benchmarks.micro`). Call
:func:`ingest` from the suite.

What is timed is the agent's work per AddEvents request on the event loop, the part the spool
adds to: ``AggregatorAgent._add_events`` on pre-serialized requests of ``batch`` merged
realistic events (parse, re-serialize each event, buffer; with the spool, one SQLite
transaction), alternating memory and spool within each run. A consumer takes and settles a
batch after each request so the buffer stays at its steady state (for the spool: commits that
write the cursor and delete settled chunks); that consumer's time is reported apart
(``settle``), as it is the publisher's, not the ingest path's. The spool runs as in the agent,
with :meth:`SpoolEventBuffer.run` checkpointing the WAL in a worker thread. Wall time
(``perf_counter``): unlike the CPU-bound micro benchmarks, the spool's cost includes its
``write()`` system calls. gRPC framing is not included; the process-level benchmark
(``agent --spool``) shows that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import trio

from benchmarks.workload import request_pool
from trio_events._metrics import Metrics
from trio_events.agent._buffer import EventBuffer, EventConsumer, MultiConsumerEventBuffer
from trio_events.agent._ingest import AgentConfig, AggregatorAgent
from trio_events.agent._spool import SpoolConfig, SpoolEventBuffer


async def _drive(
    buffer: EventBuffer, consumer: EventConsumer, requests: list[bytes], metrics: Metrics
) -> tuple[float, float]:
    """Seconds spent ingesting ``requests``, and seconds spent settling them."""
    agent = AggregatorAgent(AgentConfig(), metrics=metrics, buffer=buffer)
    ingest = settle = 0.0
    for request in requests:
        t0 = time.perf_counter()
        agent._add_events(request)
        t1 = time.perf_counter()
        batch = consumer.receive_nowait()
        consumer.commit(batch)
        settle += time.perf_counter() - t1
        ingest += t1 - t0
        await trio.lowlevel.checkpoint()  # as between two RPCs: the checkpointer gets its turn
    return ingest, settle


async def _run(
    requests: list[bytes], batch: int, config: SpoolConfig
) -> tuple[float, float, float]:
    metrics = Metrics()
    memory = MultiConsumerEventBuffer(100_000, batch, metrics=metrics)
    consumer = memory.open_consumer("publisher", max_batch_size=1 << 30)
    mem_s, _ = await _drive(memory, consumer, requests, metrics)
    with SpoolEventBuffer(config, batch, metrics=metrics) as spool:
        async with trio.open_nursery() as nursery:
            await nursery.start(spool.run)
            consumer = spool.open_consumer("publisher", max_batch_size=1 << 30)
            spool_s, settle_s = await _drive(spool, consumer, requests, metrics)
            nursery.cancel_scope.cancel()
    return mem_s, spool_s, settle_s


def ingest(
    events: int = 200_000,
    runs: int = 3,
    batch: int = 1000,
    synchronous: Literal["normal", "full"] = "normal",
    directory: str | None = None,
) -> dict[str, Any]:
    """Events/s through the AddEvents handler into memory and into a spool, per run."""
    requests = request_pool(max(1, events // batch), batch)
    count = len(requests) * batch
    result: dict[str, list[float]] = {
        "memory": [],
        "spool": [],
        "ratio": [],
        "spool_ms_per_request": [],
        "memory_ms_per_request": [],
        "settle_ms_per_batch_spool": [],
    }
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for run in range(runs):
            config = SpoolConfig(str(Path(tmp) / f"run{run}.spool"), synchronous=synchronous)
            mem_s, spool_s, settle_s = trio.run(_run, requests, batch, config)
            result["memory"].append(count / mem_s)
            result["spool"].append(count / spool_s)
            result["ratio"].append(mem_s / spool_s)
            result["memory_ms_per_request"].append(mem_s / len(requests) * 1e3)
            result["spool_ms_per_request"].append(spool_s / len(requests) * 1e3)
            result["settle_ms_per_batch_spool"].append(settle_s / len(requests) * 1e3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal")
    parser.add_argument("--dir", default=None, help="where the spool files go (default: $TMPDIR)")
    args = parser.parse_args()
    result = ingest(args.events, args.runs, args.batch, args.synchronous, args.dir)
    for key, values in result.items():
        print(f"{key:>28}: median {statistics.median(values):,.2f}  runs {values}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
