"""Fault injection with real processes on 127.0.0.1: loadgen -> agent -> sink, one fault each.

Every scenario generates events with known ids (``loadgen --ids-out``), injects its fault, and
ends with the ledger of design.md section 5: each acknowledged id arrived at the sink or is
covered by a counted drop (the agent's ``/metrics`` and its final line, the loadgen's summary and
logged reasons), and nothing is unaccounted. The numbers go to ``bench-results/faults.json``.

The unmarked scenarios are the fast subset of the default session; ``nox -s faults`` runs all.
"""

from __future__ import annotations

import functools
import itertools
import signal
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from tests.harness import (
    Agent,
    AgentCounters,
    LoadgenResult,
    Proc,
    agent_process,
    check_ledger,
    collector_counts,
    collector_ids,
    collector_process,
    ledger,
    loadgen_args,
    loadgen_result,
    record_result,
    spawn,
    wait_metrics,
    wait_settled,
)
from tests.scripted_sink import OK, Reply, ScriptedSink

DEADLINE = 240  # seconds for a whole scenario; a shared 2-core machine can be slow
STEP = 60  # seconds for any one condition to come true
LOADGEN = ("--batch-interval", "0.1", "--flush-timeout", "60")


async def finish_loadgen(proc: Proc, ids: Path) -> LoadgenResult:
    await proc.wait(within=STEP * 2)
    return loadgen_result(proc, ids)


async def run_loadgen(cwd: Path, name: str, target: str, events: int, *extra: str) -> LoadgenResult:
    ids = cwd / f"{name}.ids"
    async with spawn(name, *loadgen_args(target, events, ids, *LOADGEN, *extra), cwd=cwd) as proc:
        return await finish_loadgen(proc, ids)


async def settle_and_stop(agent: Agent) -> tuple[AgentCounters, dict[str, int]]:
    """Wait until the agent holds nothing, stop it in order, and check its final line against
    its metrics. Returns the metrics and the agent's counted drops by reason."""
    counters = await wait_settled(agent, within=STEP)
    final = await agent.stop()
    assert final.delivered == counters.published, (final, counters)
    assert final.dropped == sum(
        n for reason, n in counters.dropped.items() if reason != "shutdown_abandoned"
    ), (final, counters)
    assert final.abandoned == 0, final
    drops = dict(counters.dropped)
    if counters.evicted:
        drops["evicted_from_buffer"] = counters.evicted
    if counters.filtered:
        drops["filtered"] = counters.filtered
    return counters, drops


def sink_url(port: int, scheme: str = "http") -> tuple[str, str]:
    return ("--export-addr", f"{scheme}://127.0.0.1:{port}/v1/events")


def finish(scenario: str, entry: dict[str, Any], *, exact: bool = True) -> None:
    record_result("faults", scenario, entry)
    check_ledger(entry, exact=exact)


def sink_events(sink: ScriptedSink) -> int:
    """Events the sink answered with a 2xx (duplicates included)."""
    return sum(s.events for s in sink.seen if s.kind.startswith("2"))


# --- the sink misbehaves -------------------------------------------------------------------


async def scripted_sink_scenario(
    tmp_path: Path,
    nursery: trio.Nursery,
    scenario: str,
    script: Any,
    *agent_args: str,
    events: int = 4000,
) -> tuple[dict[str, Any], ScriptedSink]:
    sink = ScriptedSink(script)
    port = await nursery.start(sink.run)
    # Batches of 200 make a few dozen POSTs out of a few thousand events.
    args = ("--max-batch-size", "200", *agent_args)
    async with agent_process("agent", tmp_path, *sink_url(port), *args) as agent:
        run = await run_loadgen(tmp_path, "loadgen", agent.target, events, "--seed", "1")
        counters, drops = await settle_and_stop(agent)
    # What the agent says it delivered is what the sink accepted.
    assert counters.published == sink_events(sink), (counters, sink.kinds())
    entry = ledger([run], sink.ids, drops, fault=scenario, sink_answers=dict(sink.kinds()))
    return entry, sink


