"""Issue 14's findings, each as a scenario with real processes and sockets on 127.0.0.1.

One bad event, one bad disk or one bad client must never stop the pipeline: each scenario ends
with the ledger of design.md section 5 (0 unaccounted) and an agent still answering ``/healthz``
and ``/metrics``. The numbers go to ``bench-results/faults.json`` and docs/reliability.md.
The disk scenarios mount a small file system (tmpfs, or ext4 on a loop device for fsfreeze)
and so need root; without it they fail with the sentence saying why.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import trio

from tests.faults.test_faults import (
    DEADLINE,
    LOADGEN,
    STEP,
    finish,
    finish_loadgen,
    settle_and_stop,
    sink_url,
)
from tests.harness import (
    Agent,
    LoadgenResult,
    agent_process,
    clean_env,
    collector_counts,
    collector_ids,
    collector_process,
    ledger,
    loadgen_args,
    rss_kib,
    samples,
    spawn,
    tracebacks,
    wait_metrics,
)
from tests.scripted_sink import OK, Reply, ScriptedSink

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

ADD_FAILURES = "ray_aggregator_agent_events_buffer_add_failures_total"
REPO = Path(__file__).resolve().parents[2]
ROOT_NEEDED = (
    "This scenario mounts a small file system and so must run as root (it is {uid}); run "
    "`nox -s faults` as root, e.g. in the project's container."
)


# --- helpers ----------------------------------------------------------------------------------


async def metric_by(port: int, name: str, label: str) -> dict[str, int]:
    """One metric's samples from the agent's /metrics, by the value of ``label``."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    found: Counter[str] = Counter()
    for labels, value in samples(text).get(name, []):
        found[labels.get(label, "")] += int(value)
    return dict(found)


async def metric(port: int, name: str) -> int:
    return sum((await metric_by(port, name, "")).values())


