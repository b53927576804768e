from __future__ import annotations

import json
import re

import pytest

from tests import ray_event_samples as s
from trio_events._cli._main import parse
from trio_events._cli._query import run_query
from trio_events.store._query import (
    counts,
    failed_tasks,
    format_counts,
    format_failed_tasks,
    format_table,
    format_timeline,
    normalize_kind,
    recent_entities,
    timeline,
    to_json,
)
from trio_events.store._sqlite import EventStore

T = "2025-10-24T21:12:1{}.{}Z"  # T.format(second digit, fraction)
TRACEBACK = (
    "ray::train_step() (pid=4242, ip=127.0.0.1)\n"
    '  File "train.py", line 7, in train_step\n'
    "    raise ValueError('loss is NaN')\n"
    "ValueError: loss is NaN"
)


def query_batches() -> list[list[dict[str, object]]]:
    """One cluster's worth of events in awkward batches and orders (also used by
    tests/test_store_backends.py to compare SQLite with PostgreSQL)."""
    # Task 1, attempt 0: three partial lifecycle events arrive out of order (the FAILED one
    # first), and the middle one's own transitions are out of order too, as in Ray's docs.
    failed = s.task_lifecycle(
        10,
        s.TASK_ID,
        0,
        [("FAILED", T.format(5, "5"))],
        error=("TASK_EXECUTION_EXCEPTION", TRACEBACK),
    )
    running = s.task_lifecycle(
        11, s.TASK_ID, 0, [("SUBMITTED_TO_WORKER", T.format(2, "2")), ("RUNNING", T.format(3, "3"))]
    )
    pending = s.task_lifecycle(
        12, s.TASK_ID, 0,
        [("PENDING_NODE_ASSIGNMENT", T.format(1, "1")), ("PENDING_ARGS_AVAIL", T.format(0, "000000001"))],
    )  # fmt: skip
    # A re-sent partial event with a new id repeats the RUNNING transition.
    resent = s.task_lifecycle(13, s.TASK_ID, 0, [("RUNNING", T.format(3, "3"))])
    batches = [
        [s.task_definition(1, s.TASK_ID, 0, "train_step", T.format(0, "0"))],
        [failed, running],
        [pending, resent],
        # Attempt 1 (the retry) finishes; task 2 fails without a traceback.
        [
            s.task_lifecycle(14, s.TASK_ID, 1, [("RUNNING", T.format(6, "0")), ("FINISHED", T.format(7, "0"))]),
            s.task_definition(2, s.TASK_ID_2, 0, "load_shard", T.format(0, "5")),
            s.task_lifecycle(15, s.TASK_ID_2, 0, [("FAILED", T.format(4, "0"))], error=("WORKER_DIED", "The worker died.")),
        ],
        [
            s.actor_definition(20, T.format(0, "0")),
            s.actor_lifecycle(21, [
                {"state": "ALIVE", "timestamp": T.format(1, "0"), "nodeId": s.b64(s.NODE_ID), "workerId": s.b64(s.WORKER_ID)},
                {"state": "DEAD", "timestamp": T.format(8, "0"), "deathCause": {"actorDiedErrorContext": {
                    "errorMessage": "The actor was killed by ray.kill.", "reason": "RAY_KILL"}}},
            ]),
            s.job_lifecycle(30, [("CREATED", T.format(0, "0")), ("FINISHED", T.format(9, "0"))]),
            s.node_definition(40, T.format(0, "0")),
            s.to_snake(s.worker_lifecycle(50, [{"state": "ALIVE", "timestamp": T.format(0, "5")}])),
        ],
    ]  # fmt: skip
    return batches


@pytest.fixture
def store_path(tmp_path):
    """A store holding one cluster's worth of events, inserted in awkward batches and orders."""
    path = tmp_path / "events.db"
    with EventStore(path) as store:
        for batch in query_batches():
            store.insert_batch_sync(batch)
    return path


