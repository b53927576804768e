"""The benchmarks: each one starts the processes it needs and returns its figures.

Every benchmark takes a :class:`Context` (sizes, runs, where logs go) and returns
:class:`~benchmarks._harness.Figure` rows plus a JSON-able dict of details for the report.
Processes are started the way production runs them: ``python -m trio_events agent`` and
``python -m trio_events loadgen`` (the real command lines), the sink
(:mod:`benchmarks.sink`), and the drivers (:mod:`benchmarks.ingest_client`,
:mod:`benchmarks.publish_driver`, :mod:`benchmarks.micro`), all on 127.0.0.1.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks._harness import (
    AgentProcess,
    Child,
    Figure,
    SinkProcess,
    load_average,
    module,
    rss_bytes,
    wait_until,
)
from benchmarks.peer import peer, workers_sweep

if TYPE_CHECKING:
    from pathlib import Path

Details = dict[str, Any]
Benchmark = Callable[["Context"], tuple[list[Figure], Details]]

# How the end-to-end benchmark drives the recorder: Ray's defaults (10,000 events, 1 s) cap a
# single recorder at 10,000 events/s by construction, so the load generator exports every
# 0.1 s from a ring of 50,000 (a busy process's recorder tuned for throughput).
E2E_RECORDER_ARGS = ("--batch-interval", "0.1", "--max-queued-events", "50000")


@dataclass
class Context:
    quick: bool
    runs: int
    logs: Path
    results: dict[str, Any] = field(default_factory=dict)  # figures of earlier benchmarks

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def _load() -> float:
    return load_average()[0]


# --- in-process figures (each in a fresh child process) ---------------------------------------


def converter(ctx: Context) -> tuple[list[Figure], Details]:
    events = ctx.size(5_000, 300)
    runs = max(ctx.runs, 3) if not ctx.quick else 1
    child = Child(
        "micro-converter",
        module("benchmarks.micro", "converter", "--events", str(events), "--runs", str(runs)),
        ctx.logs,
    )
    load = _load()
    data = child.last_json()
    loads = [load, _load()]
    ratio = Figure(
        "converter_ratio",
        "converter: ours vs protobuf MessageToJson path (same events, same run)",
        "x",
        ">= 10",
        data["ratio"],
        loads,
        notes=f"{events} merged realistic events in batches of 1,000, both from parsed "
        "messages; process CPU time",
    )
    ratio_serialized = Figure(
        "converter_ratio_serialized",
        "converter: ours from serialized events (parse included) vs protobuf path",
        "x",
        ">= 0",
        data["ratio_serialized"],
        loads,
        notes="what our publisher does (its buffer holds bytes) against Ray's path on the "
        "parsed messages Ray's buffer holds",
    )
    ours = Figure(
        "converter_ours",
        "converter: ours (convert + orjson)",
        "events/s",
        ">= 0",
        data["ours"],
        loads,
    )
    ref = Figure(
        "converter_protobuf",
        "converter: protobuf reference path",
        "events/s",
        ">= 0",
        data["protobuf"],
        loads,
    )
    return [ratio, ratio_serialized, ours, ref], {"events": events, **data}


def handoff(ctx: Context) -> tuple[list[Figure], Details]:
    events = ctx.size(10_000, 2_000)
    runs = max(ctx.runs, 3) if not ctx.quick else 1
    child = Child(
        "micro-handoff",
        module("benchmarks.micro", "handoff", "--events", str(events), "--runs", str(runs)),
        ctx.logs,
    )
    load = _load()
    data = child.last_json()
    loads = [load, _load()]
    share = Figure(
        "handoff_share",
        "conversion workers: hand-off of a batch / converting it in-process",
        "x",
        "<= 0.2",
        data["handoff_share"],
        loads,
        notes="per batch of 1,000: wall time of a trio-parallel round trip carrying the "
        "serialized events in and a body of the JSON's size out (nothing converted), over the "
        "CPU time of converting the batch in-process",
    )
    kept = Figure(
        "handoff_cpu_kept",
        "conversion workers: agent-process CPU per batch with a worker / converting in-process",
        "x",
        ">= 0",
        [w / c for w, c in zip(data["worker_cpu_ms"], data["convert_ms"], strict=True)],
        loads,
        notes="what the agent's own process still spends per batch when a worker converts it",
    )
    return [share, kept], {"events": events, **data}


def ingest_cpu(ctx: Context) -> tuple[list[Figure], Details]:
    events = ctx.size(50_000, 2_000)
    runs = max(ctx.runs, 3) if not ctx.quick else 1
    child = Child(
        "micro-ingest",
        module("benchmarks.micro", "ingest", "--events", str(events), "--runs", str(runs)),
        ctx.logs,
    )
    load = _load()
    data = child.last_json()
    loads = [load, _load()]
    now = Figure(
        "ingest_cpu",
        "ingest: agent CPU per event in AddEvents handling (parse, slice, buffer)",
        "us",
        ">= 0",
        data["sliced_us"],
        loads,
        notes="in-process, requests of 1,000 merged realistic events; without gRPC/h2",
    )
    saved = Figure(
        "ingest_cpu_ratio",
        "ingest: CPU per event, re-serializing each event (before) / slicing (now)",
        "x",
        ">= 1",
        [b / a for a, b in zip(data["sliced_us"], data["reserialized_us"], strict=True)],
        loads,
    )
    frame = Figure(
        "h2_frame_repr_ratio",
        "h2's repr of a received 16 KiB DATA frame: hyperframe's / ours",
        "x",
        ">= 1",
        [h / o for o, h in zip(data["frame_repr_us"], data["hyperframe_repr_us"], strict=True)],
        loads,
        notes="h2 formats repr(frame) for every frame it receives, logged or not",
    )
    return [now, saved, frame], {"events": events, **data}


def recorder(ctx: Context) -> tuple[list[Figure], Details]:
    events = ctx.size(200_000, 5_000)
    runs = ctx.runs
    child = Child(
        "micro-recorder",
        module("benchmarks.micro", "recorder", "--events", str(events), "--runs", str(runs)),
        ctx.logs,
    )
    load = _load()
    data = child.last_json()
    loads = [load, _load()]
    add = Figure(
        "recorder_add",
        "recorder: add from one trio task",
        "events/s",
        ">= 500000",
        data["add"],
        loads,
    )
    export = Figure(
        "recorder_export",
        "recorder: export of a full ring (group, merge, serialize)",
        "events/s",
        ">= 150000",
        data["export"],
        loads,
        notes="10,000 recorded events per export, counted before merging; includes "
        "SerializeToString of the request",
    )
    return [add, export], {"add_events": events, **data}


# --- publish path -----------------------------------------------------------------------------


BATCH_SIZES_FULL = (100, 250, 500, 1000, 2000, 5000)
BATCH_SIZES_QUICK = (100, 1000)


def publish(ctx: Context) -> tuple[list[Figure], Details]:
    events = ctx.size(50_000, 2_000)
    figure = Figure(
        "publish",
        "publish path: buffer -> JSON -> POST to a sink process",
        "events/s",
        ">= 70000",
        notes=f"{events} merged realistic events, batches of 1,000, default linger",
    )
    per_cpu = Figure(
        "publish_per_cpu",
        "publish path: events per CPU-second of the publishing process",
        "events/s",
        ">= 0",
        notes="the same runs divided by the publisher's CPU time instead of wall time: what one "
        "uncontended core does (the wall-time figure falls when neighbours take the CPU)",
    )
    details: Details = {"events": events, "runs": [], "sweep": {}}
    with SinkProcess(ctx.logs) as sink:

        def drive(batch_sizes: tuple[int, ...], converter: str, n: int) -> list[dict[str, Any]]:
            sizes = ",".join(str(s) for s in batch_sizes)
            argv = module(
                "benchmarks.publish_driver",
                "--url",
                sink.url,
                "--events",
                str(n),
                "--batch-sizes",
                sizes,
                "--converter",
                converter,
            )
            sink.control("reset")
            result: list[dict[str, Any]] = Child("publish-driver", argv, ctx.logs).last_json()
            received = sink.control("stats")["events"]
            expected = sum(r["events"] for r in result) + min(2000, n)  # + the warm-up
            if received != expected:
                raise RuntimeError(f"the sink received {received} events, expected {expected}")
            return result

        for _ in range(ctx.runs):
            figure.load.append(_load())
            [run] = drive((1000,), "compiled", events)
            figure.runs.append(run["events_per_s"])
            per_cpu.runs.append(run["events"] / run["cpu_s"])
            per_cpu.load.append(figure.load[-1])
            details["runs"].append(run)
        sizes = BATCH_SIZES_QUICK if ctx.quick else BATCH_SIZES_FULL
        details["sweep"]["compiled"] = drive(sizes, "compiled", ctx.size(30_000, 1_000))
        details["sweep"]["protobuf"] = drive(sizes, "protobuf", ctx.size(10_000, 1_000))
    return [figure, per_cpu], details


# --- ingest and memory ------------------------------------------------------------------------


def _paused_agent(ctx: Context, sink: SinkProcess, buffer_size: int) -> AgentProcess:
    """An agent whose only sink answers 503: what it receives stays in its buffer."""
    sink.control("pause")
    return AgentProcess(ctx.logs, sink.url, "--buffer-size", str(buffer_size))


def ingest(ctx: Context) -> tuple[list[Figure], Details]:
    warmup, seconds = (0.3, 0.7) if ctx.quick else (1.0, 3.0)
    figure = Figure(
        "ingest",
        "ingest: AddEvents (batches of 1,000) from another process",
        "events/s",
        ">= 150000",
        notes=f"grpcio client, 4 concurrent streams, {seconds} s after {warmup} s warm-up; the "
        "sink refuses (503) so the agent only ingests",
    )
    details: Details = {"runs": []}
    with SinkProcess(ctx.logs) as sink:
        for _ in range(ctx.runs):
            # Room for everything a run sends (up to 500,000 events/s): no eviction is measured.
            with _paused_agent(ctx, sink, 2_500_000) as agent:
                figure.load.append(_load())
                result = _ingest_client(ctx, agent, warmup, seconds)
                received = agent.metric("ray_aggregator_agent_events_received_total")
                dropped = agent.metric("ray_aggregator_agent_queue_dropped_events_total")
                if dropped:
                    figure.ok = False
                figure.runs.append(result["events_per_s"])
                details["runs"].append({**result, "agent_received": received, "evicted": dropped})
    return [figure], details


def _ingest_client(ctx: Context, agent: AgentProcess, warmup: float, seconds: float) -> Details:
    """Run the grpcio ingest client (4 streams of 1,000-event requests) against ``agent``."""
    argv = module(
        "benchmarks.ingest_client",
        "--target",
        agent.target,
        "flat",
        "--streams",
        "4",
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    )
    result: Details = Child("ingest-client", argv, ctx.logs).last_json()
    return result


def spool(ctx: Context) -> tuple[list[Figure], Details]:
    """Ingest with the durable spool against the in-memory buffer, alternating in one run."""
    warmup, seconds = (0.3, 0.7) if ctx.quick else (1.0, 3.0)
    with_spool = Figure(
        "spool_ingest",
        "spool: AddEvents ingest with --spool (batches of 1,000)",
        "events/s",
        ">= 0",
        notes=f"as the ingest figure (grpcio client, 4 streams, {seconds} s), the agent writing "
        "each request to its SQLite spool (WAL, synchronous=normal) before replying",
    )
    ratio = Figure(
        "spool_ratio",
        "spool: ingest with the spool / without, same run",
        "x",
        ">= 0.5",
        notes="memory and spool runs alternate; the ratio is taken per pair",
    )
    details: Details = {"runs": []}
    with SinkProcess(ctx.logs) as sink:
        for i in range(ctx.runs):
            with _paused_agent(ctx, sink, 2_500_000) as agent:
                memory_rate = _ingest_client(ctx, agent, warmup, seconds)["events_per_s"]
            spool_path = ctx.logs / f"spool-{i}.db"
            for stale in ctx.logs.glob(f"spool-{i}.db*"):
                stale.unlink()
            sink.control("pause")
            with AgentProcess(
                ctx.logs, sink.url, "--buffer-size", "2500000", "--spool", str(spool_path)
            ) as agent:
                with_spool.load.append(_load())
                spool_rate = _ingest_client(ctx, agent, warmup, seconds)["events_per_s"]
            with_spool.runs.append(spool_rate)
            ratio.runs.append(spool_rate / memory_rate)
            ratio.load.append(_load())
            details["runs"].append({"memory": memory_rate, "spool": spool_rate})
    return [with_spool, ratio], details


def memory(ctx: Context) -> tuple[list[Figure], Details]:
    marks = (5_000, 20_000) if ctx.quick else (100_000, 1_000_000)
    warm = ctx.size(10_000, 1_000)
    figures = [
        Figure(
            f"memory_{mark}",
            f"memory: RSS growth per buffered event at {mark:,}",
            "bytes/event",
            "<= 400",
            notes="merged realistic events (about 330 bytes serialized); the sink refuses, so "
            "everything stays buffered (one batch of 1,000 in flight, retried)",
        )
        for mark in marks
    ]
    details: Details = {"runs": []}
    runs = 1 if ctx.quick else max(1, ctx.runs - 1)
    with SinkProcess(ctx.logs) as sink:
        for _ in range(runs):
            with _paused_agent(ctx, sink, marks[-1] + warm) as agent:

                def send(total: int) -> None:
                    argv = module(
                        "benchmarks.ingest_client",
                        "--target",
                        agent.target,
                        "flat",
                        "--streams",
                        "2",
                        "--total",
                        str(total),
                        "--pool",
                        "50",
                    )
                    Child("memory-client", argv, ctx.logs).last_json()

                send(warm)
                time.sleep(0.5)
                base = rss_bytes(agent.pid)
                sent = warm
                run: Details = {"base_rss": base, "warm_events": warm}
                for figure, mark in zip(figures, marks, strict=True):
                    figure.load.append(_load())
                    send(mark - (sent - warm))
                    sent = warm + mark
                    time.sleep(0.5)
                    rss = rss_bytes(agent.pid)
                    received = agent.metric("ray_aggregator_agent_events_received_total")
                    growth = (rss - base) / (received - warm)
                    figure.runs.append(growth)
                    run[str(mark)] = {"rss": rss, "received": received, "per_event": growth}
                details["runs"].append(run)
    return figures, details


# --- end to end and latency -------------------------------------------------------------------

_LOADGEN = re.compile(
    r"loadgen: events=(\d+) exported=(\d+) dropped=(\d+) failures=(\d+) elapsed_s=([\d.]+) "
    r"events_per_sec=(\d+)"
)


def _e2e_once(ctx: Context, converter: str, events: int) -> Details:
    with (
        SinkProcess(ctx.logs) as sink,
        AgentProcess(ctx.logs, sink.url, "--json-converter", converter) as agent,
    ):
        argv = module(
            "trio_events",
            "--log-level",
            "WARNING",
            "loadgen",
            "--target",
            agent.target,
            "--events",
            str(events),
            *E2E_RECORDER_ARGS,
        )
        loadgen = Child(f"loadgen-{converter}", argv, ctx.logs)
        loadgen.wait(1200)
        loadgen.stop()
        match = next((m for line in loadgen.lines if (m := _LOADGEN.search(line))), None)
        if match is None:
            raise RuntimeError("loadgen printed no summary; see its log")
        added, exported, dropped, failures = (int(x) for x in match.groups()[:4])
        elapsed = float(match.group(5))
        received = agent.metric("ray_aggregator_agent_events_received_total")
        wait_until(
            lambda: sink.control("stats")["events"] >= received, 600, "the sink to get everything"
        )
        stats = sink.control("stats")
        summary, _ = agent.shutdown()
    window = (stats["last_ns"] - stats["first_ns"]) / 1e9
    lossless = (
        dropped == 0
        and exported == added == events
        and summary["dropped"] == summary["abandoned"] == 0
        and summary["delivered"] == stats["events"] == received
    )
    return {
        "converter": converter,
        "recorded": added,
        "recorded_per_s": added / elapsed,
        "loadgen_elapsed_s": elapsed,
        "delivered": stats["events"],
        "delivered_per_s": stats["events"] / window,
        "sink_window_s": window,
        "bytes_per_event": stats["bytes"] / max(stats["events"], 1),
        "export_failures": failures,
        "agent_summary": summary,
        "lossless": lossless,
    }


def end_to_end(ctx: Context) -> tuple[list[Figure], Details]:
    events = ctx.size(400_000, 5_000)
    loadgen_args = " ".join(E2E_RECORDER_ARGS)
    recorded = Figure(
        "e2e_recorded",
        "end to end: loadgen -> agent -> sink, recorded events",
        "events/s",
        ">= 50000",
        notes=f"closed-loop `trio-events loadgen --events {events} {loadgen_args}`; "
        "recorded events (before the recorder merges them) per second of the load generator",
    )
    delivered = Figure(
        "e2e_delivered",
        "end to end: events delivered to the sink (after merging)",
        "events/s",
        ">= 0",
        notes="JSON events POSTed per second, first to last POST (about 2.8 recorded events "
        "merge into one)",
    )
    ratio = Figure(
        "e2e_ratio",
        "end to end: ours vs the same pipeline with protobuf's converter",
        "x",
        ">= 1",
        notes="delivered events/s, ratio per pair of runs (ours, reference) made back to back",
    )
    ref_recorded = Figure(
        "e2e_reference",
        "end to end, reference (protobuf converter), recorded events",
        "events/s",
        ">= 0",
    )
    details: Details = {"events": events, "ours": [], "reference": []}
    for _ in range(ctx.runs):
        load = _load()
        ours = _e2e_once(ctx, "compiled", events)
        ref = _e2e_once(ctx, "protobuf", events)
        for f in (recorded, delivered, ratio, ref_recorded):
            f.load.append(load)
        recorded.runs.append(ours["recorded_per_s"])
        delivered.runs.append(ours["delivered_per_s"])
        ref_recorded.runs.append(ref["recorded_per_s"])
        ratio.runs.append(ours["delivered_per_s"] / ref["delivered_per_s"])
        if not (ours["lossless"] and ref["lossless"]):
            recorded.ok = delivered.ok = ratio.ok = False
        details["ours"].append(ours)
        details["reference"].append(ref)
    return [recorded, delivered, ratio, ref_recorded], details


def _percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """Weighted percentile of (value, weight) pairs."""
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    seen = 0
    for value, weight in pairs:
        seen += weight
        if seen >= q * total:
            return value
    return pairs[-1][0]


def latency(ctx: Context) -> tuple[list[Figure], Details]:
    e2e = ctx.results.get("e2e_delivered")
    rate = 0.5 * e2e if e2e else 10_000.0
    warmup, seconds = (0.3, 1.0) if ctx.quick else (1.0, 10.0)
    batch = 100
    p50 = Figure("latency_p50", "latency: AddEvents sent -> POST received, p50", "ms", "<= 150")
    p99 = Figure("latency_p99", "latency: AddEvents sent -> POST received, p99", "ms", "<= 300")
    p50_acked = Figure(
        "latency_p50_reply", "latency: AddEvents reply -> POST received, p50", "ms", ">= 0"
    )
    p99_acked = Figure(
        "latency_p99_reply", "latency: AddEvents reply -> POST received, p99", "ms", ">= 0"
    )
    note = (
        f"{rate:,.0f} events/s (half the end-to-end delivered maximum), requests of {batch} "
        f"merged events paced evenly, {seconds} s after {warmup} s warm-up; default linger 0.1 s "
        "and batch 1,000. The agent accepts a request between the client sending it and the "
        "client getting the reply: 'sent' gives an upper bound of accepted -> POST, 'reply' a "
        "lower bound"
    )
    p50.notes = p99.notes = note
    details: Details = {"rate": rate, "runs": []}
    for _ in range(1 if ctx.quick else ctx.runs):
        with (
            SinkProcess(ctx.logs, track_ids=True) as sink,
            AgentProcess(ctx.logs, sink.url) as agent,
        ):
            load = _load()
            argv = module(
                "benchmarks.ingest_client",
                "--target",
                agent.target,
                "paced",
                "--batch",
                str(batch),
                "--rate",
                str(rate),
                "--warmup",
                str(warmup),
                "--seconds",
                str(seconds),
            )
            client = Child("latency-client", argv, ctx.logs).last_json()
            received = agent.metric("ray_aggregator_agent_events_received_total")
            wait_until(lambda: sink.control("stats")["events"] >= received, 60, "the sink")  # noqa: B023
            posts = sink.latency()
        sends = {int(k): v for k, v in client["requests"].items()}
        accepted: list[tuple[float, int]] = []
        from_send: list[tuple[float, int]] = []
        for received_ns, ids in posts:
            for key, count in ids.items():
                i = int(key)
                if i < client["warmup_requests"] or i not in sends:
                    continue
                sent_ns, acked_ns = sends[i]
                accepted.append(((received_ns - acked_ns) / 1e6, count))
                from_send.append(((received_ns - sent_ns) / 1e6, count))
        run = {
            "p50_ms": _percentile(accepted, 0.5),
            "p99_ms": _percentile(accepted, 0.99),
            "max_ms": max(v for v, _ in accepted),
            "max_from_send_ms": max(v for v, _ in from_send),
            "p50_from_send_ms": _percentile(from_send, 0.5),
            "p99_from_send_ms": _percentile(from_send, 0.99),
            "events": sum(w for _, w in accepted),
            "failures": client["failures"],
            "schedule_overrun_s": client["schedule_overrun_s"],
        }
        p50.runs.append(run["p50_from_send_ms"])
        p99.runs.append(run["p99_from_send_ms"])
        p50_acked.runs.append(run["p50_ms"])
        p99_acked.runs.append(run["p99_ms"])
        for f in (p50, p99, p50_acked, p99_acked):
            f.load.append(load)
        details["runs"].append(run)
    return [p50, p99, p50_acked, p99_acked], details


# --- start and stop ---------------------------------------------------------------------------


def lifecycle(ctx: Context) -> tuple[list[Figure], Details]:
    start = Figure(
        "agent_start",
        "agent: process start to ready (gRPC bound, publishers registered)",
        "s",
        "< 1",
        notes="`python -m trio_events agent`: spawn to its ready line; an AddEvents call then "
        "succeeds at once",
    )
    stop = Figure(
        "agent_shutdown",
        "agent: SIGTERM with a full buffer (100,000) to exit, healthy sink",
        "s",
        "< 10",
        notes="default grace period 10 s; every event delivered, none abandoned",
    )
    details: Details = {"start": [], "shutdown": []}
    buffer_size = ctx.size(100_000, 5_000)
    with SinkProcess(ctx.logs) as sink:
        for _ in range(ctx.runs):
            start.load.append(_load())
            with AgentProcess(ctx.logs, sink.url, name="agent-start") as agent:
                start.runs.append(agent.ready_at - agent.started)
                argv = module(
                    "benchmarks.ingest_client",
                    "--target",
                    agent.target,
                    "flat",
                    "--total",
                    "1000",
                    "--pool",
                    "2",
                )
                Child("start-client", argv, ctx.logs).last_json()
                details["start"].append(agent.ready_at - agent.started)
        for _ in range(ctx.runs):
            stop.load.append(_load())
            with _paused_agent(ctx, sink, buffer_size) as agent:
                argv = module(
                    "benchmarks.ingest_client",
                    "--target",
                    agent.target,
                    "flat",
                    "--total",
                    str(buffer_size),
                    "--pool",
                    "50",
                )
                Child("shutdown-client", argv, ctx.logs).last_json()
                buffered = agent.metric("trio_events_buffer_events")
                sink.control("reset")
                sink.control("resume")
                summary, elapsed = agent.shutdown()
            received = sink.control("stats")["events"]
            ok = summary["abandoned"] == summary["dropped"] == 0 and received == buffer_size
            stop.ok = stop.ok and ok
            stop.runs.append(elapsed)
            details["shutdown"].append(
                {"seconds": elapsed, "buffered": buffered, "sink_received": received, **summary}
            )
    return [start, stop], details


BENCHMARKS: dict[str, Benchmark] = {
    "converter": converter,
    "handoff": handoff,
    "ingest_cpu": ingest_cpu,
    "recorder": recorder,
    "publish": publish,
    "ingest": ingest,
    "spool": spool,
    "e2e": end_to_end,
    "latency": latency,
    "memory": memory,
    "lifecycle": lifecycle,
    "peer": peer,
    "workers": workers_sweep,
}


def median_of(figure: Figure) -> float | None:
    return statistics.median(figure.runs) if figure.runs else None
