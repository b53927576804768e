"""End to end against Ray 2.60's own aggregator, in the same run, with three kinds of receiver.

One measurement (:func:`measure`): a receiver process, an agent process (ours, ``python -m
trio_events agent``, or Ray's, :mod:`benchmarks.ray_agent`), and Ray's client shape from
:mod:`benchmarks.ingest_client` (grpcio, requests of 1,000 merged realistic events, 4 in
flight) sending ``events`` events. Measured: events delivered per second, from the client's
first request to the receiver's last POST, and the CPU time of the agent's whole process tree (ours
with its conversion workers) over the same interval, from ``/proc``.

Receivers: ``instant`` (:mod:`benchmarks.sink`, answers at once in one send), ``40ms`` (the
same, answering after 40 ms) and ``plain`` (:mod:`benchmarks.plain_receiver`, Python's
``http.server``, whose two sends per answer cost ~40 ms of Nagle + delayed ACK).

Figures: the ratio ours/Ray per receiver, events per CPU-second of ours/Ray, and sweeps of our
throughput against ``--workers`` and (when the agent has the flag) ``--max-in-flight``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    PYTHON,
    ROOT,
    AgentProcess,
    Child,
    Figure,
    SinkProcess,
    http,
    load_average,
    module,
    wait_until,
)

Details = dict[str, Any]
RECEIVERS = ("instant", "40ms", "plain")
_TICK = os.sysconf("SC_CLK_TCK")


# --- CPU of a process tree --------------------------------------------------------------------


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and its reaped children) for every process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        out[int(entry.name)] = (int(fields[1]), ticks / _TICK)
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live descendant (and reaped children)."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            total += stats[pid][1]
        pending += children.get(pid, [])
    return total


# --- processes --------------------------------------------------------------------------------


class PlainReceiverProcess(Child):
    def __init__(self, logs: Path) -> None:
        super().__init__("plain-receiver", module("benchmarks.plain_receiver"), logs)
        match, _ = self.expect(r"plain-receiver: listening on (\d+)")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}/events"

    def control(self, action: str) -> dict[str, Any]:
        import json

        method = "GET" if action == "stats" else "POST"
        result: dict[str, Any] = json.loads(http(f"http://127.0.0.1:{self.port}/_{action}", method))
        return result


class RayAgentProcess(Child):
    def __init__(self, logs: Path, export_url: str) -> None:
        argv = module("benchmarks.ray_agent", "--export-url", export_url)
        super().__init__("ray-agent", argv, logs)
        match, _ = self.expect(r"ray-agent: listening on (\d+)", timeout=120)
        self.target = f"127.0.0.1:{match.group(1)}"


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def agent_has_flag(flag: str) -> bool:
    """Whether ``trio-events agent`` accepts ``flag`` (the in-flight window may not exist)."""
    help_text = subprocess.run(
        [PYTHON, "-m", "trio_events", "agent", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return flag in help_text


def _receiver(kind: str, logs: Path) -> SinkProcess | PlainReceiverProcess:
    if kind == "plain":
        return PlainReceiverProcess(logs)
    return SinkProcess(logs, latency_ms=40.0 if kind == "40ms" else 0.0)


def _send(target: str, events: int, logs: Path, name: str) -> int:
    """Send ``events`` with Ray's client shape; when the first was sent (monotonic ns)."""
    argv = module(
        "benchmarks.ingest_client", "--target", target, "flat", "--total", str(events),
        "--streams", "4", "--batch", "1000",
    )  # fmt: skip
    start_ns: int = Child(name, argv, logs).last_json()["start_ns"]
    return start_ns


def measure(
    logs: Path,
    receiver_kind: str,
    agent_kind: str,
    events: int,
    *,
    workers: int | None = None,
    max_in_flight: int | None = None,
) -> Details:
    """One run; see the module docstring. ``agent_kind`` is ``"ours"`` or ``"ray"``."""
    warm = 5_000
    with _receiver(receiver_kind, logs) as receiver:
        if agent_kind == "ray":
            agent: Child = RayAgentProcess(logs, receiver.url)
            target = agent.target  # type: ignore[attr-defined]
        else:
            extra = ["--workers", str(workers or 1)]
            if max_in_flight is not None:
                extra += ["--max-in-flight", str(max_in_flight)]
            agent = AgentProcess(logs, receiver.url, *extra)
            target = agent.target  # type: ignore[attr-defined]
        with agent:
            time.sleep(1.5)  # our conversion workers start after the agent is ready
            _send(target, warm, logs, f"warm-{agent_kind}")
            wait_until(lambda: receiver.control("stats")["events"] >= warm, 120, "the warm-up")
            receiver.control("reset")
            load = load_average()[0]
            cpu0 = tree_cpu(agent.pid)
            t0 = _send(target, events, logs, f"client-{agent_kind}")
            wait_until(
                lambda: receiver.control("stats")["events"] >= events,
                600,
                f"the receiver to get {events} events from {agent_kind}",
                poll=0.02,
            )
            stats = receiver.control("stats")
            cpu = tree_cpu(agent.pid) - cpu0
    seconds = (stats["last_ns"] - t0) / 1e9
    return {
        "agent": agent_kind,
        "receiver": receiver_kind,
        "workers": workers,
        "max_in_flight": max_in_flight,
        "events": stats["events"],
        "seconds": seconds,
        "events_per_s": stats["events"] / seconds,
        "cpu_s": cpu,
        "events_per_cpu_s": stats["events"] / cpu if cpu else None,
        "posts": stats["posts"],
        "bytes_per_event": stats["bytes"] / max(stats["events"], 1),
        "load": load,
    }


