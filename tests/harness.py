"""Real ``trio-events`` processes on 127.0.0.1 for the fault, fuzz and soak suites.

Everything here waits for conditions (a line in a process's output, a value in the agent's
``/metrics``) under an explicit deadline, and every process started is killed on the way out,
whatever happened. Results meant for ``docs/reliability.md`` are merged into JSON files under
``$TRIO_EVENTS_RESULTS_DIR`` (default ``bench-results/``), one entry per scenario.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
POLL = 0.02  # seconds between checks of a condition (never a synchronisation by itself)
_ENV_PREFIXES = ("RAY_", "TRIO_EVENTS_", "AGENT_GRPC_")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any setting the CLI would read, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_events", *args]


# --- processes under trio ------------------------------------------------------------------


@attrs.define
class Proc:
    """A running ``trio-events`` process whose stdout and stderr go to files."""

    name: str
    process: trio.Process
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}, exit {self.returncode})\n--- stdout:\n"
            f"{self.stdout()[-3000:]}\n--- stderr:\n{self.stderr()[-3000:]}"
        )

    async def wait_for(self, pattern: str, *, within: float, stream: str = "out") -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails if the process exits first."""
        regex = re.compile(pattern, re.MULTILINE)
        read = self.stdout if stream == "out" else self.stderr
        with trio.move_on_after(within):
            while True:
                found = regex.search(read())
                if found is not None:
                    return found
                if self.returncode is not None:
                    found = regex.search(read())  # written just before it exited
                    if found is not None:
                        return found
                    raise AssertionError(f"{pattern!r} never appeared: {self.describe()}")
                await trio.sleep(POLL)
        raise AssertionError(f"{pattern!r} did not appear within {within} s: {self.describe()}")

    def send(self, signum: int) -> None:
        if self.returncode is None:
            self.process.send_signal(signum)

    async def wait(self, *, within: float) -> int:
        with trio.fail_after(within):
            return await self.process.wait()

    async def stop(self, *, within: float = 30.0) -> int:
        """SIGTERM (the ordered shutdown), then the exit status, within ``within`` seconds."""
        self.send(signal.SIGTERM)
        try:
            return await self.wait(within=within)
        except trio.TooSlowError:
            raise AssertionError(f"did not stop within {within} s: {self.describe()}") from None


@asynccontextmanager
async def spawn(
    name: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Proc]:
    """Run ``python -m trio_events ARGS`` in ``cwd``; it is killed on exit if still running."""
    out, err = cwd / f"{name}.out", cwd / f"{name}.err"
    with out.open("wb") as fout, err.open("wb") as ferr:
        process = await trio.lowlevel.open_process(
            command(*args), stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL, cwd=cwd,
            env=env if env is not None else clean_env(),
        )  # fmt: skip
    proc = Proc(name, process, out, err)
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.kill()
                with trio.move_on_after(10):
                    await process.wait()


# --- the agent, its metrics and its final line ----------------------------------------------

AGENT_BASE_ARGS = (
    "--metrics-listen", "127.0.0.1:0",
    "--exposable-event-types", "ALL",
    "--initial-backoff", "0.05",
    "--max-backoff", "0.5",
    "--linger", "0.05",
)  # fmt: skip
_GRPC_LINE = r"gRPC AddEvents on 127\.0\.0\.1:(\d+)"
_METRICS_LINE = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"
_FINAL_LINE = r"trio-events agent: stopped: delivered=(\d+) dropped=(\d+) abandoned=(\d+)"


@attrs.frozen
class FinalLine:
    delivered: int
    dropped: int
    abandoned: int


@attrs.define
class Agent:
    proc: Proc
    grpc_port: int
    metrics_port: int
    resumed: int = 0  # events a spooling agent found in its spool at start

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    async def stop(self, *, within: float = 30.0) -> FinalLine:
        """The ordered shutdown; returns its ``delivered= dropped= abandoned=`` line."""
        code = await self.proc.stop(within=within)
        assert code == 0, self.proc.describe()
        found = re.search(_FINAL_LINE, self.proc.stdout())
        assert found is not None, self.proc.describe()
        return FinalLine(*(int(g) for g in found.groups()))


