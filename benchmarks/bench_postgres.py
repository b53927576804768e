"""Several collectors into one PostgreSQL: ingest rate beside SQLite's, and a collector killed.

``python -m benchmarks.bench_postgres [--events N] [--out DIR]`` starts a throwaway PostgreSQL
cluster (tests/pg.py: Debian's server, commits durable as in production, ``fsync`` on), then:

1. **ingest**: 2 load clients (grpcio) → 2 agents → 2 ``collect --store postgresql://...``
   processes → one database; every event distinct. The rate is stored events over the span of
   their arrival times (``received_ns``), so start-up and the clients' own preparation are not
   counted. The same run repeats with SQLite (2 agents → 1 collector: SQLite has one writer).
2. **kill**: 2 agents each exporting to *both* collectors (two publishers, retries unlimited);
   one collector is SIGKILLed when about a third of the events are stored and started again on
   its port later. Every event the agents acknowledged must be in the store, each once.

The last stdout line is the JSON report; ``uptime`` is printed before it (a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._harness import PYTHON, AgentProcess, Child, wait_until
from tests.pg import Cluster

BATCH = 1000
AGENT_EXTRA = [a for a in __import__("os").environ.get("BENCH_PG_AGENT_ARGS", "").split() if a]


# --- the load client (a child process) -------------------------------------------------------


async def _send(
    target: str, seed: int, events: int, streams: int, ids_file: Path
) -> dict[str, Any]:
    import grpc.aio  # only the client process needs it

    from benchmarks.workload import ADD_EVENTS, request_pool
    from trio_events import pb

    pool = request_pool(max(1, events // BATCH), BATCH, seed=seed)
    with ids_file.open("w") as out:  # the ids (partly random: the recorder's node id)
        for raw in pool:
            for event in pb.AddEventsRequest.FromString(raw).events_data.events:
                out.write(event.event_id.hex() + "\n")
    print("client: ready", flush=True)
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(ADD_EVENTS)
        next_request = iter(pool)
        start = time.monotonic()

        async def stream() -> None:
            for request in next_request:
                await call(request, timeout=60)

        await asyncio.gather(*(stream() for _ in range(streams)))
    return {"events": len(pool) * BATCH, "seconds": time.monotonic() - start}


def _post(url: str, seed: int, events: int, connections: int) -> dict[str, Any]:
    """POST ready-made JSON batches (what agents send) straight to a collector."""
    import http.client
    import threading
    import urllib.parse

    import orjson

    from tests import ray_event_samples as samples

    bodies = []
    for first in range(0, events, BATCH):
        batch = []
        for n in range(first, min(events, first + BATCH)):
            task_id = seed.to_bytes(4, "big") + n.to_bytes(8, "big") + bytes(12)
            stamps = [("RUNNING", "2025-10-24T21:12:10Z"), ("FINISHED", "2025-10-24T21:12:11Z")]
            event = samples.task_lifecycle(n, task_id, 0, stamps)
            event["eventId"] = samples.b64(task_id)
            batch.append(event)
        bodies.append(orjson.dumps(batch))
    print("client: ready", flush=True)
    where = urllib.parse.urlsplit(url)
    pending = iter(bodies)
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
        while True:
            with lock:
                body = next(pending, None)
            if body is None:
                return
            conn.request("POST", "/", body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"events": events, "seconds": time.monotonic() - start}


def sent_ids(logs: Path, name: str) -> set[bytes]:
    return {bytes.fromhex(line) for line in (logs / f"{name}.ids").read_text().split()}


# --- processes ---------------------------------------------------------------------------------


class CollectorProcess(Child):
    def __init__(self, logs: Path, store: str, name: str, port: int = 0) -> None:
        argv = [PYTHON, "-m", "trio_events", "--log-level", "WARNING", "collect",
                "--store", store, "--listen", f"127.0.0.1:{port}"]  # fmt: skip
        super().__init__(name, argv, logs)
        match, _ = self.expect(r"Listening on http://[\d.]+:(\d+)/")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}/"


def client(logs: Path, target: str, seed: int, events: int, name: str) -> Child:
    argv = [PYTHON, "-m", "benchmarks.bench_postgres", "--client", target, "--seed", str(seed),
            "--events", str(events), "--ids-file", str(logs / f"{name}.ids")]  # fmt: skip
    child = Child(name, argv, logs)
    child.expect("client: ready", timeout=300)
    return child


def agent(logs: Path, urls: list[str], name: str) -> AgentProcess:
    extra = [arg for url in urls[1:] for arg in ("--export-addr", url)]
    # A buffer for every event: the clients send faster than the store takes, and the figure is
    # the store's rate, not the agent's overflow policy (its drops are reported all the same).
    return AgentProcess(
        logs,
        urls[0],
        *extra,
        "--max-retries",
        "-1",
        "--buffer-size",
        "1000000",
        *AGENT_EXTRA,
        name=name,
    )


def pg_stats(url: str) -> tuple[int, int, int, int]:
    """(rows, distinct ids, first and last received_ns)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), min(received_ns), max(received_ns) "
            "FROM events"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2] or 0), int(row[3] or 0)


def sqlite_stats(path: str) -> tuple[int, int, int, int]:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), min(received_ns), max(received_ns) "
            "FROM events"
        ).fetchone()
    return int(row[0]), int(row[1]), int(row[2] or 0), int(row[3] or 0)


# --- scenarios ---------------------------------------------------------------------------------


