"""In-process figures, each run in a fresh child process: the converter and the recorder.

``python -m benchmarks.micro converter|recorder [--events N] [--runs R]``; the last line on
stdout is JSON with one list of per-run values per figure. Times are this process's CPU time
(``time.process_time``): on a shared machine, wall time of a single-threaded loop mostly
measures the neighbours, and these loops do no I/O.

- ``converter``: N merged realistic events in batches of 1,000 (a publisher's batch). The same
  parsed messages go through ``JsonConverter.dumps`` (ours) and ``protobuf_reference_dumps``
  (Ray's ``json.loads(MessageToJson(e))`` per event, then ``json.dumps``); also
  ``JsonConverter.dumps_serialized`` from the serialized events, parsing included, which is what
  our publisher does (Ray's buffer holds parsed messages, ours bytes). The three alternate
  within each run; ratios are taken per run.
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

from benchmarks.workload import WINDOW, merged_events, recorder
from trio_events._cli._workload import realistic_events
from trio_events.agent._convert import JsonConverter
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


def recorder_figures(events: int, runs: int) -> dict[str, Any]:
    _export(1)  # warm-up
    export, merged = _export(runs)
    return {"add": trio.run(_add, events, runs), "export": export, "merged_per_export": merged}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("converter", "recorder"))
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    gc.collect()
    if args.what == "converter":
        out = converter(args.events, args.runs)
    else:
        out = recorder_figures(args.events, args.runs)
    print(json.dumps(out), flush=True)