async def health(port: int, *, within: float = 2.0) -> tuple[int, dict[str, Any], float]:
    """GET /healthz: status, body and how long it took (it must answer within ``within``)."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=within, trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}/healthz")
    body = orjson.loads(response.content) if response.content.startswith(b"{") else {}
    return response.status_code, body, time.monotonic() - started


async def wait_health(port: int, healthy: bool, *, within: float) -> dict[str, Any]:
    with trio.move_on_after(within):
        while True:
            status, body, _ = await health(port)
            if (status == 200) == healthy:
                return body
            await trio.sleep(0.1)
    raise AssertionError(f"/healthz never became {'healthy' if healthy else 'unhealthy'}")


async def still_serving(agent: Agent) -> int:
    """The agent answers /healthz and /metrics after the fault (the scenario's last check)."""
    status, body, took = await health(agent.metrics_port)
    assert status in (200, 503), status
    assert "reasons" in body, body
    assert took < 2.0, took
    await metric(agent.metrics_port, "ray_aggregator_agent_events_received_total")
    return status


async def run_client(tmp_path: Path, name: str, port: int, events: int, *poison: str) -> list[str]:
    """tests/poison_client.py as a process; the acknowledged ids (``-`` for an empty one)."""
    ids = trio.Path(tmp_path / f"{name}.ids")
    argv = [sys.executable, "-m", "tests.poison_client", str(port), str(events), str(ids), *poison]
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                    env=clean_env(), cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return (await ids.read_text()).split()


def client_run(acked: list[str]) -> LoadgenResult:
    """The poison client as a ledger entry: every event it sent was acknowledged."""
    return LoadgenResult(len(acked), len(acked), 0, 0, 0.0, {}, acked)


def read_outputs(directory: Path) -> dict[str, str]:
    """Every process output (stdout and stderr files) in ``directory``, by file name."""
    files = [*directory.glob("*.out"), *directory.glob("*.err")]
    return {p.name: p.read_text(errors="replace") for p in files}


def fsfreeze(fs: Path, flag: str) -> None:
    subprocess.run(["fsfreeze", flag, str(fs)], check=True)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(ROOT_NEEDED.format(uid=os.geteuid()))


@contextmanager
def mounted(where: Path, *, megabytes: int, loop_ext4: bool = False) -> Iterator[Path]:
    """A small file system at ``where`` (tmpfs, or ext4 on a loop device), removed after."""
    require_root()
    where.mkdir()
    image = where.with_suffix(".img")
    if loop_ext4:
        subprocess.run(["truncate", "-s", f"{megabytes}M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    else:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)], check=True
        )
    try:
        yield where
    finally:
        subprocess.run(["fsfreeze", "-u", str(where)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(where)], check=False)
        image.unlink(missing_ok=True)


async def stop_sink_ledger(
    agent: Agent, runs: list[LoadgenResult], sink: ScriptedSink, **notes: Any
) -> dict[str, Any]:
    await still_serving(agent)
    _, drops = await settle_and_stop(agent)
    return ledger(runs, sink.ids, drops, sink_answers=dict(sink.kinds()), **notes)


# --- 1. one bad event ------------------------------------------------------------------------


@pytest.mark.parametrize("events", [3000])
async def test_poison_event_in_local_store_mode(tmp_path: Path, events: int) -> None:
    """A year-2300 event and one with no id, first in a 3,000-event request, into an agent with
    no export address (local store): refused alone and counted; the agent keeps running."""
    db = tmp_path / "local.db"
    with trio.fail_after(DEADLINE):
        async with agent_process("agent", tmp_path, "--db", str(db)) as agent:
            acked = await run_client(
                tmp_path, "client", agent.grpc_port, events, "year2300", "empty_id"
            )
            await wait_metrics(
                agent, lambda c: c.published == len(acked), within=STEP, what="stored"
            )
            refused = await metric_by(
                agent.metrics_port, "trio_events_store_refused_events_total", "reason"
            )
            await still_serving(agent)
            counters, drops = await settle_and_stop(agent)
    drops.update({f"store_refused:{k}": v for k, v in refused.items()})
    entry = ledger(
        [client_run(acked)], collector_ids(db) | _empty_id_arrivals(), drops,
        fault="year-2300 timestamp and empty eventId first in a 3,000-event request, local store",
        agent_delivered=counters.published,
    )  # fmt: skip
    finish("poison_event_local_store", entry)
    assert refused == {"timestamp_out_of_range": 1, "missing_event_id": 1}
    assert entry["missing_ids"] == 2


def _empty_id_arrivals() -> set[str]:
    return set()  # an event with no id can never arrive under an id: it is counted as refused


async def test_poison_events_to_the_collector(tmp_path: Path) -> None:
    """The same poison through an agent exporting to `trio-events collect`: the collector stores
    the good events, refuses the bad ones alone (200 naming them), and the agent goes on."""
    db = tmp_path / "events.db"
    with trio.fail_after(DEADLINE):
        async with collector_process("collector", tmp_path, db) as (collector, port):
            async with agent_process("agent", tmp_path, *sink_url(port)) as agent:
                acked = await run_client(
                    tmp_path, "client", agent.grpc_port, 5000, "year2300", "empty_id"
                )
                await wait_metrics(
                    agent, lambda c: c.published == len(acked), within=STEP, what="delivery"
                )
                direct = await _post_issue_bodies(port)
                await still_serving(agent)
                counters, drops = await settle_and_stop(agent)
            assert await collector.stop() == 0
    stored, _, rejected = collector_counts(collector)
    found = re.search(r"(\d+) events refused(?: \(([^)]*)\))?", collector.stdout())
    assert found is not None, collector.describe()
    refused = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found.group(2) or "")}
    # What came through the agent: 2 refused; the direct POSTs: 1 refused (year 2300).
    drops.update({f"collector_refused:{k}": v for k, v in refused.items()})
    drops["collector_refused:timestamp_out_of_range"] -= 1
    entry = ledger(
        [client_run(acked)], collector_ids(db), drops,
        fault="year-2300 timestamp and empty eventId first among 5,000 events, agent -> collector",
        agent_delivered=counters.published, collector_stored=stored,
        collector_refused=refused, collector_rejected_requests=rejected, direct_posts=direct,
    )  # fmt: skip
    finish("poison_event_collector", entry)
    assert entry["missing_ids"] == 2
    assert counters.published == len(acked)
    assert "Traceback" not in collector.stderr()


