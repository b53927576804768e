"""Plumbing of the benchmark harness: child processes, the sink and agent, figures, reports."""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Self

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# --- the machine ------------------------------------------------------------------------------


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the report: per-run values, their median/min/max, and the target."""

    name: str
    label: str
    unit: str
    target: str  # e.g. ">= 70000"
    runs: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # 1-minute load average during the runs
    notes: str = ""
    ok: bool = True  # False when a run broke an invariant (drops, missing events)

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    def meets_target(self) -> bool | None:
        median = self.median
        if median is None or not self.ok:
            return None if median is None else False
        op, _, number = self.target.partition(" ")
        limit = float(number)
        return {"<=": median <= limit, ">=": median >= limit, "<": median < limit}[op]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median=self.median,
            min=min(self.runs) if self.runs else None,
            max=max(self.runs) if self.runs else None,
            meets_target=self.meets_target(),
        )
        return data


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("events/s",):
        return f"{value:,.0f}"
    if unit in ("x",):
        return f"{value:.1f}"
    if unit == "us":
        return f"{value:.2f}"
    if unit in ("ms", "s"):
        return f"{value:.3g}" if unit == "s" else f"{value:.1f}"
    if unit == "bytes/event":
        return f"{value:.0f}"
    return f"{value:.3g}"


def table(figures: list[Figure]) -> str:
    rows = [
        "| figure | median | min | max | unit | target | met | runs | load (1 min) |",
        "|---|---:|---:|---:|---|---|---|---:|---|",
    ]
    for f in figures:
        met = {True: "yes", False: "**no**", None: "-"}[f.meets_target()]
        load = f"{min(f.load):.1f}-{max(f.load):.1f}" if f.load else "-"
        d = f.as_dict()
        rows.append(
            f"| {f.label} | {fmt(d['median'], f.unit)} | {fmt(d['min'], f.unit)} | "
            f"{fmt(d['max'], f.unit)} | {f.unit} | {f.target} | {met} | {len(f.runs)} | {load} |"
        )
    return "\n".join(rows)


# --- child processes --------------------------------------------------------------------------


class Child:
    """A child process whose stdout lines are collected by a thread; stderr goes to a log."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._log: IO[str] = open(logs / f"{name}.log", "a")  # noqa: SIM115
        self._log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n")
        self._log.flush()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put((time.monotonic(), line.rstrip("\n")))
        self._queue.put((time.monotonic(), None))

    def expect(self, pattern: str, timeout: float = 60.0) -> tuple[re.Match[str], float]:
        """Wait for a stdout line matching ``pattern``; the match and when the line arrived."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no line matching {pattern!r} in {timeout} s")
            try:
                when, line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.wait()}) before printing {pattern!r}; "
                    f"see its log"
                )
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match, when

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def last_json(self, timeout: float = 600.0) -> Any:
        """Wait for the process to end; its last stdout line, parsed as JSON."""
        self.proc.wait(timeout)
        self._reader.join(10)
        while not self._queue.empty():
            _, line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        self._close()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} failed with exit code {self.proc.returncode}")
        return json.loads(self.lines[-1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        while not self._queue.empty():
            _, line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http(url: str, method: str = "GET", timeout: float = 10.0) -> bytes:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


class SinkProcess(Child):
    def __init__(self, logs: Path, *, track_ids: bool = False, latency_ms: float = 0.0) -> None:
        argv = [PYTHON, "-m", "benchmarks.sink"] + (["--track-ids"] if track_ids else [])
        if latency_ms:
            argv += ["--latency-ms", str(latency_ms)]
        super().__init__("sink", argv, logs)
        match, _ = self.expect(r"sink: listening on (\d+)")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}/events"

    def control(self, action: str) -> dict[str, Any]:
        method = "GET" if action in ("stats", "latency") else "POST"
        result: dict[str, Any] = json.loads(http(f"http://127.0.0.1:{self.port}/_{action}", method))
        return result

    def latency(self) -> list[Any]:
        result: list[Any] = json.loads(http(f"http://127.0.0.1:{self.port}/_latency"))
        return result


class AgentProcess(Child):
    """``python -m trio_events agent`` with an HTTP destination and the metrics endpoint."""

    def __init__(self, logs: Path, export_url: str, *extra: str, name: str = "agent") -> None:
        # For experiments: run the agent through a wrapper script that patches something in
        # process and then calls trio_events._cli._main.main (docs/performance.md, "Proposals").
        wrapper = os.environ.get("TRIO_EVENTS_BENCH_AGENT_WRAPPER")
        launcher = [PYTHON, wrapper] if wrapper else [PYTHON, "-m", "trio_events"]
        argv = [
            *launcher,
            "--log-level",
            "WARNING",
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--export-addr",
            export_url,
            "--metrics-listen",
            "127.0.0.1:0",
            *extra,
        ]
        super().__init__(name, argv, logs)
        match, self.ready_at = self.expect(r"gRPC AddEvents on [\d.]+:(\d+)")
        self.target = f"127.0.0.1:{match.group(1)}"
        match, _ = self.expect(r"metrics on http://[\d.]+:(\d+)/metrics")
        self.metrics_url = f"http://127.0.0.1:{match.group(1)}/metrics"

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for line in http(self.metrics_url).decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def metric(self, prefix: str) -> float:
        """The sum of every sample whose name (with labels) starts with ``prefix``."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def shutdown(self, timeout: float = 60.0) -> tuple[dict[str, int], float]:
        """SIGTERM; the summary (delivered/dropped/abandoned) and the seconds until exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        match, _ = self.expect(
            r"stopped: delivered=(\d+) dropped=(\d+) abandoned=(\d+)", timeout=timeout
        )
        self.proc.wait(timeout)
        elapsed = time.monotonic() - start
        self.stop()
        delivered, dropped, abandoned = (int(x) for x in match.groups())
        return {"delivered": delivered, "dropped": dropped, "abandoned": abandoned}, elapsed


def module(name: str, *args: str) -> list[str]:
    return [PYTHON, "-m", name, *args]


def wait_until(condition: Any, timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