async def test_sink_400_is_dropped_and_counted(tmp_path: Path, nursery: trio.Nursery) -> None:
    """400 is permanent, never retried: the refused batch is bisected, and only events the sink
    refused alone are dropped, counted as http_400 (here the sink refuses by request number,
    not by content, so most parts of a refused batch get through)."""
    with trio.fail_after(DEADLINE):
        entry, sink = await scripted_sink_scenario(
            tmp_path, nursery, "sink answers 400 to every 3rd POST",
            lambda n: Reply(400) if n % 3 == 1 else OK,
        )  # fmt: skip
    finish("sink_400_permanent", entry)
    assert entry["dropped"].get("agent:http_400", 0) == entry["missing_ids"]
    assert sink.kinds()["400"] == sum(1 for s in sink.seen if s.index % 3 == 1)


@pytest.mark.slow
async def test_sink_5xx_storm_delays_but_loses_nothing(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    storm = (500, 503, 502, 504)
    with trio.fail_after(DEADLINE):
        entry, sink = await scripted_sink_scenario(
            tmp_path, nursery, "20 POSTs of 500/502/503/504, then 2 in 3 fail",
            lambda n: Reply(storm[n % 4]) if n < 20 or n % 3 else OK,
        )  # fmt: skip
    finish("sink_5xx_storm", entry)
    assert entry["missing_ids"] == 0
    assert sum(v for k, v in sink.kinds().items() if k.startswith("5")) >= 20


@pytest.mark.slow
async def test_sink_429_retry_after_is_honoured(tmp_path: Path, nursery: trio.Nursery) -> None:
    def script(n: int) -> Reply:
        return Reply(429, (("retry-after", "1"),)) if n < 6 and n % 2 == 0 else OK

    with trio.fail_after(DEADLINE):
        # One request in flight, so the request after a 429 is its retry (with more, another
        # batch's request may come in between; the window is tested in tests/test_delivery.py).
        entry, sink = await scripted_sink_scenario(
            tmp_path, nursery, "429 with Retry-After: 1 on 3 POSTs", script, "--max-in-flight", "1"
        )
    # The agent's own backoff is at most 0.5 s here; each retry after a 429 waited the second.
    gaps = [b.at - a.at for a, b in itertools.pairwise(sink.seen) if a.kind == "429"]
    entry["waits_after_429_s"] = [round(g, 3) for g in gaps]
    finish("sink_429_retry_after", entry)
    assert len(gaps) == 3
    assert min(gaps) >= 0.95, gaps
    assert entry["missing_ids"] == 0


@pytest.mark.slow
async def test_sink_that_hangs_past_the_timeout(tmp_path: Path, nursery: trio.Nursery) -> None:
    with trio.fail_after(DEADLINE):
        entry, sink = await scripted_sink_scenario(
            tmp_path, nursery, "3 POSTs never answered (publisher timeout 1 s)",
            lambda n: Reply(hang=True) if n < 3 else OK,
            "--publisher-timeout", "1",
        )  # fmt: skip
    finish("sink_hangs", entry)
    assert sink.kinds()["hang"] == 3
    assert entry["missing_ids"] == 0


@pytest.mark.slow
async def test_sink_resetting_connections_mid_body(tmp_path: Path, nursery: trio.Nursery) -> None:
    with trio.fail_after(DEADLINE):
        entry, sink = await scripted_sink_scenario(
            tmp_path, nursery, "5 connections reset (RST) after 1 KiB of the body",
            lambda n: Reply(reset=True) if n < 5 else OK,
            events=8000,
        )  # fmt: skip
    finish("sink_resets_mid_body", entry)
    assert sink.kinds()["reset"] == 5
    assert entry["missing_ids"] == 0


@pytest.mark.slow
async def test_sink_with_an_untrusted_certificate(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Without the CA bundle every attempt fails verification (retried, logged at ERROR); the
    events held are counted as abandoned when the agent is stopped. With --ca-bundle they flow."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with trio.fail_after(DEADLINE):
        sink = ScriptedSink()
        port = await nursery.start(functools.partial(sink.run, ssl_context=server_context))
        url = sink_url(port, "https")
        async with agent_process("agent-untrusted", tmp_path, *url, "--grace-period", "1") as agent:
            untrusted = await run_loadgen(tmp_path, "loadgen-1", agent.target, 2000, "--seed", "2")
            await sink.wait_until(lambda: sink.handshake_failures >= 2, within=STEP)
            held = await wait_metrics(
                agent, lambda c: c.consecutive_failures >= 2, within=STEP, what="TLS failures"
            )
            final = await agent.stop()
            log = agent.proc.stderr()
        assert "CERTIFICATE_VERIFY_FAILED" in log
        assert final.delivered == final.dropped == 0
        assert final.abandoned == held.received == len(untrusted.acked_ids)
        async with agent_process(
            "agent-trusted", tmp_path, *url, "--ca-bundle", str(bundle)
        ) as agent:
            trusted = await run_loadgen(tmp_path, "loadgen-2", agent.target, 2000, "--seed", "3")
            _, drops = await settle_and_stop(agent)
    entry = ledger(
        [untrusted, trusted],
        sink.ids,
        {**drops, "shutdown_abandoned (untrusted run)": final.abandoned},
        fault="TLS certificate not trusted (no --ca-bundle), then trusted (--ca-bundle)",
        tls_handshake_failures=sink.handshake_failures,
    )
    finish("sink_tls_untrusted", entry)
    assert entry["delivered_ids"] == len(trusted.acked_ids)


@pytest.mark.slow
async def test_sink_down_for_a_while_then_back(tmp_path: Path) -> None:
    """The real collector is stopped mid-stream and started again on the same port and file."""
    db = tmp_path / "events.db"
    with trio.fail_after(DEADLINE):
        async with collector_process("collector-1", tmp_path, db) as (collector, port):
            run, drops, down = await _collector_outage(tmp_path, db, collector, port)
    entry = ledger(
        [run], collector_ids(db), drops,
        fault="collector stopped mid-stream, restarted on the same port and database",
        failed_attempts_while_down=down.consecutive_failures,
    )  # fmt: skip
    finish("sink_down_then_back", entry)
    assert entry["missing_ids"] == 0


async def _collector_outage(
    tmp_path: Path, db: Path, collector: Proc, port: int
) -> tuple[LoadgenResult, dict[str, int], AgentCounters]:
    async with agent_process("agent", tmp_path, *sink_url(port)) as agent:
        ids = tmp_path / "loadgen.ids"
        argv = loadgen_args(agent.target, 8000, ids, *LOADGEN, "--seed", "4", "--rate", "2000")
        async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
            await wait_metrics(agent, lambda c: c.published > 0, within=STEP, what="a delivery")
            assert await collector.stop() == 0
            down = await wait_metrics(
                agent, lambda c: c.consecutive_failures >= 3, within=STEP, what="failures"
            )
            async with collector_process("collector-2", tmp_path, db, port=port) as (again, _):
                run = await finish_loadgen(loadgen, ids)
                counters, drops = await settle_and_stop(agent)
                assert await again.stop() == 0
    # Each delivered event was stored or recognised as a duplicate (a batch whose answer was
    # lost when the collector stopped is sent again, and recognised).
    taken = sum(sum(collector_counts(c)[:2]) for c in (collector, again))
    assert taken >= counters.published, (taken, counters)
    return run, drops, down


# --- the agent or the aggregator link fails --------------------------------------------------


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
async def test_agent_killed_mid_stream_and_restarted(
    tmp_path: Path, nursery: trio.Nursery, spool: bool
) -> None:
    """SIGKILL loses what the agent held in memory, and exactly that: the acknowledged ids that
    never arrived are as many as its last /metrics showed it holding. With --spool: none."""
    spool_args = ("--spool", str(tmp_path / "spool")) if spool else ()
    sink = ScriptedSink()
    with trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        ids = tmp_path / "loadgen.ids"
        async with agent_process("agent-1", tmp_path, *sink_url(port), *spool_args) as first:
            argv = loadgen_args(
                first.target, 12_000, ids, *LOADGEN, "--seed", "5", "--rate", "2000"
            )
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                await sink.wait_until(lambda: len(sink.ids) >= 300, within=STEP)
                sink.script = lambda n: Reply(503)  # the agent starts holding what it receives
                await wait_metrics(first, lambda c: c.held >= 300, within=STEP, what="a backlog")
                # Freeze the sender so that nothing is in flight towards the agent, then wait
                # until the agent's counts stop moving: then "held" is exact.
                loadgen.send(signal.SIGSTOP)
                try:
                    before = await wait_metrics(first, lambda c: True, within=STEP, what="metrics")
                    while True:
                        now = await wait_metrics(first, lambda c: True, within=STEP, what="metrics")
                        if (now.received, now.published, now.unread) == (
                            before.received, before.published, before.unread,
                        ):  # fmt: skip
                            break
                        before = now
                    first.proc.send(signal.SIGKILL)
                    assert await first.proc.wait(within=STEP) == -signal.SIGKILL
                finally:
                    loadgen.send(signal.SIGCONT)
                held = now.held
                async with agent_process(
                    "agent-2", tmp_path, *sink_url(port), *spool_args, port=first.grpc_port
                ) as second:
                    sink.script = lambda n: OK
                    resumed = second.resumed
                    run = await finish_loadgen(loadgen, ids)
                    _, drops = await settle_and_stop(second)
    if not spool:
        drops["held_by_sigkilled_agent (its last /metrics)"] = held
    entry = ledger(
        [run], sink.ids, drops,
        fault=f"agent SIGKILLed mid-stream, restarted on the same port ({'spool' if spool else 'no spool'})",
        held_at_kill=held, resumed_from_spool_at_restart=resumed,
    )  # fmt: skip
    finish(f"agent_sigkill_{'spool' if spool else 'memory'}", entry)
    assert held > 0
    if spool:
        assert entry["missing_ids"] == 0
    else:
        assert entry["missing_ids"] == held


async def _aggregator_outage(tmp_path: Path, ring: int) -> dict[str, Any]:
    db = tmp_path / "events.db"
    async with collector_process("collector", tmp_path, db) as (collector, port):
        ids = tmp_path / "loadgen.ids"
        async with agent_process("agent-1", tmp_path, *sink_url(port)) as first:
            argv = loadgen_args(
                first.target, 8000, ids, *LOADGEN, "--seed", "6", "--rate", "2000",
                "--max-queued-events", str(ring),
            )  # fmt: skip
            async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
                await wait_metrics(first, lambda c: c.received > 0, within=STEP, what="an export")
                first_final = await first.stop()
                assert first_final.abandoned == 0, first_final  # the ordered shutdown drained
                # The recorder keeps recording and retrying while nobody listens.
                await loadgen.wait_for(
                    r"export failed: reason=unavailable", within=STEP, stream="err"
                )
                if ring < 2000:
                    await loadgen.wait_for(r"dropped events: reason=", within=STEP, stream="err")
                async with agent_process(
                    "agent-2", tmp_path, *sink_url(port), port=first.grpc_port
                ) as second:
                    run = await finish_loadgen(loadgen, ids)
                    counters, drops = await settle_and_stop(second)
        assert await collector.stop() == 0
    stored, duplicates, _ = collector_counts(collector)
    assert stored == len(collector_ids(db))
    # What both agents say they delivered is what the collector took.
    assert first_final.delivered + counters.published == stored + duplicates
    if first_final.dropped:
        drops["dropped_by_first_agent"] = first_final.dropped
    return ledger(
        [run], collector_ids(db), drops,
        fault=f"agent stopped while the recorder (ring {ring}) records 2000 events/s, then back",
    )  # fmt: skip


@pytest.mark.slow
async def test_aggregator_down_recorder_keeps_and_retries(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        entry = await _aggregator_outage(tmp_path, ring=20_000)
    finish("aggregator_down_ring_holds", entry)
    assert entry["missing_ids"] == 0
    assert not entry["dropped"]


@pytest.mark.slow
async def test_aggregator_down_recorder_ring_overflows_counted(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        entry = await _aggregator_outage(tmp_path, ring=500)
    finish("aggregator_down_ring_overflows", entry)
    assert entry["missing_ids"] == 0
    assert sum(v for k, v in entry["dropped"].items() if k.startswith("recorder:")) > 0


# --- the agent's buffer overflows -----------------------------------------------------------


async def _buffer_full(tmp_path: Path, nursery: trio.Nursery, on_full: str) -> dict[str, Any]:
    """The sink refuses (503) while a closed-loop loadgen fills a 1000-event agent buffer."""
    sink = ScriptedSink(lambda n: Reply(503))
    port = await nursery.start(sink.run)
    args = ("--buffer-size", "1000", "--on-full", on_full, "--max-batch-size", "200")
    async with agent_process("agent", tmp_path, *sink_url(port), *args) as agent:
        ids = tmp_path / "loadgen.ids"
        # The recorder's ring (and so its largest request) fits in the agent's buffer.
        argv = loadgen_args(
            agent.target, 6000, ids, *LOADGEN, "--seed", "7", "--max-queued-events", "500"
        )
        async with spawn("loadgen", *argv, cwd=tmp_path) as loadgen:
            if on_full == "reject":
                full = await wait_metrics(
                    agent, lambda c: c.rejected > 0, within=STEP, what="a rejection"
                )
            else:
                full = await wait_metrics(
                    agent, lambda c: c.evicted > 0, within=STEP, what="an eviction"
                )
            sink.script = lambda n: OK
            run = await finish_loadgen(loadgen, ids)
            counters, drops = await settle_and_stop(agent)
    assert counters.published == sink_events(sink)
    return ledger(
        [run], sink.ids, drops,
        fault=f"agent buffer of 1000 full while the sink answers 503 (--on-full {on_full})",
        rejected_events=counters.rejected, evicted_events=counters.evicted,
        first_overflow_seen=full.rejected or full.evicted,
    )  # fmt: skip


@pytest.mark.slow
async def test_agent_buffer_full_drop_oldest_counts_evictions(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(DEADLINE):
        entry = await _buffer_full(tmp_path, nursery, "drop_oldest")
    finish("agent_buffer_full_drop_oldest", entry)
    assert entry["dropped"]["agent:evicted_from_buffer"] == entry["missing_ids"] > 0


async def test_agent_buffer_full_reject_is_lossless(tmp_path: Path, nursery: trio.Nursery) -> None:
    with trio.fail_after(DEADLINE):
        entry = await _buffer_full(tmp_path, nursery, "reject")
    finish("agent_buffer_full_reject", entry)
    assert entry["rejected_events"] > 0
    assert entry["missing_ids"] == 0
    assert not entry["dropped"]


# --- known bugs: a request the agent can never accept is retried forever ---------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "agent_args",
    [
        pytest.param(("--max-message-bytes", "100000"), id="request-above-max-message-bytes"),
        pytest.param(("--buffer-size", "500", "--on-full", "reject"), id="batch-above-buffer"),
    ],
)
async def test_request_the_agent_can_never_accept(
    tmp_path: Path, nursery: trio.Nursery, agent_args: tuple[str, ...]
) -> None:
    """A 3000-event batch (about 360 kB, about 1100 merged events) is more than the agent can
    ever take in one request: it answers RESOURCE_EXHAUSTED, the recorder halves its requests
    until they fit, and nothing is lost."""
    sink = ScriptedSink()
    with trio.fail_after(DEADLINE):
        port = await nursery.start(sink.run)
        async with agent_process("agent", tmp_path, *sink_url(port), *agent_args) as agent:
            run = await run_loadgen(
                tmp_path, "loadgen", agent.target, 3000, "--seed", "8", "--flush-timeout", "4"
            )
            _, drops = await settle_and_stop(agent)
    entry = ledger([run], sink.ids, drops)
    check_ledger(entry)  # the drops are counted: the failure is the loss itself
    assert run.dropped == 0, (run.dropped_by_reason, agent.proc.stderr()[-500:])