def collectors_only(logs: Path, store: str, events: int, stats: Any) -> dict[str, Any]:
    """2 processes POSTing JSON batches to 2 collectors: what the store side takes."""
    sinks = [CollectorProcess(logs, store, f"pcollector{i}") for i in range(2)]
    posters = []
    for i, sink in enumerate(sinks):
        argv = [PYTHON, "-m", "benchmarks.bench_postgres", "--poster", sink.url,
                "--seed", str(i + 21), "--events", str(events)]  # fmt: skip
        posters.append(Child(f"poster{i}", argv, logs))
    try:
        for poster in posters:
            poster.expect("client: ready", timeout=300)
        sent = sum(p.last_json()["events"] for p in posters)
        wait_until(lambda: stats(store)[0] >= sent, 300, "every event stored", poll=0.5)
        rows, distinct, first, last = stats(store)
    finally:
        for process in sinks:
            process.stop()
    seconds = (last - first) / 1e9
    return {"events": rows, "distinct": distinct, "seconds": round(seconds, 2),
            "events_per_s": round(rows / seconds) if seconds else None}  # fmt: skip


def ingest(logs: Path, store: str, collectors: int, events: int, stats: Any) -> dict[str, Any]:
    sinks = [CollectorProcess(logs, store, f"collector{i}") for i in range(collectors)]
    agents = [agent(logs, [sinks[i % collectors].url], f"agent{i}") for i in range(2)]
    clients = [client(logs, a.target, i + 1, events, f"client{i}") for i, a in enumerate(agents)]
    try:
        sent = sum(c.last_json()["events"] for c in clients)
        wait_until(lambda: stats(store)[0] >= sent, 300, "every event stored", poll=0.5)
        rows, distinct, first, last = stats(store)
        summaries = [a.shutdown()[0] for a in agents]
    finally:
        for process in (*agents, *sinks):
            process.stop()
    seconds = (last - first) / 1e9
    return {"events": rows, "distinct": distinct, "seconds": round(seconds, 2),
            "events_per_s": round(rows / seconds) if seconds else None,
            "agent_dropped": sum(s["dropped"] for s in summaries)}  # fmt: skip


def kill_one(logs: Path, url: str, events: int) -> dict[str, Any]:
    sinks = [CollectorProcess(logs, url, f"kcollector{i}") for i in range(2)]
    urls = [s.url for s in sinks]
    agents = [agent(logs, urls, f"kagent{i}") for i in range(2)]
    seeds = (11, 12)
    clients = [client(logs, a.target, seed, events, f"kclient{i}")
               for i, (a, seed) in enumerate(zip(agents, seeds, strict=True))]  # fmt: skip
    restarted: CollectorProcess | None = None
    try:
        wait_until(lambda: pg_stats(url)[0] >= 2 * events // 3, 300, "a third stored", poll=0.1)
        victim = sinks[0]
        victim.stop(signal.SIGKILL)
        killed_at = pg_stats(url)[0]
        acknowledged = sum(c.last_json()["events"] for c in clients)
        wanted = sent_ids(logs, "kclient0") | sent_ids(logs, "kclient1")
        # Every acknowledged event reaches the store through the surviving collector...
        wait_until(lambda: pg_stats(url)[0] >= len(wanted), 300, "all events stored", poll=0.5)
        # ...and the killed collector's publishers deliver their retries once it is back.
        restarted = CollectorProcess(logs, url, "kcollector0-again", port=victim.port)
        time.sleep(5)
        summaries = [a.shutdown()[0] for a in agents]
        with psycopg.connect(url) as conn:
            stored = {bytes(r[0]) for r in conn.execute("SELECT event_id FROM events")}
        rows, distinct, _, _ = pg_stats(url)
    finally:
        for process in (*agents, *sinks, *([restarted] if restarted else [])):
            process.stop()
    return {
        "acknowledged": acknowledged,
        "stored_when_killed": killed_at,
        "rows": rows,
        "lost": len(wanted - stored),
        "duplicates": rows - distinct,
        "agent_dropped": sum(s["dropped"] for s in summaries),
        "unexpected": len(stored - wanted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per agent")
    parser.add_argument("--out", type=Path, default=None, help="logs directory")
    parser.add_argument("--client", metavar="TARGET", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--poster", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poster:
        print(json.dumps(_post(args.poster, args.seed, args.events, 2)), flush=True)
        return
    if args.client:
        result = asyncio.run(_send(args.client, args.seed, args.events, 4, args.ids_file))
        print(json.dumps(result), flush=True)
        return
    logs = args.out or Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    cluster = Cluster(crash_safe=True, fsync=True)
    names = itertools.count()
    try:
        report: dict[str, Any] = {"events_per_agent": args.events, "logs": str(logs)}
        url = cluster.new_database()
        report["postgresql_2_collectors"] = ingest(logs, url, 2, args.events, pg_stats)
        sqlite_path = str(logs / f"bench{next(names)}.db")
        report["sqlite_1_collector"] = ingest(logs, sqlite_path, 1, args.events, sqlite_stats)
        pg_only = collectors_only(logs, cluster.new_database(), args.events, pg_stats)
        report["postgresql_2_collectors_no_agents"] = pg_only
        sqlite_only = collectors_only(logs, str(logs / "bench-only.db"), args.events, sqlite_stats)
        report["sqlite_2_collectors_no_agents"] = sqlite_only
        report["kill_one_collector"] = kill_one(logs, cluster.new_database(), args.events)
    finally:
        cluster.destroy()
    print(subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
