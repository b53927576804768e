"""The fuzz suite's settings, its tally of inputs tried, and the real processes it attacks.

``TRIO_EVENTS_FUZZ=full`` (what ``nox -s fuzz`` sets) selects the ``trio-events-fuzz-full``
hypothesis profile, many examples per test; otherwise ``trio-events-fuzz-fast``, a few, for the
default session. The profiles are applied per test (``@FUZZ``), never loaded globally, so the
rest of the suite keeps its own settings. At the end of the session the number of inputs tried
per entry point is printed in pytest's summary and goes to ``bench-results/fuzz.json`` under
the mode's name.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs
import grpc
import httpx
import hypothesis
import pytest

from tests.harness import (
    AgentCounters,
    SyncProc,
    record_result,
    scrape_sync,
    sync_spawn,
    tracebacks,
)
from trio_events import pb
from trio_events._cli._workload import realistic_events

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MODE = "full" if os.environ.get("TRIO_EVENTS_FUZZ") == "full" else "fast"
hypothesis.settings.register_profile(
    "trio-events-fuzz-fast",
    max_examples=40,
    deadline=None,
    derandomize=True,  # the default session must not fail by chance
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.register_profile(
    "trio-events-fuzz-full",
    max_examples=1500,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
FUZZ = hypothesis.settings.get_profile(f"trio-events-fuzz-{MODE}")
#: For the expensive strategies (multi-megabyte messages, CLI runs that start servers).
FUZZ_FEW = hypothesis.settings(FUZZ, max_examples=max(5, FUZZ.max_examples // 10))
CHECK_EVERY = 25  # hostile inputs between two checks that a valid request still succeeds

ADD_EVENTS = "/ray.rpc.events.EventAggregatorService/AddEvents"
MAX_MESSAGE_BYTES = 1 << 20


class Tally:
    """How many inputs each entry point was given, and what it answered."""

    def __init__(self) -> None:
        self.tried: Counter[str] = Counter()
        self.outcomes: dict[str, Counter[str]] = {}

    def add(self, target: str, outcome: str) -> None:
        self.tried[target] += 1
        self.outcomes.setdefault(target, Counter())[outcome] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "mode": MODE,
            "max_examples_per_test": FUZZ.max_examples,
            "inputs_tried": sum(self.tried.values()),
            "by_target": {
                t: {"tried": n, "outcomes": dict(self.outcomes[t])} for t, n in self.tried.items()
            },
        }


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    found = Tally()
    yield found
    summary = found.summary()
    summary["failed_tests"] = request.session.testsfailed
    summary["crashes"] = request.session.testsfailed  # any crash fails its test
    record_result("fuzz", MODE, summary)
    _TALLIES.append(summary)


_TALLIES: list[dict[str, Any]] = []


def format_tally(summary: dict[str, Any]) -> list[str]:
    """The tally as lines for a terminal: the total, then each entry point and its answers."""
    lines = [
        f"fuzz ({summary['mode']}, up to {summary['max_examples_per_test']} examples a test): "
        f"{summary['inputs_tried']} inputs tried, {summary['crashes']} crashes"
    ]
    for target, found in sorted(summary["by_target"].items()):
        answers = ", ".join(f"{k} {n}" for k, n in sorted(found["outcomes"].items()))
        lines.append(f"  {target}: {found['tried']} ({answers})")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for summary in _TALLIES:
        terminalreporter.section("fuzz tally")
        for line in format_tally(summary):
            terminalreporter.write_line(line)


def valid_request(seed: int, count: int = 5) -> pb.AddEventsRequest:
    request = pb.AddEventsRequest()
    for event in realistic_events("mixed", count, seed=seed):
        message = request.events_data.events.add()
        event.serialize_into(message)
        message.node_id = b"F" * 28
    return request


@attrs.define
class Pipeline:
    """A real collector and a real agent publishing to it, attacked by the fuzz tests."""

    agent: SyncProc
    collector: SyncProc
    grpc_port: int
    metrics_port: int
    collector_port: int
    channel: grpc.Channel
    valid_seed: int = 10_000

    @property
    def collector_url(self) -> str:
        return f"http://127.0.0.1:{self.collector_port}"

    def add_events(self, payload: bytes, *, timeout: float = 20.0) -> None:
        method = self.channel.unary_unary(ADD_EVENTS)
        method(payload, timeout=timeout)

    def assert_serving(self) -> None:
        """Both processes alive, and a valid AddEvents and a valid POST still succeed."""
        assert self.agent.alive(), self.agent.describe()
        assert self.collector.alive(), self.collector.describe()
        self.valid_seed += 1
        self.add_events(valid_request(self.valid_seed).SerializeToString())
        response = httpx.get(f"{self.collector_url}/healthz", timeout=10.0, trust_env=False)
        assert response.status_code == 200

    def settled(self, within: float = 300.0) -> AgentCounters:
        deadline = time.monotonic() + within
        while True:
            counters = scrape_sync(self.metrics_port)
            if counters.unread == 0 and counters.in_flight == 0:
                return counters
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not settle: {counters}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory, tally: Tally) -> Iterator[Pipeline]:
    cwd = tmp_path_factory.mktemp("fuzz-pipeline")
    db = cwd / "events.db"
    with sync_spawn(
        "collector", "collect", "--listen", "127.0.0.1:0", "--db", str(db), cwd=cwd
    ) as (collector):
        port = int(
            collector.wait_for(r"Listening on http://127\.0\.0\.1:(\d+)/", within=30).group(1)
        )
        argv = (
            "agent", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            "--export-addr", f"http://127.0.0.1:{port}/v1/events",
            "--exposable-event-types", "ALL", "--max-message-bytes", str(MAX_MESSAGE_BYTES),
            "--max-batch-size", "500", "--linger", "0.02", "--initial-backoff", "0.05",
            "--max-backoff", "0.5", "--max-retries", "3",
        )  # fmt: skip
        with sync_spawn("agent", *argv, cwd=cwd) as agent:
            grpc_port = int(agent.wait_for(r"AddEvents on 127\.0\.0\.1:(\d+)", within=30).group(1))
            metrics = int(
                agent.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/", within=30).group(1)
            )
            options = [("grpc.max_send_message_length", -1), ("grpc.enable_retries", 0)]
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
                found = Pipeline(agent, collector, grpc_port, metrics, port, channel)
                yield found
                found.assert_serving()
                _close_books(found, tally, cwd)


def _close_books(pipeline: Pipeline, tally: Tally, cwd: Path) -> None:
    """Every event the agent accepted is delivered or counted; both stop cleanly."""
    counters = pipeline.settled()
    assert pipeline.agent.stop() == 0, pipeline.agent.describe()
    assert pipeline.collector.stop() == 0, pipeline.collector.describe()
    assert not tracebacks(pipeline.collector.stderr()), pipeline.collector.describe()
    # grpclib logs a client's expired deadline (a hostile grpc-timeout) with a traceback at
    # ERROR; that is noise, not a crash. Any other traceback is a finding.
    agent_tracebacks = tracebacks(pipeline.agent.stderr())
    grpclib_timeouts = agent_tracebacks.pop("ERROR grpclib.server Timeout occurred", 0)
    assert not agent_tracebacks, pipeline.agent.describe()
    final = re.search(r"delivered=(\d+) dropped=(\d+) abandoned=(\d+)", pipeline.agent.stdout())
    assert final is not None, pipeline.agent.describe()
    delivered, dropped, abandoned = (int(g) for g in final.groups())
    stored = re.search(
        r"Stopped: (\d+) events stored, (\d+) duplicates ignored, (\d+) requests rejected",
        pipeline.collector.stdout(),
    )
    assert stored is not None, pipeline.collector.describe()
    assert abandoned == 0
    assert delivered == counters.published
    assert (
        counters.received
        == counters.published
        + counters.filtered
        + sum(counters.dropped.values())
        + counters.evicted
    ), counters
    # What the agent delivered is what the collector took (stored, or already had), or refused
    # alone (an event it cannot store, named in its 200; counted in its final line).
    refused = re.search(r"(\d+) events refused", pipeline.collector.stdout())
    refused_events = int(refused.group(1)) if refused else 0
    assert delivered == int(stored.group(1)) + int(stored.group(2)) + refused_events
    record_result(
        "fuzz",
        f"{MODE}-agent-books",
        {
            "accepted_events": counters.received,
            "delivered": delivered,
            "dropped_by_reason": counters.dropped,
            "refused_requests_by_reason": counters.invalid,
            "collector_stored": int(stored.group(1)),
            "collector_duplicates": int(stored.group(2)),
            "collector_rejected_requests": int(stored.group(3)),
            "collector_refused_events": refused_events,
            "unaccounted": counters.received
            - counters.published
            - counters.filtered
            - counters.evicted
            - sum(counters.dropped.values()),
            "dropped": dropped,
            "grpclib_deadline_tracebacks_logged": grpclib_timeouts,
        },
    )
