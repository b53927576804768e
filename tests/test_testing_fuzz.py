"""`trio-events fuzz-sink` and `fuzz-agent`: a correct receiver passes, the fragile example fails
with a minimal input that replays, and each kind of bad answer is told apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_events._cli._fuzz_targets import Finding, HttpTarget
from trio_events._cli._main import main
from trio_events.store import Collector, CollectorConfig
from trio_events.testing import CapturingReceiver, Reply, start_test_agent

EXAMPLE = Path(__file__).parent.parent / "examples" / "fragile_receiver.py"


async def fuzz(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


async def test_fuzz_sink_passes_against_the_collector(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collector = Collector(CollectorConfig(db_path=str(tmp_path / "events.db"), port=0))
    port = await nursery.start(collector.run)
    save = tmp_path / "failures.json"
    url = f"http://127.0.0.1:{port}/v1/events"
    with trio.fail_after(120):
        code = await fuzz("fuzz-sink", url, "--examples", "25", "--seed", "7", "--save", str(save))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: every answer was a success or backpressure." in out
    assert "25 inputs sent" in out
    assert not save.exists()
    stats = collector.statistics()
    assert stats.accepted_requests == 25
    # 1 to 5 events per batch, each stored or recognised as already stored (same event id).
    assert stats.accepted + stats.duplicates >= 25
    assert stats.rejected_requests == 0


@pytest.fixture
def fragile_receiver():
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Listening on http://127.0.0.1:"), line
        yield line.split()[-1] + "events"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_fuzz_sink_finds_the_planted_bug_with_a_minimal_example(
    fragile_receiver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save = tmp_path / "failures.json"
    with trio.fail_after(120):
        code = await fuzz(
            "fuzz-sink", fragile_receiver, "--examples", "30", "--seed", "1", "--save", str(save)
        )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL 5xx: HTTP 500" in out
    assert "does not match format '%Y-%m-%dT%H:%M:%S.%fZ'" in out
    assert "minimal input: 1 event(s) (1 TASK_DEFINITION_EVENT), camelCase" in out
    assert out.count("; whole-second timestamps") == 1  # the input's class, in the report
    record = json.loads(save.read_text())
    (failure,) = record["failures"]
    assert failure["kind"] == "5xx"
    events = json.loads(failure["body"])
    # Minimal: one event, of the first type, at the epoch (a whole second: no fraction).
    assert len(events) == 1
    assert events[0]["timestamp"] == "1970-01-01T00:00:00Z"
    assert events[0]["eventType"] == "TASK_DEFINITION_EVENT"

    code = await fuzz("fuzz-sink", fragile_receiver, "--replay", str(save))
    out = capsys.readouterr().out
    assert code == 1
    assert "replayed 1 input(s)" in out
    assert "1 still fail" in out


async def test_fuzz_agent_passes_against_our_agent(
    nursery: trio.Nursery,
    trio_events_receiver: CapturingReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent = await start_test_agent(nursery, trio_events_receiver.url)
    save = tmp_path / "failures.json"
    with trio.fail_after(120):
        code = await fuzz(
            "fuzz-agent", agent.target, "--examples", "15", "--seed", "3", "--save", str(save)
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "15 inputs sent" in out
    summary = await agent.stop()
    assert summary is not None
    assert summary.delivered >= 15  # every event went through to the receiver
    assert len(trio_events_receiver.events) == summary.delivered


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(503), "5xx"),
        (Reply(500, body=b"boom"), "5xx"),
        (Reply(400), "refused"),
        (Reply(reset=True), "reset"),
        (Reply(delay=5.0), "timeout"),
        (Reply(302), "malformed_answer"),
    ],
)
async def test_each_bad_answer_is_its_own_kind(
    nursery: trio.Nursery, reply: Reply, kind: str
) -> None:
    receiver = CapturingReceiver(lambda request: reply)
    await nursery.start(receiver.run)
    target = HttpTarget(receiver.url, timeout=0.5)
    try:
        with pytest.raises(Finding) as caught:
            await trio.to_thread.run_sync(target.send, b"[]", ())
    finally:
        target.close()
    assert caught.value.kind == kind


@pytest.mark.parametrize("reply", [Reply(200), Reply(204), Reply(429), Reply(408)])
async def test_success_and_backpressure_pass(nursery: trio.Nursery, reply: Reply) -> None:
    receiver = CapturingReceiver(lambda request: reply)
    await nursery.start(receiver.run)
    target = HttpTarget(receiver.url, timeout=5)
    try:
        await trio.to_thread.run_sync(target.send, b"[]", ())
    finally:
        target.close()
    assert len(receiver.requests) == 1


def test_nothing_listening_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        code = main(["fuzz-sink", f"http://127.0.0.1:{port}/", "--examples", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"trio-events fuzz-sink: error: Nothing answers at 127.0.0.1:{port} (")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fuzz-sink", "ftp://x/"], "URL must be an http:// or https:// address, got 'ftp://x/'."),
        (["fuzz-agent", "nowhere"], "The aggregator address must be HOST:PORT, got 'nowhere'."),
    ],
)
def test_bad_addresses_are_one_sentence(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == f"trio-events {argv[0]}: error: {message}\n"


async def test_max_time_bounds_the_search_and_the_shrink(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = CapturingReceiver(lambda request: Reply(delay=10.0))  # never answers in time
    await nursery.start(receiver.run)
    save = tmp_path / "failures.json"
    argv = ["--examples", "1000", "--max-time", "1", "--timeout", "0.2", "--save", str(save)]
    start = trio.current_time()
    code = await fuzz("fuzz-sink", receiver.url, *argv)
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAIL timeout: no answer within the timeout (ReadTimeout)" in out
    # Search and shrink stop at twice --max-time (plus the request in flight).
    assert trio.current_time() - start < 10  # not 1000 inputs x 0.2 s
    assert json.loads(save.read_text())["failures"][0]["kind"] == "timeout"


@pytest.mark.parametrize(
    "event",
    [
        # After 2262 the nanoseconds overflow int64 (SQLite's INTEGER): was a 500.
        {"eventType": "TASK_DEFINITION_EVENT", "timestamp": "9999-12-31T23:59:59.999999999Z"},
        # A type newer than 2.60 arrives as a number: the whole batch was refused with 400.
        {"eventType": 18, "timestamp": "2025-06-30T16:50:30Z"},
    ],
    ids=["year-9999", "newer-event-type"],
)
async def test_what_fuzz_sink_found_in_the_collector_is_answered_200(
    nursery: trio.Nursery, tmp_path: Path, event: dict[str, object]
) -> None:
    collector = Collector(CollectorConfig(db_path=str(tmp_path / "events.db"), port=0))
    port = await nursery.start(collector.run)
    valid = {
        "eventId": "AQ==",
        "eventType": "NODE_DEFINITION_EVENT",
        "timestamp": "2025-06-30T16:50:30Z",
    }
    body = json.dumps([valid, {"eventId": "Ag==", **event}]).encode()
    target = HttpTarget(f"http://127.0.0.1:{port}/v1/events", timeout=10)
    try:
        await trio.to_thread.run_sync(target.send, body, (("Content-Type", "application/json"),))
    finally:
        target.close()  # target.send raised Finding for anything but 2xx or backpressure
    assert collector.statistics().accepted_requests == 1
