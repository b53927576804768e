"""In-process figures, each run in a fresh child process: converter, hand-off, ingest, recorder.

``python -m benchmarks.micro converter|handoff|ingest|recorder [--events N] [--runs R]``; the last
line on
stdout is JSON with one list of per-run values per figure. Times are this process's CPU time
(``time.process_time``): on a shared machine, wall time of a single-threaded loop mostly
measures the neighbours, and these loops do no I/O.

- ``converter``: N merged realistic events in batches of 1,000 (a publisher's batch). The same
  parsed messages go through ``JsonConverter.dumps`` (ours) and ``protobuf_reference_dumps``
  (Ray's ``json.loads(MessageToJson(e))`` per event, then ``json.dumps``); also
  ``JsonConverter.dumps_serialized`` from the serialized events, parsing included, which is what
  our publisher does (Ray's buffer holds parsed messages, ours bytes). The three alternate
  within each run; ratios are taken per run.
- ``handoff``: what moving a batch of 1,000 to a conversion worker costs (trio-parallel, as the
  agent's ``ConversionPool`` does), against converting it here: per batch, this process's CPU
  time to convert it; the wall time of a worker round trip that carries the same serialized
  events in and a body of the same size out but converts nothing (pickling, the pipes, the
  wake-ups: the hand-off); and the wall time and this process's CPU of a real conversion in
  the worker. ``handoff_share`` is hand-off / conversion.
- ``ingest``: the agent's CPU per event in ``AggregatorAgent._add_events`` (parse, buffer) on
  pre-serialized requests of 1,000 events, with the events sliced out of the request (now) and
  re-serialized one by one (before; the same code with the slicing turned off), alternating
  within each run; and the CPU of h2's ``repr`` of one 16 KiB DATA frame (h2 formats one for
  every frame it receives) with hyperframe's own function and with ours.
- ``recorder``: ``add`` of N realistic events, one call per event from one trio task; and one
  export of a full ring (Ray's default 10,000 events): take (group by merge key, merge), build
  the ``AddEventsRequest`` and serialize it to the bytes grpclib sends.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import TYPE_CHECKING, Any

import trio
import trio_parallel

from benchmarks.workload import WINDOW, merged_events, recorder
from trio_events._cli._workload import realistic_events
from trio_events.agent._convert import JsonConverter
from trio_events.agent._convert_pool import _ready, _warm_worker, convert_in_worker
from trio_events.agent._convert_reference import protobuf_reference_dumps

if TYPE_CHECKING:
    from trio_events import pb


def converter(events: int, runs: int, batch: int = 1000) -> dict[str, Any]:
    messages = merged_events(events)
    blobs = [m.SerializeToString() for m in messages]
    ours = JsonConverter()
    if json.loads(ours.dumps_serialized(blobs)) != json.loads(protobuf_reference_dumps(messages)):
        raise AssertionError("the converters disagree on the benchmark's events")
    # The publisher's batches: one call per batch of 1,000 events.
    message_batches = [messages[i : i + batch] for i in range(0, events, batch)]
    blob_batches = [blobs[i : i + batch] for i in range(0, events, batch)]
    result: dict[str, list[float]] = {
        "ours": [],
        "ours_serialized": [],
        "protobuf": [],
        "ratio": [],
        "ratio_serialized": [],
    }
    for _ in range(runs):
        t0 = time.process_time()
        for batch_of_messages in message_batches:
            ours.dumps(batch_of_messages)
        t1 = time.process_time()
        for batch_of_blobs in blob_batches:
            ours.dumps_serialized(batch_of_blobs)
        t2 = time.process_time()
        for batch_of_messages in message_batches:
            protobuf_reference_dumps(batch_of_messages)
        t3 = time.process_time()
        result["ours"].append(events / (t1 - t0))
        result["ours_serialized"].append(events / (t2 - t1))
        result["protobuf"].append(events / (t3 - t2))
        result["ratio"].append((t3 - t2) / (t1 - t0))
        result["ratio_serialized"].append((t3 - t2) / (t2 - t1))
    return result


async def _add(events: int, runs: int) -> list[float]:
    rates = []
    for seed in range(runs):
        batch = list(realistic_events("mixed", events, seed=seed))
        rec = recorder(events)
        add = rec.add
        await trio.lowlevel.checkpoint()
        t0 = time.process_time()
        for event in batch:
            add(event)
        rates.append(events / (time.process_time() - t0))
        del batch, rec
        gc.collect()
    return rates


def _export(runs: int) -> tuple[list[float], list[int]]:
    rates: list[float] = []
    merged: list[int] = []
    for seed in range(runs):
        rec = recorder(WINDOW)
        rec.add_many(realistic_events("mixed", WINDOW, seed=seed))
        t0 = time.process_time()
        batch = rec._ring.take()
        request: pb.AddEventsRequest = rec._build_request(batch)
        request.SerializeToString()
        rates.append(batch.count / (time.process_time() - t0))
        merged.append(len(batch.events))
    return rates, merged


def _body_of_size(blobs: list[bytes], size: int) -> bytes:
    """In a worker: the hand-off's reply, as large as the converted body, without converting."""
    return bytes(size)


