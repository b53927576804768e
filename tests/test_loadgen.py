"""realistic_events shapes, and run_loadgen end to end against the in-process fake aggregator."""

from __future__ import annotations

import argparse
import io
import re
from collections import Counter, defaultdict

import pytest
import trio

from tests.fake_aggregator import FakeAggregator, serve
from tests.fake_client import FakeClient
from trio_events import pb
from trio_events._cli._loadgen import (
    _show_progress,
    realistic_events,
    run_loadgen,
)
from trio_events._cli._main import main, parse
from trio_events._cli._settings import ArgumentError
from trio_events.producer._recorder import RayEventRecorder, RecorderConfig

SUMMARY = re.compile(
    r"^loadgen: events=(\d+) exported=(\d+) dropped=(\d+) failures=(\d+) "
    r"elapsed_s=\d+\.\d{3} events_per_sec=\d+$"
)
RUNNING, SUBMITTED, FINISHED, FAILED = 8, 5, 11, 12


def types_of(events) -> Counter[str]:
    return Counter(pb.EVENT_TYPE_NAMES[e.EVENT_TYPE] for e in events)


def test_mixed_stream_has_a_whole_cluster() -> None:
    events = list(realistic_events("mixed", 20_000, seed=7))
    assert len(events) == 20_000
    counts = types_of(events)
    assert counts["NODE_DEFINITION_EVENT"] == counts["NODE_LIFECYCLE_EVENT"] == 3
    assert counts["DRIVER_JOB_DEFINITION_EVENT"] == counts["DRIVER_JOB_LIFECYCLE_EVENT"] == 1
    assert counts["WORKER_DEFINITION_EVENT"] == counts["WORKER_LIFECYCLE_EVENT"] >= 12
    assert counts["ACTOR_DEFINITION_EVENT"] >= 2
    assert counts["ACTOR_LIFECYCLE_EVENT"] == 3 * counts["ACTOR_DEFINITION_EVENT"]
    assert counts["ACTOR_TASK_DEFINITION_EVENT"] > 100
    assert counts["TASK_DEFINITION_EVENT"] > 1_000
    # Several partial lifecycle events per task attempt.
    assert counts["TASK_LIFECYCLE_EVENT"] > 3 * (
        counts["TASK_DEFINITION_EVENT"] + counts["ACTOR_TASK_DEFINITION_EVENT"]
    )
    assert len({e.event_id for e in events}) == len(events)


def test_task_attempts_arrive_as_ordered_partials_with_realistic_ids() -> None:
    events = list(realistic_events("mixed", 20_000, seed=3))
    partials: dict[tuple[bytes, int], list[pb.TaskLifecycleEvent]] = defaultdict(list)
    for event in events:
        if pb.EVENT_TYPE_NAMES[event.EVENT_TYPE] == "TASK_LIFECYCLE_EVENT":
            payload = event.serialize().task_lifecycle_event
            assert len(payload.state_transitions) == 1
            assert (len(payload.task_id), len(payload.job_id)) == (24, 4)
            partials[payload.task_id, payload.task_attempt].append(payload)
    finished = [p for p in partials.values() if p[-1].state_transitions[0].state == FINISHED]
    assert len(finished) > 500
    assert all(len(p) >= 4 for p in finished)
    for attempt in partials.values():
        stamps = [p.state_transitions[0].timestamp.ToNanoseconds() for p in attempt]
        assert stamps == sorted(stamps)
        for p in attempt:
            if p.state_transitions[0].state == SUBMITTED:
                assert len(p.node_id) == len(p.worker_id) == 28
                assert p.worker_pid > 0
    failed = [p[-1] for p in partials.values() if p[-1].state_transitions[0].state == FAILED]
    assert failed, "some attempts fail"
    for last in failed:
        assert last.ray_error_info.error_type == 3  # TASK_EXECUTION_EXCEPTION
        assert "ValueError" in last.ray_error_info.error_message
    retried = [(t, 1) for (t, a) in partials if a == 0 and (t, 1) in partials]
    assert retried, "failed attempts are retried as attempt 1"