def test_counts_by_event_type_and_source_type(store_path):
    result = counts(store_path)
    assert result.total == 13
    by_type = {c.key: c.count for c in result.by_event_type}
    assert by_type == {
        "TASK_LIFECYCLE_EVENT": 6,
        "TASK_DEFINITION_EVENT": 2,
        "ACTOR_DEFINITION_EVENT": 1,
        "ACTOR_LIFECYCLE_EVENT": 1,
        "DRIVER_JOB_LIFECYCLE_EVENT": 1,
        "NODE_DEFINITION_EVENT": 1,
        "WORKER_LIFECYCLE_EVENT": 1,
    }
    assert result.by_event_type[0].key == "TASK_LIFECYCLE_EVENT"  # largest first
    assert {c.key: c.count for c in result.by_source_type} == {
        "CORE_WORKER": 8,
        "GCS": 4,
        "RAYLET": 1,
    }


def test_task_timeline_merges_partial_events_in_time_order(store_path):
    result = timeline(store_path, "task", s.TASK_ID.hex(), attempt=0)
    assert result.entity_id == s.TASK_ID.hex()
    assert result.name == "train_step"
    assert result.event_count == 5  # definition + four lifecycle events
    assert [t.state for t in result.transitions] == [
        "PENDING_ARGS_AVAIL",
        "PENDING_NODE_ASSIGNMENT",
        "SUBMITTED_TO_WORKER",
        "RUNNING",  # carried twice, shown once
        "FAILED",
    ]
    failed = result.transitions[-1]
    assert failed.error_type == "TASK_EXECUTION_EXCEPTION"
    assert failed.error_message == TRACEBACK
    assert failed.event_id == (10).to_bytes(28, "big").hex()
    assert {t.node_id for t in result.transitions} == {s.NODE_ID.hex()}
    assert all(t.error_message == "" for t in result.transitions[:-1])


def test_task_timeline_accepts_base64_ids_and_merges_attempts(store_path):
    result = timeline(store_path, "task", s.b64(s.TASK_ID))
    assert [(t.attempt, t.state) for t in result.transitions][-3:] == [
        (0, "FAILED"),
        (1, "RUNNING"),
        (1, "FINISHED"),
    ]


def test_actor_timeline_carries_per_transition_details(store_path):
    result = timeline(store_path, "actor", s.ACTOR_ID.hex())
    alive, dead = result.transitions
    assert result.name == "actor-test"
    assert (alive.state, alive.node_id, alive.worker_id) == (
        "ALIVE",
        s.NODE_ID.hex(),
        s.WORKER_ID.hex(),
    )
    assert (dead.state, dead.error_type) == ("DEAD", "RAY_KILL")
    assert dead.error_message == "The actor was killed by ray.kill."


def test_timeline_of_snake_case_events(store_path):
    result = timeline(store_path, "worker", s.WORKER_ID.hex())
    assert [t.state for t in result.transitions] == ["ALIVE"]


def test_timeline_of_unknown_entity_is_empty(store_path):
    result = timeline(store_path, "job", "ffffffff")
    assert (result.event_count, result.transitions) == (0, ())
    assert format_timeline(result) == "No events for job ffffffff."


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match=r"^Unknown entity kind 'tsak'; use one of task, .*\.$"):
        normalize_kind("tsak")
    assert normalize_kind("PG") == "placement_group"


def test_failed_tasks_with_their_errors(store_path):
    result = failed_tasks(store_path)
    assert [(f.task_id, f.attempt, f.name, f.error_type) for f in result] == [
        (s.TASK_ID.hex(), 0, "train_step", "TASK_EXECUTION_EXCEPTION"),  # failed latest
        (s.TASK_ID_2.hex(), 0, "load_shard", "WORKER_DIED"),
    ]
    assert result[0].error_message == TRACEBACK
    assert result[0].failed_at == T.format(5, "5")
    assert (result[0].job_id, result[0].worker_id) == (s.JOB_ID.hex(), s.WORKER_ID.hex())
    assert len(failed_tasks(store_path, limit=1)) == 1


def test_recent_entities_with_latest_state(store_path):
    result = recent_entities(store_path, limit=3)
    assert [(e.kind, e.last_state) for e in result] == [
        ("job", "FINISHED"),
        ("actor", "DEAD"),
        ("task", "FINISHED"),
    ]
    tasks = recent_entities(store_path, kind="task")
    assert [(e.entity_id, e.attempt, e.last_state) for e in tasks] == [
        (s.TASK_ID.hex(), 1, "FINISHED"),
        (s.TASK_ID.hex(), 0, "FAILED"),
        (s.TASK_ID_2.hex(), 0, "FAILED"),
    ]
    assert tasks[1].name == "train_step"
    assert tasks[1].event_count == 5


