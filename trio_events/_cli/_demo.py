"""``trio-events demo``: the whole pipeline once, as separate processes on free local ports.

    collector  <-- HTTP POST --  agent  <-- gRPC AddEvents --  loadgen x N (recorders)
    (SQLite)                  (buffer, publisher)

Each piece is the real command (``python -m trio_events collect|agent|loadgen``) in its own
process, supervised from one trio nursery: if any of them fails, the others are stopped and the
demo says which one and why. Progress comes from the agent's /metrics endpoint; the summary at
the end comes from the collector's store.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, final

import httpx
import trio

from trio_events.store._history_server import DEFAULT_PORT
from trio_events.store._query import counts, failed_tasks, format_timeline, timeline

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence

_LISTEN = re.compile(r"(?:Listening on http://|AddEvents on |metrics on http://)[^:\s]+:(\d+)")
_STARTUP_TIMEOUT = 30.0


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


@final
class _Child:
    """One supervised process whose stdout lines we read (and keep, for error messages)."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._new_line = trio.Event()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self.lines.append(raw.decode(errors="replace"))
            self._new_line.set()
            self._new_line = trio.Event()
        if pending:
            self.lines.append(pending.decode(errors="replace"))
        self._new_line.set()

    async def wait_for_ports(self, count: int) -> list[int]:
        with trio.move_on_after(_STARTUP_TIMEOUT):
            while True:
                ports = [int(m.group(1)) for line in self.lines if (m := _LISTEN.search(line))]
                if len(ports) >= count:
                    return ports[:count]
                if self.process.returncode is not None:
                    break
                await self._new_line.wait()
        raise DemoError(f"{self.name} did not start: {self.tail()}")

    def tail(self) -> str:
        return " | ".join(self.lines[-5:]) or f"exit status {self.process.returncode}"

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)


async def _spawn(nursery: trio.Nursery, name: str, args: Sequence[str]) -> _Child:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_events", "--log-level", "WARNING", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    child = _Child(name, process)
    nursery.start_soon(child.pump)
    return child


async def _finish(child: _Child, grace: float) -> None:
    child.stop()
    with trio.move_on_after(grace):
        await child.process.wait()
        return
    child.process.kill()
    await child.process.wait()
    raise DemoError(f"{child.name} did not stop within {grace:.0f} s after SIGTERM.")


async def _progress(metrics_port: int, expected: int, started: float) -> None:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    tty = sys.stdout.isatty()
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            await trio.sleep(0.5)
            try:
                text = (await client.get(url)).text
            except httpx.HTTPError:
                continue  # the agent may be between start and serving; the next poll will tell
            received = _metric(text, "ray_aggregator_agent_events_received_total")
            published = _metric(text, "ray_aggregator_agent_published_events_total")
            line = (
                f"  {time.monotonic() - started:5.1f} s  agent received {received:,.0f} "
                f"merged events (of {expected:,} recorded)  published {published:,.0f}"
            )
            print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _summary_value(lines: list[str], key: str) -> int:
    for line in reversed(lines):
        if (m := re.search(rf"\b{key}=(\d+)", line)) is not None:
            return int(m.group(1))
    raise DemoError(f"no {key}= in the output: {' | '.join(lines[-3:])}")