def test_lifecycle_kind_and_seeds() -> None:
    events = list(realistic_events("lifecycle", 5_000, seed=1))
    assert set(types_of(events)) == {"TASK_LIFECYCLE_EVENT"}
    again = list(realistic_events("lifecycle", 5_000, seed=1))

    # Same ids and states; timestamps start at the current time.
    def shape(event):
        p = event.serialize().task_lifecycle_event
        return event.event_id, p.task_id, p.task_attempt, p.state_transitions[0].state

    assert [shape(e) for e in events[:200]] == [shape(e) for e in again[:200]]
    assert list(realistic_events("mixed", 0)) == []
    with pytest.raises(ValueError, match=r"^kind must be one of mixed, lifecycle, got 'x'\.$"):
        realistic_events("x", 1)


async def test_merged_export_keeps_each_attempts_transitions_in_order() -> None:
    client = FakeClient()
    recorder = RayEventRecorder(RecorderConfig(), client, node_id=b"N" * 28)
    recorder.add_many(realistic_events("mixed", 5_000, seed=11))
    assert await recorder.flush()
    [request] = client.acked
    merged = [e for e in request.events_data.events if e.HasField("task_lifecycle_event")]
    assert len(merged) < 5_000 / 3  # partials merged per attempt
    for event in merged:
        stamps = [t.timestamp.ToNanoseconds() for t in event.task_lifecycle_event.state_transitions]
        assert stamps == sorted(stamps)
    assert recorder.statistics().exported == 5_000


def loadgen_args(*argv: str) -> argparse.Namespace:
    return parse(["loadgen", *argv], {})


@pytest.mark.parametrize("rate", [None, "40000"])
async def test_run_loadgen_end_to_end(tmp_path, capsys, rate) -> None:
    servicer = FakeAggregator()
    ids_file = tmp_path / "ids.txt"
    with trio.fail_after(30):
        async with serve(servicer) as port:
            argv = ["--target", f"127.0.0.1:{port}", "--events", "4000", "--seed", "5"]
            token_file = tmp_path / "token"
            token_file.write_text("s3cret\n")
            argv += ["--batch-interval", "0.02", "--ids-out", str(ids_file)]
            argv += ["--token-file", str(token_file)]
            if rate is not None:
                argv += ["--rate", rate]
            status = await run_loadgen(loadgen_args(*argv))
    assert status == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, last
    events, exported, dropped, failures = map(int, match.groups())
    assert (events, exported, dropped, failures) == (4000, 4000, 0, 0)
    written = ids_file.read_text().split()
    assert written
    assert all(len(line) == 56 for line in written)
    assert {bytes.fromhex(line) for line in written} == set(servicer.event_ids)
    assert len(servicer.event_ids) == len(set(servicer.event_ids))
    assert {r.metadata["authorization"] for r in servicer.received} == {"Bearer s3cret"}


async def test_progress_line_is_rewritten_in_place(autojump_clock) -> None:
    recorder = RayEventRecorder(RecorderConfig(), FakeClient(), node_id=b"N" * 28)
    recorder.add_many(realistic_events("lifecycle", 10, seed=1))
    out = io.StringIO()
    with trio.move_on_after(1.2):
        await _show_progress(recorder, out)
    lines = out.getvalue().split("\r")
    assert lines[0] == ""
    assert len(lines) == 3  # two refreshes, each starting at the beginning of the line
    assert lines[1].startswith("loadgen: added=10 exported=0 rate=")
    assert out.getvalue().endswith("\n")


async def test_run_loadgen_counts_what_an_unreachable_aggregator_costs(capsys) -> None:
    async with serve(FakeAggregator()) as port:
        pass  # nothing listens on this port any more
    argv = ["--target", f"127.0.0.1:{port}", "--events", "50", "--rate", "100000"]
    argv += ["--batch-interval", "0.02", "--flush-timeout", "0.2"]
    with trio.fail_after(30):
        status = await run_loadgen(loadgen_args(*argv))
    assert status == 1
    match = SUMMARY.match(capsys.readouterr().out.strip().splitlines()[-1])
    assert match
    events, exported, dropped, failures = map(int, match.groups())
    assert (events, exported, dropped) == (50, 0, 50)
    assert failures >= 1


def test_loadgen_reports_a_bad_target_in_one_sentence(capsys) -> None:
    assert main(["loadgen", "--target", "nowhere", "--events", "1"]) == 2
    assert capsys.readouterr().err == (
        "trio-events loadgen: error: target 'nowhere' is not HOST:PORT; pass e.g. "
        "127.0.0.1:50051 or [::1]:50051.\n"
    )


def test_arguments_validate_numbers() -> None:
    with pytest.raises(ArgumentError, match=r"^argument --events: expected a whole number"):
        loadgen_args("--target", "h:1", "--events", "0")