async def _handoff(blob_batches: list[list[bytes]], runs: int) -> dict[str, list[float]]:
    here = JsonConverter()
    sizes = [len(here.dumps_serialized(b)) for b in blob_batches]
    n = len(blob_batches)
    result: dict[str, list[float]] = {
        k: []
        for k in (
            "convert_ms",
            "handoff_ms",
            "handoff_cpu_ms",
            "worker_ms",
            "worker_cpu_ms",
            "handoff_share",
        )
    }
    async with trio_parallel.open_worker_context(init=_warm_worker) as context:
        await context.run_sync(_ready)
        for batch in blob_batches:  # warm the worker's code paths too
            await context.run_sync(convert_in_worker, False, batch)
        for _ in range(runs):
            c0 = time.process_time()
            for batch in blob_batches:
                here.dumps_serialized(batch)
            c1 = time.process_time()
            w0, p0 = time.perf_counter(), time.process_time()
            for batch, size in zip(blob_batches, sizes, strict=True):
                await context.run_sync(_body_of_size, batch, size)
            w1, p1 = time.perf_counter(), time.process_time()
            for batch in blob_batches:
                await context.run_sync(convert_in_worker, False, batch)
            w2, p2 = time.perf_counter(), time.process_time()
            result["convert_ms"].append((c1 - c0) / n * 1e3)
            result["handoff_ms"].append((w1 - w0) / n * 1e3)
            result["handoff_cpu_ms"].append((p1 - p0) / n * 1e3)
            result["worker_ms"].append((w2 - w1) / n * 1e3)
            result["worker_cpu_ms"].append((p2 - p1) / n * 1e3)
            result["handoff_share"].append((w1 - w0) / (c1 - c0))
    return result


def handoff(events: int, runs: int, batch: int = 1000) -> dict[str, Any]:
    blobs = [m.SerializeToString() for m in merged_events(events)]
    batches = [blobs[i : i + batch] for i in range(0, events, batch)]
    return trio.run(_handoff, batches, runs)


def ingest(events: int, runs: int, batch: int = 1000) -> dict[str, Any]:
    import binascii
    from unittest import mock

    from hyperframe.frame import DataFrame

    from benchmarks.workload import request_pool
    from trio_events._metrics import Metrics
    from trio_events.agent import _grpc_server, _ingest
    from trio_events.agent._buffer import MultiConsumerEventBuffer
    from trio_events.agent._ingest import AgentConfig, AggregatorAgent

    requests = request_pool(max(1, events // batch), batch)
    result: dict[str, list[float]] = {
        "sliced_us": [],
        "reserialized_us": [],
        "frame_repr_us": [],
        "hyperframe_repr_us": [],
    }

    def hyperframe_repr(data: bytes | None) -> str:  # hyperframe 6.1's _raw_data_repr
        if not data:
            return "None"
        r = binascii.hexlify(data).decode("ascii")
        return "<hex:" + (r[:20] + "..." if len(r) > 20 else r) + ">"

    def add_all() -> float:
        buffer = MultiConsumerEventBuffer(len(requests) * batch, batch, metrics=Metrics())
        agent = AggregatorAgent(AgentConfig(), metrics=Metrics(), buffer=buffer)
        buffer.open_consumer("publisher")
        t0 = time.process_time()
        for request in requests:
            agent._add_events(request)
        return (time.process_time() - t0) / (len(requests) * batch) * 1e6

    frame = DataFrame(1, data=bytes(16384))
    for _ in range(runs):
        result["sliced_us"].append(add_all())
        with mock.patch.object(_ingest, "event_slices", return_value=None):
            result["reserialized_us"].append(add_all())
        for key, function in (
            ("frame_repr_us", _grpc_server._short_data_repr),
            ("hyperframe_repr_us", hyperframe_repr),
        ):
            with mock.patch("hyperframe.frame._raw_data_repr", function):
                t0 = time.process_time()
                for _ in range(2000):
                    repr(frame)
                result[key].append((time.process_time() - t0) / 2000 * 1e6)
    return result


def recorder_figures(events: int, runs: int) -> dict[str, Any]:
    _export(1)  # warm-up
    export, merged = _export(runs)
    return {"add": trio.run(_add, events, runs), "export": export, "merged_per_export": merged}


if __name__ == "__main__":  # guarded: the hand-off's worker imports this module
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("converter", "handoff", "ingest", "recorder"))
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    gc.collect()
    if args.what == "converter":
        out = converter(args.events, args.runs)
    elif args.what == "handoff":
        out = handoff(args.events, args.runs)
    elif args.what == "ingest":
        out = ingest(args.events, args.runs)
    else:
        out = recorder_figures(args.events, args.runs)
    print(json.dumps(out), flush=True)