@asynccontextmanager
async def agent_process(
    name: str, cwd: Path, *args: str, port: int = 0, within: float = 30.0
) -> AsyncIterator[Agent]:
    """``trio-events agent`` on 127.0.0.1 (``port`` 0: any), ready when its ports are printed."""
    argv = ("agent", "--listen", f"127.0.0.1:{port}", *AGENT_BASE_ARGS, *args)
    async with spawn(name, *argv, cwd=cwd) as proc:
        grpc = await proc.wait_for(_GRPC_LINE, within=within)
        metrics = await proc.wait_for(_METRICS_LINE, within=within)
        spool = re.search(r"resumed with (\d+) events", proc.stdout())
        resumed = int(spool.group(1)) if spool else 0
        yield Agent(proc, int(grpc.group(1)), int(metrics.group(1)), resumed)


@asynccontextmanager
async def collector_process(
    name: str, cwd: Path, db: Path, *, port: int = 0, within: float = 30.0
) -> AsyncIterator[tuple[Proc, int]]:
    """``trio-events collect`` on 127.0.0.1; yields the process and its port."""
    argv = ("collect", "--listen", f"127.0.0.1:{port}", "--db", str(db))
    async with spawn(name, *argv, cwd=cwd) as proc:
        found = await proc.wait_for(r"Listening on http://127\.0\.0\.1:(\d+)/", within=within)
        yield proc, int(found.group(1))


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text as ``{sample name: [(labels, value), ...]}``."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


@attrs.frozen
class AgentCounters:
    """The agent's event accounting, from one scrape of ``/metrics`` (one publisher assumed)."""

    received: int
    rejected: int
    published: int
    filtered: int
    dropped: dict[str, int]  # trio_events_publisher_dropped_events_total by reason
    evicted: int  # ray_aggregator_agent_queue_dropped_events_total, all event types
    unread: int
    consecutive_failures: int
    invalid: dict[str, int]
    latency_sum: float
    latency_count: int
    resumed: int = 0  # events taken over from a spool at start (not in ``received``)
    # Received but refused UNAVAILABLE (Ray's meaning: received = acknowledged + these).
    add_failures: int = 0

    @property
    def in_flight(self) -> int:
        """Taken from the buffer and not yet delivered, filtered or dropped."""
        done = self.published + self.filtered + sum(self.dropped.values())
        buffered = self.received - self.add_failures + self.resumed
        return buffered - self.evicted - self.unread - done

    @property
    def held(self) -> int:
        """Events this agent acknowledged and has neither delivered nor counted as dropped."""
        return self.unread + self.in_flight

    @classmethod
    def parse(cls, text: str) -> AgentCounters:
        s = samples(text)

        def total(name: str, **labels: str) -> float:
            return sum(
                v for lab, v in s.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
            )

        def by(name: str, label: str) -> dict[str, int]:
            out: Counter[str] = Counter()
            for lab, v in s.get(name, []):
                out[lab[label]] += int(v)
            return {k: v for k, v in out.items() if v}

        return cls(
            received=int(total("ray_aggregator_agent_events_received_total")),
            rejected=int(total("trio_events_agent_rejected_events_total")),
            add_failures=int(total("ray_aggregator_agent_events_buffer_add_failures_total")),
            published=int(total("ray_aggregator_agent_published_events_total")),
            filtered=int(total("ray_aggregator_agent_filtered_events_total")),
            dropped=by("trio_events_publisher_dropped_events_total", "reason"),
            evicted=int(total("ray_aggregator_agent_queue_dropped_events_total")),
            unread=int(total("trio_events_buffer_unread_events")),
            consecutive_failures=int(
                total("ray_aggregator_agent_consecutive_failures_since_last_success")
            ),
            invalid=by("trio_events_agent_invalid_requests_total", "reason"),
            latency_sum=total(
                "ray_aggregator_agent_publish_latency_seconds_sum", Outcome="success"
            ),
            latency_count=int(
                total("ray_aggregator_agent_publish_latency_seconds_count", Outcome="success")
            ),
        )


async def scrape(port: int) -> AgentCounters:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return AgentCounters.parse(response.text)