async def _post_issue_bodies(port: int) -> dict[str, Any]:
    """The issue's curl, and unpadded base64 ids, straight to the collector."""
    url = f"http://127.0.0.1:{port}/"
    poison = b'[{"eventId":"AQ==","eventType":"X","timestamp":"2300-01-01T00:00:00Z"}]'
    unpadded = b'[{"eventId":"AQI","eventType":"X","timestamp":"2025-01-01T00:00:00Z"}]'
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        first = await client.post(url, content=poison)
        second = await client.post(url, content=unpadded)
    assert first.status_code == 200, first.text
    assert [r["reason"] for r in first.json()["refused"]] == ["timestamp_out_of_range"]
    assert (second.status_code, second.json()["inserted"]) == (200, 1)
    return {"year_2300_curl": first.status_code, "unpadded_base64": second.json()}


# --- 2. the spool's disk ------------------------------------------------------------------------


async def test_spool_disk_full_refuses_then_recovers(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A 16 MB tmpfs under --spool, half taken by another file, while the sink refuses: ingest
    answers RESOURCE_EXHAUSTED (the recorder keeps its events), /healthz says why; once the sink
    accepts, deliveries free space and the agent recovers by itself."""
    sink = ScriptedSink(lambda n: Reply(503))
    with mounted(tmp_path / "fs", megabytes=16) as fs, trio.fail_after(DEADLINE * 2):
        (fs / "filler").write_bytes(b"\0" * (7 * 1024 * 1024))
        port = await nursery.start(sink.run)
        args = ("--spool", str(fs / "spool"), "--spool-min-free-bytes", str(2 * 1024 * 1024))
        async with agent_process("agent", tmp_path, *sink_url(port), *args) as agent:
            ids = tmp_path / "loadgen.ids"
            argv = loadgen_args(agent.target, 60_000, ids, "--batch-interval", "0.1",
                                "--flush-timeout", "120", "--seed", "14", "--rate", "6000",
                                "--max-queued-events", "100000")  # fmt: skip
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                full = await wait_metrics(
                    agent, lambda c: c.rejected > 0, within=STEP * 2, what="a full spool"
                )
                body = await wait_health(agent.metrics_port, healthy=False, within=STEP)
                reasons = " ".join(body["reasons"])
                assert "spool" in reasons, body
                statvfs = os.statvfs(fs)
                free_when_full = statvfs.f_bavail * statvfs.f_frsize
                sink.script = lambda n: OK
                await wait_health(agent.metrics_port, healthy=True, within=STEP * 2)
                run = await finish_loadgen(loadgen, ids)
            entry = await stop_sink_ledger(
                agent, [run], sink,
                fault="16 MB tmpfs under --spool (7 MB taken by a filler), sink 503 then 200",
                refused_resource_exhausted=full.rejected, unhealthy_reason=reasons,
                free_bytes_when_full=free_when_full,
            )  # fmt: skip
    finish("spool_disk_full", entry)
    assert entry["missing_ids"] == 0
    assert entry["refused_resource_exhausted"] > 0


async def test_spool_file_deleted_stops_acknowledging(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The spool file is deleted while the agent runs: from the next request on the agent
    refuses (UNAVAILABLE, the recorder keeps and finally counts its events), logs and reports
    it; what it had acknowledged is still delivered from the open file."""
    sink = ScriptedSink()
    spool = tmp_path / "spool"
    with trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        async with agent_process(
            "agent", tmp_path, *sink_url(port), "--spool", str(spool)
        ) as agent:
            ids = tmp_path / "loadgen.ids"
            argv = loadgen_args(agent.target, 8000, ids, "--batch-interval", "0.1",
                                "--flush-timeout", "3", "--seed", "15", "--rate", "2000")  # fmt: skip
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                await sink.wait_until(lambda: len(sink.ids) >= 500, within=STEP)
                spool.unlink()
                with trio.fail_after(STEP):
                    while not await metric(agent.metrics_port, ADD_FAILURES):  # noqa: ASYNC110
                        await trio.sleep(0.1)
                body = await wait_health(agent.metrics_port, healthy=False, within=STEP)
                run = await finish_loadgen(loadgen, ids)
            received = await metric(
                agent.metrics_port, "ray_aggregator_agent_events_received_total"
            )
            acknowledged = await metric(
                agent.metrics_port, "trio_events_agent_acknowledged_events_total"
            )
            failures = await metric(agent.metrics_port, ADD_FAILURES)
            entry = await stop_sink_ledger(
                agent, [run], sink, fault="spool file deleted while the agent runs",
                received=received, acknowledged=acknowledged, add_failures=failures,
                unhealthy_reason=" ".join(body["reasons"]),
            )  # fmt: skip
    finish("spool_file_deleted", entry)
    assert received == acknowledged + failures
    assert failures > 0
    assert "deleted" in entry["unhealthy_reason"]
    assert "was deleted while the agent was running" in agent.proc.stderr()


async def test_stalled_spool_disk_never_freezes_the_agent(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """fsfreeze on the spool's file system (ext4 on a loop device) for 8 s under load:
    /healthz keeps answering (unhealthy: stalled), requests are refused instead of hanging, and
    after the thaw everything acknowledged is delivered."""
    sink = ScriptedSink()
    with mounted(tmp_path / "fs", megabytes=64, loop_ext4=True) as fs, trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        async with agent_process(
            "agent", tmp_path, *sink_url(port), "--spool", str(fs / "spool")
        ) as agent:
            ids = tmp_path / "loadgen.ids"
            argv = loadgen_args(
                agent.target, 16_000, ids, *LOADGEN, "--seed", "16", "--rate", "1000"
            )
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                await sink.wait_until(lambda: len(sink.ids) >= 300, within=STEP)
                fsfreeze(fs, "-f")
                slowest = 0.0
                unhealthy = ""
                try:
                    end = trio.current_time() + 8
                    while trio.current_time() < end:
                        status, body, took = await health(agent.metrics_port)
                        slowest = max(slowest, took)
                        if status == 503:
                            unhealthy = " ".join(body["reasons"])
                        await trio.sleep(0.2)
                finally:
                    fsfreeze(fs, "-u")
                await wait_health(agent.metrics_port, healthy=True, within=STEP)
                run = await finish_loadgen(loadgen, ids)
            entry = await stop_sink_ledger(
                agent, [run], sink, fault="spool file system frozen (fsfreeze) for 8 s under load",
                slowest_healthz_s=round(slowest, 3), unhealthy_reason=unhealthy,
            )  # fmt: skip
    finish("spool_disk_stalled", entry)
    assert entry["missing_ids"] == 0
    assert slowest < 2.0
    assert "stalled disk" in unhealthy


# --- 3. memory and connections -----------------------------------------------------------------


async def test_slowloris_grpc_streams_are_bounded(tmp_path: Path, nursery: trio.Nursery) -> None:
    """2 connections x 20 streams, each announcing 15 MB and holding it one byte short, while a
    loadgen sends: the receive budget refuses most at once, the receive deadline ends the rest,
    RSS stays bounded, and the loadgen's events all arrive."""
    sink = ScriptedSink()
    with trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        async with agent_process(
            "agent", tmp_path, *sink_url(port), "--receive-timeout", "5"
        ) as agent:
            base = rss_kib(agent.proc.pid) or 0
            attack = [
                sys.executable,
                "-m",
                "tests.slow_grpc",
                str(agent.grpc_port),
                "2",
                "20",
                "15000000",
                "12",
            ]
            peak = base
            async with trio.open_nursery() as inner:
                result: list[subprocess.CompletedProcess[bytes]] = []

                async def attacker() -> None:
                    result.append(await trio.run_process(
                        attack, capture_stdout=True, capture_stderr=True, check=False,
                        env=clean_env(), cwd=REPO,
                    ))  # fmt: skip

                inner.start_soon(attacker)
                ids = tmp_path / "loadgen.ids"
                argv = loadgen_args(agent.target, 4000, ids, *LOADGEN, "--seed", "17")
                async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                    while not result:
                        peak = max(peak, rss_kib(agent.proc.pid) or 0)
                        await trio.sleep(0.2)
                    run = await finish_loadgen(loadgen, ids)
            statuses = {
                k: int(v) for k, v in re.findall(r"status=(\w+) (\d+)", result[0].stdout.decode())
            }
            refused = await metric_by(
                agent.metrics_port, "trio_events_agent_refused_streams_total", "reason"
            )
            after = rss_kib(agent.proc.pid) or 0
            entry = await stop_sink_ledger(
                agent, [run], sink, fault="2 x 20 gRPC streams announcing 15 MB, one byte short",
                attacker_statuses=statuses, refused_streams=refused,
                rss_mib={"before": base // 1024, "peak": peak // 1024, "after": after // 1024},
            )  # fmt: skip
    finish("slowloris_grpc", entry)
    assert entry["missing_ids"] == 0
    assert statuses.get("8", 0) >= 30, statuses  # RESOURCE_EXHAUSTED: past the 64 MiB budget
    assert peak - base < 200 * 1024, entry["rss_mib"]


async def test_idle_connections_never_take_down_healthz(tmp_path: Path) -> None:
    """64 idle TCP connections to the collector and 64 to the agent's /metrics port (each
    server's whole pool): /healthz on both still answers at once; events still flow."""
    db = tmp_path / "events.db"
    with trio.fail_after(DEADLINE):
        async with collector_process("collector", tmp_path, db) as (collector, port):
            async with agent_process("agent", tmp_path, *sink_url(port)) as agent:
                idle = [await trio.open_tcp_stream("127.0.0.1", p)
                        for p in (port, agent.metrics_port) for _ in range(64)]  # fmt: skip
                try:
                    status_agent, _, took_agent = await health(agent.metrics_port)
                    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
                        started = time.monotonic()
                        collector_health = await client.get(f"http://127.0.0.1:{port}/healthz")
                        took_collector = time.monotonic() - started
                    ids = tmp_path / "loadgen.ids"
                    argv = loadgen_args(agent.target, 3000, ids, *LOADGEN, "--seed", "18")
                    async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                        run = await finish_loadgen(loadgen, ids)
                    await still_serving(agent)
                    _, drops = await settle_and_stop(agent)
                finally:
                    for stream in idle:
                        await stream.aclose()
            assert await collector.stop() == 0
    entry = ledger(
        [run], collector_ids(db), drops, fault="64 idle connections to the collector and to /healthz",
        healthz_seconds={"agent": round(took_agent, 3), "collector": round(took_collector, 3)},
    )  # fmt: skip
    finish("idle_connections", entry)
    assert (status_agent, collector_health.status_code) == (200, 200)
    assert entry["missing_ids"] == 0


# --- 4. shutdown --------------------------------------------------------------------------------


async def test_second_sigterm_cuts_the_drain_and_counts_it(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A sink that only answers 503 and a 120 s grace period: a second SIGTERM ends the drain
    at once; the process exits 0 with its summary, the held events counted as abandoned."""
    sink = ScriptedSink(lambda n: Reply(503))
    with trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        async with agent_process(
            "agent", tmp_path, *sink_url(port), "--grace-period", "120"
        ) as agent:
            ids = tmp_path / "loadgen.ids"
            argv = loadgen_args(agent.target, 3000, ids, *LOADGEN, "--seed", "19")
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                run = await finish_loadgen(loadgen, ids)
            held = await wait_metrics(
                agent, lambda c: c.received >= len(run.acked_ids), within=STEP, what="held"
            )
            agent.proc.send(signal.SIGTERM)
            await agent.proc.wait_for("shutting down in order", within=STEP, stream="err")
            await agent.proc.wait_for("draining publishers", within=STEP, stream="err")
            started = time.monotonic()
            agent.proc.send(signal.SIGTERM)
            code = await agent.proc.wait(within=STEP)
            took = time.monotonic() - started
    final = re.search(
        r"stopped: delivered=(\d+) dropped=(\d+) abandoned=(\d+)", agent.proc.stdout()
    )
    assert code == 0, agent.proc.describe()
    assert final is not None, agent.proc.describe()
    delivered, _, abandoned = (int(g) for g in final.groups())
    entry = ledger(
        [run], sink.ids, {"shutdown_abandoned": abandoned},
        fault="second SIGTERM during a drain against a sink answering 503 (grace 120 s)",
        exit_status=code, seconds_after_second_sigterm=round(took, 2), final_line=final.group(0),
        held_when_stopped=held.held,
    )  # fmt: skip
    finish("second_sigterm", entry)
    assert delivered == 0
    assert took < 10
    assert abandoned == len(run.acked_ids)


# --- 5. secrets ---------------------------------------------------------------------------------


async def test_no_secret_in_debug_logs(tmp_path: Path, nursery: trio.Nursery) -> None:
    """--log-level DEBUG with an AddEvents token, a publisher bearer token and a credential in
    --export-addr's query string: none of the three appears in any output."""
    secrets = {"auth": "auth-7c1f2e9a", "bearer": "bearer-5d3b8a0c", "query": "query-9e4d2c6b"}
    (tmp_path / "auth").write_text(secrets["auth"])
    (tmp_path / "bearer").write_text(secrets["bearer"])
    sink = ScriptedSink()
    with trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        url = f"http://127.0.0.1:{port}/v1/events?token={secrets['query']}"
        argv = ("--log-level", "DEBUG", "agent", "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--exposable-event-types", "ALL",
                "--linger", "0.05", "--export-addr", url,
                "--auth-token-file", str(tmp_path / "auth"),
                "--bearer-token-file", str(tmp_path / "bearer"))  # fmt: skip
        async with spawn("agent", *argv, cwd=tmp_path) as proc:
            grpc = await proc.wait_for(r"gRPC AddEvents on 127\.0\.0\.1:(\d+)", within=STEP)
            metrics_port = await proc.wait_for(
                r"metrics on http://127\.0\.0\.1:(\d+)/", within=STEP
            )
            agent = Agent(proc, int(grpc.group(1)), int(metrics_port.group(1)))
            ids = tmp_path / "loadgen.ids"
            lg = loadgen_args(agent.target, 2000, ids, *LOADGEN, "--seed", "20",
                              "--token-file", str(tmp_path / "auth"))  # fmt: skip
            async with spawn("loadgen", *lg, cwd=tmp_path) as loadgen:
                run = await finish_loadgen(loadgen, ids)
            entry = await stop_sink_ledger(
                agent, [run], sink, fault="DEBUG logs with three secrets"
            )
            outputs = read_outputs(tmp_path)
    leaks = {f"{name}:{what}": text.count(value) for name, text in outputs.items()
             for what, value in secrets.items() if value in text}  # fmt: skip
    debug_lines = sum(text.count(" DEBUG ") for text in outputs.values())
    entry.update(leaked=leaks, debug_lines=debug_lines, log_bytes=sum(map(len, outputs.values())))
    finish("secrets_in_debug_logs", entry)
    assert leaks == {}
    assert debug_lines > 0
    assert "token=REDACTED" in proc.stdout()
    assert sum(sink.ids.values()) > 0


# --- 6. accounting ------------------------------------------------------------------------------


async def test_collector_counts_http_refusals_and_survives_a_locked_database(
    tmp_path: Path,
) -> None:
    """The collector's summary counts the refusals of its HTTP layer (413, 400); a database
    locked by another writer gets 503 and one log line, no traceback, and nothing is lost."""
    db = tmp_path / "events.db"
    with trio.fail_after(DEADLINE):
        async with collector_process("collector", tmp_path, db) as (collector, port):
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                big = await client.post(
                    f"http://127.0.0.1:{port}/", content=b"[" + b" " * (33 * 1024 * 1024) + b"]"
                )
                bad = await client.post(f"http://127.0.0.1:{port}/", content=b"[{")
            assert (big.status_code, bad.status_code) == (413, 400)
            async with agent_process("agent", tmp_path, *sink_url(port)) as agent:
                ids = tmp_path / "loadgen.ids"
                argv = loadgen_args(
                    agent.target, 4000, ids, *LOADGEN, "--seed", "21", "--rate", "1000"
                )
                async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                    await wait_metrics(
                        agent, lambda c: c.published > 0, within=STEP, what="a delivery"
                    )
                    blocker = sqlite3.connect(db, isolation_level=None, timeout=30)
                    blocker.execute("BEGIN EXCLUSIVE")
                    try:
                        await collector.wait_for("cannot be written", within=STEP, stream="err")
                    finally:
                        blocker.execute("ROLLBACK")
                        blocker.close()
                    run = await finish_loadgen(loadgen, ids)
                await still_serving(agent)
                _, drops = await settle_and_stop(agent)
            assert await collector.stop() == 0
    stdout, stderr = collector.stdout(), collector.stderr()
    summary = re.search(r"Stopped: .*", stdout)
    assert summary is not None
    entry = ledger(
        [run], collector_ids(db), drops, fault="collector: 413 and 400 refused; database locked",
        collector_summary=summary.group(0), collector_tracebacks=sum(tracebacks(stderr).values()),
        locked_log_lines=stderr.count("cannot be written"),
    )  # fmt: skip
    finish("collector_refusals_and_locked_db", entry)
    assert "(HTTP 400=1 413=1)" in summary.group(0)
    assert entry["collector_tracebacks"] == 0
    assert entry["locked_log_lines"] == 1
    assert entry["missing_ids"] == 0
