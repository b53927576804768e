"""``trio-events history`` over a store of a million events: state API and page latency.

``python -m benchmarks.bench_history [--events N] [--sessions K] [--requests R] [--db PATH]``;
the last line on stdout is JSON.

The store holds ``N`` realistic events (the demo's workload generator) from ``K`` Ray sessions:
one big session with half of the events (the latest, which the state API answers by default)
and ``K - 1`` smaller ones, so sessions must be kept apart. It is built once and kept at
``--db`` (default ``bench-results/history-<N>.db``); a store with the right count is reused.

``trio-events history`` runs as its own process; this process is the client (keep-alive
``httpx``), sending ``R`` requests of each kind one after another after a warm-up, and reports
p50/p99/max wall time per kind:

- ``tasks_filtered``: ``/api/v0/tasks?limit=100`` with ``state=FAILED`` (what
  ``ray list tasks --filter state=FAILED`` asks);
- ``tasks_by_job``: the same with ``job_id=<the big job>`` and ``state!=FINISHED``;
- ``tasks_unfiltered``: ``/api/v0/tasks?limit=100``;
- ``page_first_load``: ``/`` (the page a person opens first) and its stylesheet;
- ``job_page``: ``/session/<s>/job/<j>?state=FAILED`` of the big job;
- ``summary``: ``/api/v0/tasks/summarize``.

The figure the issue sets: p99 < 100 ms for ``tasks_filtered`` and ``page_first_load``.
Start-up (folding every event in memory) is reported apart: it happens once per server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from trio_events._cli._workload import realistic_events
from trio_events.agent._convert import JsonConverter
from trio_events.store._sqlite import EventStore, connect_read_only

ROOT = Path(__file__).resolve().parent.parent


def build_store(path: Path, events: int, sessions: int) -> list[str]:
    """Write the store (unless one with ``events`` rows exists); returns the session names."""
    names = [f"session_2026-01-0{1 + k}_00-00-00_000000_{k}" for k in range(sessions)]
    sizes = [events // 2] + [events // 2 // max(sessions - 1, 1)] * (sessions - 1)
    sizes[0] += events - sum(sizes)
    order = [*range(1, sessions), 0]  # the big session is written last: the latest
    if path.exists():
        conn = connect_read_only(path)
        try:
            if conn.execute("SELECT count(*) FROM events").fetchone()[0] == events:
                return names
        finally:
            conn.close()
        for stale in path.parent.glob(path.name + "*"):
            stale.unlink()
    converter = JsonConverter()
    started = time.perf_counter()
    with EventStore(path) as store:
        for k in order:
            batch = []
            for event in realistic_events("mixed", sizes[k], seed=1000 + k):
                item = converter.to_dict(event.serialize())
                item["sessionName"] = names[k]
                batch.append(item)
                if len(batch) == 5_000:
                    store.insert_batch_sync(batch)
                    batch = []
            if batch:
                store.insert_batch_sync(batch)
            print(f"  session {names[k]}: {sizes[k]:,} events", file=sys.stderr, flush=True)
    print(f"store built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return names


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "n": len(ordered),
    }


def time_requests(client: httpx.Client, paths: list[str], count: int) -> dict[str, float]:
    first = time.perf_counter()  # the first ask, before anything is memoized for it
    for path in paths:
        assert client.get(path).status_code == 200, path
    first = time.perf_counter() - first
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        for path in paths:
            response = client.get(path)
            response.read()
            assert response.status_code == 200, path
        samples.append(time.perf_counter() - started)
    return {"first_ms": round(first * 1000, 2), **percentiles(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    db = args.db or ROOT / "bench-results" / f"history-{args.events}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    names = build_store(db, args.events, args.sessions)

    argv = [
        sys.executable, "-m", "trio_events", "--log-level", "WARNING",
        "history", "--db", str(db), "--listen", "127.0.0.1:0", "--refresh", "1",
    ]  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert server.stdout is not None
        url = ""
        for line in server.stdout:
            found = re.search(r"History of [\d,]+ events at (http://\S+)/", line)
            if found:
                url = found.group(1)
                break
        if not url:
            raise SystemExit(f"trio-events history did not start (exit {server.wait()}).")
        startup = time.perf_counter() - started
        result: dict[str, Any] = {
            "events": args.events,
            "sessions": args.sessions,
            "startup_s": round(startup, 1),
        }
        with httpx.Client(base_url=url, timeout=30) as client:
            version = client.get("/api/version").json()
            assert version["session_name"] == names[0], version  # the big session is the latest
            kept_apart = {}
            for name in names:
                tasks = client.get(f"/session/{name}/api/v0/tasks?limit=1").json()
                answer = tasks["data"]["result"]
                kept_apart[name] = answer["total"]
            result["task_attempts_per_session"] = kept_apart
            job = client.get("/api/v0/jobs").json()["data"]["result"]["result"][0]["job_id"]
            failed = "filter_keys=state&filter_predicates=%3D&filter_values=FAILED"
            by_job = (
                f"filter_keys=job_id&filter_predicates=%3D&filter_values={job}"
                "&filter_keys=state&filter_predicates=!%3D&filter_values=FINISHED"
            )
            kinds = {
                "tasks_filtered": [f"/api/v0/tasks?limit=100&{failed}"],
                "tasks_by_job": [f"/api/v0/tasks?limit=100&{by_job}"],
                "tasks_unfiltered": ["/api/v0/tasks?limit=100"],
                "page_first_load": ["/", "/static/history.css"],
                "job_page": [f"/session/{names[0]}/job/{job}?state=FAILED"],
                "summary": ["/api/v0/tasks/summarize"],
            }
            for kind, paths in kinds.items():
                slow = kind in ("summary", "job_page")
                count = max(args.requests // 10, 20) if slow else args.requests
                result[kind] = time_requests(client, paths, count)
                print(f"{kind:<18} {result[kind]}", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(30)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