async def wait_metrics(
    agent: Agent, predicate: Callable[[AgentCounters], bool], *, within: float, what: str
) -> AgentCounters:
    """Scrape until ``predicate`` holds; fails after ``within`` seconds saying ``what`` was awaited."""
    last: AgentCounters | None = None
    with trio.move_on_after(within):
        while True:
            if agent.proc.returncode is not None:
                raise AssertionError(
                    f"the agent exited waiting for {what}: {agent.proc.describe()}"
                )
            last = attrs.evolve(await scrape(agent.metrics_port), resumed=agent.resumed)
            if predicate(last):
                return last
            await trio.sleep(POLL * 5)
    raise AssertionError(f"no {what} within {within} s; last /metrics: {last}")


async def wait_settled(agent: Agent, *, within: float) -> AgentCounters:
    """Wait until the agent holds nothing: every event received is delivered or counted."""
    return await wait_metrics(
        agent, lambda c: c.unread == 0 and c.in_flight == 0, within=within, what="settled agent"
    )


# --- the load generator ----------------------------------------------------------------------

_SUMMARY = re.compile(
    r"^loadgen: events=(\d+) exported=(\d+) dropped=(\d+) failures=(\d+) elapsed_s=([\d.]+)",
    re.MULTILINE,
)
_DROP_LOG = re.compile(r"dropped events: reason=(\w+) events=(\d+)")


@attrs.frozen
class LoadgenResult:
    events: int
    exported: int
    dropped: int
    failures: int
    elapsed: float
    dropped_by_reason: dict[str, int]
    acked_ids: list[str]


def loadgen_args(target: str, events: int, ids: Path, *extra: str) -> tuple[str, ...]:
    return ("loadgen", "--target", target, "--events", str(events), "--ids-out", str(ids), *extra)


def loadgen_result(proc: Proc, ids: Path) -> LoadgenResult:
    """Parse a finished loadgen: its summary, its logged drop reasons, its acknowledged ids."""
    assert proc.returncode in (0, 1), proc.describe()  # 1: some events were dropped
    found = _SUMMARY.search(proc.stdout())
    assert found is not None, proc.describe()
    reasons: Counter[str] = Counter()
    for reason, n in _DROP_LOG.findall(proc.stderr()):
        reasons[reason] += int(n)
    events, exported, dropped, failures = (int(g) for g in found.groups()[:4])
    acked = ids.read_text().split()
    return LoadgenResult(
        events, exported, dropped, failures, float(found.group(5)), dict(reasons), acked
    )


# --- what arrived ---------------------------------------------------------------------------


def id_hex(event_id: str) -> str:
    """An eventId as JSON carries it (base64) in the hex the loadgen writes."""
    return base64.b64decode(event_id).hex()


def collector_ids(db: Path) -> set[str]:
    """The ids a collector stored (run it to completion first)."""
    with _read_only(db) as conn:
        return {bytes(row[0]).hex() for row in conn.execute("SELECT event_id FROM events")}