def test_format_table_aligns_columns():
    table = format_table(["NAME", "N"], [("a", 1), ("longer", 100), ("b", None)])
    assert table.splitlines() == [
        "NAME      N",
        "------  ---",
        "a         1",
        "longer  100",
        "b         -",
    ]


def test_text_output(store_path):
    text = format_counts(counts(store_path))
    assert any(re.match(r"^TASK_LIFECYCLE_EVENT +6$", line) for line in text.splitlines())
    assert text.endswith("13 events in total.")
    lines = format_timeline(timeline(store_path, "task", s.TASK_ID.hex(), attempt=0)).splitlines()
    assert (
        lines[0] == f"task {s.TASK_ID.hex()} attempt 0 (train_step): 5 transitions from 5 events."
    )
    assert re.match(r"^TIME +ATTEMPT +STATE +EVENT +NODE +WORKER +ERROR$", lines[2])
    assert lines[-1].endswith("TASK_EXECUTION_EXCEPTION ValueError: loss is NaN")
    assert "PENDING_ARGS_AVAIL" in lines[4]
    failed = format_failed_tasks(failed_tasks(store_path)).splitlines()
    assert failed[2].endswith("train_step  TASK_EXECUTION_EXCEPTION  ValueError: loss is NaN")


def test_json_output(store_path):
    data = json.loads(to_json(timeline(store_path, "actor", s.b64(s.ACTOR_ID))))
    assert data["entity_id"] == s.ACTOR_ID.hex()
    assert [t["state"] for t in data["transitions"]] == ["ALIVE", "DEAD"]
    rows = json.loads(to_json(failed_tasks(store_path)))
    assert rows[1]["error_message"] == "The worker died."


def _query_args(*argv):
    return parse(["query", *argv], {})


def test_query_command(store_path, capsys):
    assert run_query(_query_args("--db", str(store_path))) == 0
    assert capsys.readouterr().out.endswith("13 events in total.\n")
    args = _query_args(
        "timeline", "task", s.b64(s.TASK_ID), "--attempt", "1", "--db", str(store_path), "--json"
    )
    assert run_query(args) == 0
    assert [t["state"] for t in json.loads(capsys.readouterr().out)["transitions"]] == [
        "RUNNING",
        "FINISHED",
    ]
    assert run_query(_query_args("--json", "--db", str(store_path), "failed", "--limit", "1")) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert run_query(_query_args("--db", str(store_path), "recent", "--kind", "node")) == 0
    assert "head" in capsys.readouterr().out


def test_query_command_errors(tmp_path, store_path, capsys):
    missing = tmp_path / "nope.db"
    with pytest.raises(ValueError, match=r"^there is no event store at .*nope\.db; run `trio"):
        run_query(_query_args("--db", str(missing)))
    assert run_query(_query_args("--db", str(store_path), "timeline", "actor", "00" * 16)) == 1
    assert capsys.readouterr().err == f"No events for actor {'00' * 16}.\n"
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello")
    with pytest.raises(ValueError, match=r"is not an SQLite database"):
        run_query(_query_args("--db", str(not_a_store)))
    with pytest.raises(ValueError, match=r"^Unknown entity kind 'tsak'"):
        run_query(_query_args("timeline", "tsak", "00"))


def test_a_bad_id_is_refused_not_decoded(store_path):
    """Regression: 'zzzz' is valid base64 (3 bytes) and was looked up as task cf3cf3."""
    with pytest.raises(ValueError, match=r"^'zzzz' is not a task ID: give 48 hex digits or the"):
        run_query(_query_args("--db", str(store_path), "timeline", "task", "zzzz"))
    with pytest.raises(ValueError, match=r"^'00' is not a actor ID"):
        run_query(_query_args("--db", str(store_path), "timeline", "actor", "00"))
    # Submission IDs are text: anything goes.
    assert run_query(_query_args("--db", str(store_path), "timeline", "submission", "zz")) == 1
