"""Soak: sustained load at a fixed rate through a real agent to a sink that fails now and then.

A loadgen records ``TRIO_EVENTS_SOAK_RATE`` events per second (default 10000, about half of
what this 2-core setup sustains: ``test_capacity`` measures it) for ``TRIO_EVENTS_SOAK_SECONDS`` (default
600 for ``nox -s soak``). The sink answers 503 to every 7th POST and to everything for 3 s of
every 30 s (every 8 s in the short run). Once a second the agent's RSS (``/proc/<pid>/status``) and ``/metrics`` are sampled.
At the end: RSS stays bounded and does not grow from the early windows to the last, publish
latency does not drift, the backlog does not grow, and every event is delivered or counted.
The time series summary goes to ``bench-results/soak.json`` under the duration run.

The short variant (15 s) is part of the default session; the long one is marked slow.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.harness import (
    Agent,
    AgentCounters,
    agent_process,
    check_ledger,
    ledger,
    loadgen_args,
    loadgen_result,
    record_result,
    rss_kib,
    scrape,
    spawn,
    wait_settled,
)
from tests.scripted_sink import OK, Reply, ScriptedSink

RATE = int(os.environ.get("TRIO_EVENTS_SOAK_RATE", "10000"))
RECORDER = ("--batch-interval", "0.2", "--flush-timeout", "60")
SECONDS = float(os.environ.get("TRIO_EVENTS_SOAK_SECONDS", "600"))
OUTAGE_FOR, FAIL_EVERY = 3.0, 7
RSS_LIMIT_MIB = 400  # an absolute bound, far above what the agent needs (see the results)


@attrs.frozen
class Sample:
    at: float  # seconds since the load started
    rss_kib: int
    counters: AgentCounters


def outage_every(seconds: float) -> float:
    """Every 30 s in a long run; often enough for a short one to see a few outages."""
    return min(30.0, max(8.0, seconds / 3))


def failing_now_and_then(start: float, every: float) -> Any:
    def script(n: int) -> Reply:
        if (trio.current_time() - start) % every >= every - OUTAGE_FOR:
            return Reply(503)  # the sink is "down" for the last 3 s of every period
        return Reply(503) if n % FAIL_EVERY == FAIL_EVERY - 1 else OK

    return script


async def sample_until_done(agent: Agent, done: trio.Event, start: float) -> list[Sample]:
    samples: list[Sample] = []
    next_at = trio.current_time()
    while not done.is_set():
        rss = rss_kib(agent.proc.pid)
        assert rss is not None, agent.proc.describe()
        counters = await scrape(agent.metrics_port)
        samples.append(Sample(trio.current_time() - start, rss, counters))
        next_at += 1.0
        with trio.move_on_at(next_at):
            await done.wait()
    return samples


def windows(samples: list[Sample], seconds: float) -> list[dict[str, Any]]:
    """Per window of ``seconds``: RSS, mean publish latency, delivery rate, largest backlog."""
    found = []
    start = 0.0
    while start < samples[-1].at:
        inside = [s for s in samples if start <= s.at < start + seconds]
        before = [s for s in samples if s.at < start]
        if len(inside) >= 2:
            first = before[-1] if before else inside[0]
            last = inside[-1]
            count = last.counters.latency_count - first.counters.latency_count
            total = last.counters.latency_sum - first.counters.latency_sum
            found.append(
                {
                    "start_s": round(start, 1),
                    "rss_mib_median": round(statistics.median(s.rss_kib for s in inside) / 1024, 1),
                    "rss_mib_max": round(max(s.rss_kib for s in inside) / 1024, 1),
                    "publish_latency_ms_mean": round(1000 * total / count, 2) if count else None,
                    "published_per_s": round(
                        (last.counters.published - first.counters.published)
                        / max(last.at - first.at, 1e-9)
                    ),
                    "backlog_max": max(s.counters.held for s in inside),
                }
            )
        start += seconds
    return found


async def soak(tmp_path: Path, nursery: trio.Nursery, seconds: float) -> dict[str, Any]:
    events = int(RATE * seconds)
    start = trio.current_time()
    sink = ScriptedSink(failing_now_and_then(start, outage_every(seconds)))
    port = await nursery.start(sink.run)
    url = f"http://127.0.0.1:{port}/v1/events"
    async with agent_process("agent", tmp_path, "--export-addr", url) as agent:
        ids = tmp_path / "loadgen.ids"
        argv = loadgen_args(agent.target, events, ids, "--rate", str(RATE), *RECORDER)
        async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
            done = trio.Event()
            results: list[list[Sample]] = []

            async def sample() -> None:
                results.append(await sample_until_done(agent, done, start))

            async with trio.open_nursery() as inner:
                inner.start_soon(sample)
                await loadgen.wait(within=seconds * 2 + 120)
                done.set()
            run = loadgen_result(loadgen, ids)
        counters = await wait_settled(agent, within=120)
        rss_end = rss_kib(agent.proc.pid)
        final = await agent.stop()
    [samples] = results
    assert final.delivered == counters.published
    drops = dict(counters.dropped)
    entry = ledger([run], sink.ids, drops)
    check_ledger(entry)
    window = max(3.0, seconds / 10)
    series = windows(samples, window)
    entry.update(
        seconds=seconds,
        rate_events_per_s=RATE,
        outage_every_s=outage_every(seconds),
        outage_s=OUTAGE_FOR,
        every_nth_post_fails=FAIL_EVERY,
        window_s=window,
        sink_answers=dict(sink.kinds()),
        rss_mib_end=round((rss_end or 0) / 1024, 1),
        windows=series,
    )
    return entry


def check_stability(entry: dict[str, Any]) -> None:
    series = entry["windows"]
    assert len(series) >= 4, series
    # The first window is warm-up (imports, first allocations); compare the second with the last.
    early, late = series[1], series[-1]
    assert max(w["rss_mib_max"] for w in series) < RSS_LIMIT_MIB, series
    assert late["rss_mib_median"] <= early["rss_mib_median"] * 1.25 + 16, (early, late)
    latencies = [w["publish_latency_ms_mean"] for w in series[1:] if w["publish_latency_ms_mean"]]
    assert latencies, series
    assert latencies[-1] <= 3 * latencies[0] + 20, latencies
    # Half capacity: the backlog drains between outages instead of piling up.
    assert late["backlog_max"] <= max(w["backlog_max"] for w in series[:-1]) * 1.5 + RATE, series


@pytest.mark.slow
async def test_capacity(tmp_path: Path, nursery: trio.Nursery) -> None:
    """What the same setup sustains closed-loop (the loadgen adds as fast as exports keep up),
    so that the soak's rate can be put in proportion."""
    events = 300_000
    sink = ScriptedSink()
    with trio.fail_after(600):
        port = await nursery.start(sink.run)
        url = f"http://127.0.0.1:{port}/v1/events"
        async with agent_process("agent", tmp_path, "--export-addr", url) as agent:
            ids = tmp_path / "loadgen.ids"
            start = trio.current_time()
            argv = loadgen_args(
                agent.target, events, ids, *RECORDER, "--max-queued-events", "20000"
            )
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                await loadgen.wait(within=500)
            run = loadgen_result(loadgen, ids)
            counters = await wait_settled(agent, within=120)
            elapsed = trio.current_time() - start
            await agent.stop()
    record_result(
        "soak",
        "capacity",
        {
            "recorded_events": events,
            "merged_events_delivered": counters.published,
            "seconds": round(elapsed, 2),
            "recorded_events_per_s": round(events / elapsed),
            "merged_events_per_s": round(counters.published / elapsed),
            "loadgen_dropped": run.dropped,
        },
    )
    assert run.dropped == 0
    assert counters.published == len(sink.ids)


async def test_soak_short(tmp_path: Path, nursery: trio.Nursery) -> None:
    seconds = 15.0
    with trio.fail_after(seconds * 3 + 180):
        entry = await soak(tmp_path, nursery, seconds)
    record_result("soak", f"{seconds:g}s", entry)
    check_stability(entry)


@pytest.mark.slow
async def test_soak(tmp_path: Path, nursery: trio.Nursery) -> None:
    with trio.fail_after(SECONDS * 3 + 300):
        entry = await soak(tmp_path, nursery, SECONDS)
    record_result("soak", f"{SECONDS:g}s", entry)
    check_stability(entry)