# --- the benchmarks ---------------------------------------------------------------------------


def peer(ctx: Any) -> tuple[list[Figure], Details]:
    if not ray_available():
        raise RuntimeError("Ray 2.60 is not installed here; `nox -s bench` installs it")
    events = ctx.size(50_000, 3_000)
    workers = len(os.sched_getaffinity(0))
    ratio = {
        kind: Figure(
            f"peer_ratio_{kind}",
            f"end to end vs Ray 2.60's AggregatorAgent, {kind} receiver (ours / Ray)",
            "x",
            ">= 10" if kind != "plain" else ">= 0",
            notes=f"same client (grpcio, requests of 1,000, 4 in flight), {events:,} events, "
            f"same receiver, back to back; ours with --workers {workers}",
        )
        for kind in RECEIVERS
    }
    rates = {
        (agent, kind): Figure(
            f"peer_{agent}_{kind}",
            f"end to end, {'trio-events' if agent == 'ours' else 'Ray 2.60'} agent, {kind} "
            "receiver",
            "events/s",
            ">= 0",
        )
        for agent in ("ours", "ray")
        for kind in RECEIVERS
    }
    cpu_ratio = Figure(
        "peer_cpu_ratio",
        "events per CPU-second of all agent processes, ours / Ray's (instant receiver)",
        "x",
        ">= 12",
        notes="CPU of the agent's process tree (ours: with its conversion workers) from /proc",
    )
    per_cpu = {
        agent: Figure(
            f"peer_{agent}_per_cpu",
            f"events per CPU-second, {'trio-events' if agent == 'ours' else 'Ray 2.60'} agent",
            "events/s",
            ">= 0",
        )
        for agent in ("ours", "ray")
    }
    details: Details = {"events": events, "workers": workers, "runs": []}
    for _ in range(ctx.runs):
        for kind in RECEIVERS:
            ours = measure(ctx.logs, kind, "ours", events, workers=workers)
            ray = measure(ctx.logs, kind, "ray", events)
            details["runs"] += [ours, ray]
            ratio[kind].runs.append(ours["events_per_s"] / ray["events_per_s"])
            ratio[kind].load.append(ours["load"])
            for agent, result in (("ours", ours), ("ray", ray)):
                rates[agent, kind].runs.append(result["events_per_s"])
                rates[agent, kind].load.append(result["load"])
            if kind == "instant":
                cpu_ratio.runs.append(ours["events_per_cpu_s"] / ray["events_per_cpu_s"])
                cpu_ratio.load.append(ours["load"])
                for agent, result in (("ours", ours), ("ray", ray)):
                    per_cpu[agent].runs.append(result["events_per_cpu_s"])
                    per_cpu[agent].load.append(result["load"])
    figures = [*ratio.values(), cpu_ratio, *rates.values(), *per_cpu.values()]
    return figures, details


def workers_sweep(ctx: Any) -> tuple[list[Figure], Details]:
    """Our throughput against --workers, instant receiver (and the in-flight window if any)."""
    events = ctx.size(50_000, 3_000)
    counts = (1, 2) if ctx.quick else (1, 2, 3, 4)
    details: Details = {"events": events, "workers": {}, "in_flight": {}, "notes": []}
    figures = []
    for count in counts:
        figure = Figure(
            f"workers_{count}",
            f"end to end, trio-events --workers {count}, instant receiver",
            "events/s",
            ">= 0",
        )
        runs = []
        for _ in range(ctx.runs):
            result = measure(ctx.logs, "instant", "ours", events, workers=count)
            figure.runs.append(result["events_per_s"])
            figure.load.append(result["load"])
            runs.append(result)
        details["workers"][str(count)] = runs
        figures.append(figure)
    if agent_has_flag("--max-in-flight"):
        workers = len(os.sched_getaffinity(0))
        for window in (1, 2, 4, 8):
            runs = [
                measure(ctx.logs, "40ms", "ours", events, workers=workers, max_in_flight=window)
                for _ in range(ctx.runs)
            ]
            details["in_flight"][str(window)] = runs
    else:
        details["notes"].append(
            "this agent has no --max-in-flight yet (the delivery branch adds it): no in-flight "
            "sweep"
        )
    return figures, details


def plots(details: dict[str, Any], out: Path) -> list[str]:
    """Throughput against worker processes, and against requests in flight (when measured)."""
    sweep = details.get("workers")
    if not sweep:
        return []
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for key, xlabel, title, name in (
        ("workers", "--workers (JSON conversion processes)", "instant receiver", "workers"),
        ("in_flight", "--max-in-flight (POSTs in flight)", "receiver answering in 40 ms", "flight"),
    ):
        data = sweep.get(key) or {}
        if not data:
            continue
        xs = sorted(int(k) for k in data)
        ys = [statistics.median(r["events_per_s"] for r in data[str(x)]) for x in xs]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(xs, ys, marker="o", label="trio-events")
        ray = [
            r["events_per_s"]
            for r in details.get("peer", {}).get("runs", [])
            if r["agent"] == "ray" and r["receiver"] == ("instant" if key == "workers" else "40ms")
        ]
        if ray:
            ax.axhline(statistics.median(ray), color="grey", linestyle="--", label="Ray 2.60 agent")
        ax.set_xticks(xs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("events/s delivered")
        ax.set_title(f"End to end, {title}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        filename = f"throughput_vs_{name}.png"
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
        names.append(filename)
    return names