@contextmanager
def _read_only(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


# --- accounting and results -----------------------------------------------------------------


def ledger(
    loadgens: Iterable[LoadgenResult],
    arrived: Iterable[str],
    agent_drops: dict[str, int],
    **notes: Any,
) -> dict[str, Any]:
    """Every generated event: delivered, or dropped with a counted reason; else unaccounted.

    Recorded events either reach the agent (``exported``, merged into the acknowledged ids) or
    are dropped by the recorder with a logged reason. Each acknowledged id either arrived at the
    sink or is covered by an agent-side count (``agent_drops``). ``unaccounted`` is what no
    count covers; ``overcounted`` is what was counted as dropped but arrived anyway (a sink that
    stored a batch whose answer was lost), which is not a loss.
    """
    runs = list(loadgens)
    acked_list = [i for run in runs for i in run.acked_ids]
    acked = set(acked_list)
    arrived_set = set(arrived)
    recorder_drops: Counter[str] = Counter()
    for run in runs:
        recorder_drops.update(run.dropped_by_reason)
    generated = sum(r.events for r in runs)
    exported = sum(r.exported for r in runs)
    missing = len(acked - arrived_set)
    counted = sum(agent_drops.values())
    return {
        "generated": generated,
        "recorder_exported": exported,
        "acknowledged_ids": len(acked),
        "acknowledged_twice": len(acked_list) - len(acked),
        "delivered_ids": len(acked & arrived_set),
        "arrived_not_acknowledged": len(arrived_set - acked),
        "dropped": {
            **{f"recorder:{k}": v for k, v in sorted(recorder_drops.items())},
            **{f"agent:{k}": v for k, v in sorted(agent_drops.items()) if v},
        },
        "recorder_unaccounted": generated - exported - sum(r.dropped for r in runs),
        "recorder_drop_reasons_match_summary": sum(recorder_drops.values())
        == sum(r.dropped for r in runs),
        "missing_ids": missing,
        "unaccounted": max(0, missing - counted),
        "overcounted": max(0, counted - missing),
        **notes,
    }


def check_ledger(entry: dict[str, Any], *, exact: bool = True) -> None:
    """The invariant of design.md section 5, as numbers."""
    assert entry["recorder_unaccounted"] == 0, entry
    assert entry["recorder_drop_reasons_match_summary"], entry
    assert entry["acknowledged_twice"] == 0, entry
    assert entry["unaccounted"] == 0, entry
    if exact:
        assert entry["overcounted"] == 0, entry


def results_dir() -> Path:
    return Path(os.environ.get("TRIO_EVENTS_RESULTS_DIR", REPO / "bench-results"))


def record_result(suite: str, key: str, value: dict[str, Any]) -> Path:
    """Merge ``value`` into ``<results dir>/<suite>.json`` under ``key``."""
    path = results_dir() / f"{suite}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    value = {**value, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    data.setdefault("results", {})[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def agent_flags() -> str:
    """``trio-events agent --help`` of this build (to find optional flags such as --spool)."""
    return subprocess.run(
        command("agent", "--help"),
        capture_output=True, text=True, timeout=60, env=clean_env(), check=True,
    ).stdout  # fmt: skip


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


# --- the same, synchronously (for hypothesis tests, which run outside trio) -----------------


@attrs.define
class SyncProc:
    """A ``trio-events`` process driven from synchronous code (outputs in files)."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.popen.pid}, exit {self.popen.poll()})\n--- stdout:\n"
            f"{self.stdout()[-3000:]}\n--- stderr:\n{self.stderr()[-3000:]}"
        )

    def wait_for(self, pattern: str, *, within: float) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = regex.search(self.stdout())
            if found is not None:
                return found
            if not self.alive():
                break
            time.sleep(POLL)
        raise AssertionError(f"{pattern!r} did not appear within {within} s: {self.describe()}")

    def stop(self, *, within: float = 30.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not stop within {within} s: {self.describe()}") from None

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)


@contextmanager
def sync_spawn(name: str, *args: str, cwd: Path) -> Iterator[SyncProc]:
    """Run ``python -m trio_events ARGS`` in ``cwd``; it is killed on exit if still running."""
    out, err = cwd / f"{name}.out", cwd / f"{name}.err"
    with out.open("wb") as fout, err.open("wb") as ferr:
        popen = subprocess.Popen(
            command(*args), stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL, cwd=cwd,
            env=clean_env(),
        )  # fmt: skip
    proc = SyncProc(name, popen, out, err)
    try:
        yield proc
    finally:
        proc.kill()


def scrape_sync(port: int) -> AgentCounters:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0, trust_env=False)
    response.raise_for_status()
    return AgentCounters.parse(response.text)


#: A text log record starts with its time: RFC 3339, milliseconds, UTC (2026-01-01T00:00:00.250Z).
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", re.MULTILINE)


def tracebacks(log: str) -> Counter[str]:
    """The log records of ``log`` that carry a traceback, counted by their first line."""
    starts = [m.start() for m in _RECORD_START.finditer(log)]
    found: Counter[str] = Counter()
    for begin, end in itertools.pairwise([*starts, len(log)]):
        record = log[begin:end]
        if "Traceback (most recent call last)" in record:
            found[_RECORD_START.sub("", record.splitlines()[0])] += 1
    if "Traceback (most recent call last)" in log[: starts[0] if starts else len(log)]:
        found["(outside any log record)"] += 1
    return found


def collector_counts(proc: Proc | SyncProc) -> tuple[int, int, int]:
    """A stopped collector's final line: (events stored, duplicates ignored, requests rejected)."""
    found = re.search(
        r"Stopped: (\d+) events stored, (\d+) duplicates ignored, (\d+) requests rejected",
        proc.stdout(),
    )
    assert found is not None, proc.describe()
    stored, duplicates, rejected = (int(g) for g in found.groups())
    return stored, duplicates, rejected