def _fresh_store_path(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("demo-events.db*"):
        stale.unlink()
    return workdir / "demo-events.db"


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return trio.run(run_demo, args)


async def run_demo(args: argparse.Namespace) -> int:
    db = _fresh_store_path(Path(args.workdir))
    try:
        return await _run(args, db)
    except DemoError as exc:
        print(f"\ntrio-events demo: failed: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, db: Path) -> int:
    started = time.monotonic()
    expected = args.workloads * args.events
    print(
        f"trio-events demo: collector + agent + {args.workloads} recorder processes, "
        f"{expected:,} events"
    )
    async with trio.open_nursery() as nursery:
        children: list[_Child] = []
        try:
            collector = await _spawn(
                nursery, "collector", ["collect", "--listen", "127.0.0.1:0", "--db", str(db)]
            )
            children.append(collector)
            (collect_port,) = await collector.wait_for_ports(1)
            print(f"  collector  http://127.0.0.1:{collect_port}/v1/events -> {db}")
            agent = await _spawn(
                nursery,
                "agent",
                [
                    "agent",
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "127.0.0.1:0",
                    "--export-addr",
                    f"http://127.0.0.1:{collect_port}/v1/events",
                    "--exposable-event-types",
                    "ALL",
                ],
            )
            children.append(agent)
            grpc_port, metrics_port = await agent.wait_for_ports(2)
            print(
                f"  agent      gRPC 127.0.0.1:{grpc_port}, metrics http://127.0.0.1:{metrics_port}/metrics"
            )
            loadgens = []
            for i in range(args.workloads):
                loadgen = await _spawn(
                    nursery,
                    f"loadgen #{i + 1}",
                    [
                        "loadgen",
                        "--target",
                        f"127.0.0.1:{grpc_port}",
                        "--events",
                        str(args.events),
                        "--kind",
                        "mixed",
                        "--seed",
                        str(i + 1),
                        "--batch-interval",
                        "0.2",
                    ],
                )
                children.append(loadgen)
                loadgens.append(loadgen)
            print(f"  {args.workloads} loadgen processes recording mixed events (some tasks fail)")
            progress = trio.CancelScope()

            async def show_progress() -> None:
                with progress:
                    await _progress(metrics_port, expected, started)

            nursery.start_soon(show_progress)
            for loadgen in loadgens:
                await loadgen.process.wait()
                if loadgen.process.returncode != 0:
                    raise DemoError(f"{loadgen.name} failed: {loadgen.tail()}")
            progress.cancel()
            recorded_drops = sum(_summary_value(g.lines, "dropped") for g in loadgens)
            recorded = sum(_summary_value(g.lines, "exported") for g in loadgens)
            await _finish(agent, 30.0)  # SIGTERM: stop accepting, drain to the collector
            delivered = _summary_value(agent.lines, "delivered")
            # The progress above stopped with the recorders; the drain may have published more.
            line = (
                f"  {time.monotonic() - started:5.1f} s  agent stopped after draining: "
                f"published {delivered:,} merged events"
            )
            tty = sys.stdout.isatty()  # like the progress lines: rewrite the last one
            print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", flush=True)
            agent_dropped = _summary_value(agent.lines, "dropped")
            abandoned = _summary_value(agent.lines, "abandoned")
            await _finish(collector, 10.0)
        finally:
            for child in children:
                child.stop()
    elapsed = time.monotonic() - started
    _print_summary(db, recorded, delivered, recorded_drops + agent_dropped + abandoned, elapsed)
    return 0 if recorded_drops + agent_dropped + abandoned == 0 else 1


def _print_summary(db: Path, recorded: int, delivered: int, drops: int, elapsed: float) -> None:
    result = counts(db)
    print("\n\nEvents in the collector's store, by type:")
    for row in result.by_event_type:
        print(f"  {row.key:<32} {row.count:>7,}")
    print(f"  {'total':<32} {result.total:>7,}")
    failures = failed_tasks(db, limit=1)
    if failures:
        sample = failures[0]
        print(f"\nA failed task's timeline, merged from its partial events ({sample.error_type}):")
        print(format_timeline(timeline(db, "task", sample.task_id, sample.attempt)))
    print(
        f"\nrecorded={recorded:,} events, merged into {delivered:,} exported events, "
        f"stored={result.total:,}, drops={drops}, elapsed={elapsed:.1f} s, "
        f"throughput={recorded / elapsed:,.0f} recorded events/s end to end"
    )
    print(f"Explore it: trio-events query --db {db} failed")
    print(
        f"See what happened: trio-events history --db {db}  "
        f"(then open http://127.0.0.1:{DEFAULT_PORT}/ or run "
        f"`ray list tasks --address http://127.0.0.1:{DEFAULT_PORT}`)"
    )
