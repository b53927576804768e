"""One suite over both stores: the same events give the same query and history answers.

Every test runs against SQLite and against a real PostgreSQL server (tests/pg.py starts one per
test session); the comparison tests also check that both stores answer exactly alike.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from tests import ray_event_samples as s
from tests.test_history_api import store_events
from tests.test_query import query_batches
from trio_events._cli._main import parse
from trio_events._cli._query import run_query
from trio_events.store._backend import open_reader
from trio_events.store._chrome_trace import chrome_trace, job_attempts
from trio_events.store._history_api import RESOURCES, answer
from trio_events.store._history_index import HistoryIndex
from trio_events.store._postgres import PostgresOptions, PostgresStore
from trio_events.store._query import counts, failed_tasks, recent_entities, timeline
from trio_events.store._sqlite import EventStore

Writer = EventStore | PostgresStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_name(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return str(request.getfixturevalue("pg_url"))


def open_writer(name: str) -> Writer:
    if name.startswith("postgresql://"):
        return PostgresStore.open_sync(name, PostgresOptions(pool_size=2))
    return EventStore(name)


def fill(name: str, batches: list[list[dict[str, Any]]]) -> str:
    store = open_writer(name)
    try:
        for batch in batches:
            store.insert_batch_sync(batch)
    finally:
        store.close()
    return name


@pytest.fixture
def both(tmp_path: Any, pg_url: str) -> dict[str, str]:
    """The same query events in an SQLite file and in a PostgreSQL database."""
    names = {"sqlite": str(tmp_path / "q.db"), "postgresql": pg_url}
    for name in names.values():
        fill(name, query_batches())
    return names


def _counts(result: Any) -> tuple[int, int]:
    return result.inserted, result.duplicates


def test_duplicates_are_stored_once_and_a_bad_event_is_refused_alone(store_name: str) -> None:
    store = open_writer(store_name)
    try:
        first = [s.task_definition(1, s.TASK_ID, 0, "a", "2025-10-24T21:12:10Z")]
        second = [*first, s.task_definition(2, s.TASK_ID_2, 0, "b", "2025-10-24T21:12:11Z")]
        assert _counts(store.insert_batch_sync(first)) == (1, 0)
        assert _counts(store.insert_batch_sync(second)) == (1, 1)
        # The same id twice in one batch is one row, one duplicate.
        again = s.task_definition(3, s.TASK_ID, 1, "c", "2025-10-24T21:12:12Z")
        assert _counts(store.insert_batch_sync([again, again])) == (1, 1)
        twice = s.task_lifecycle(5, s.TASK_ID, 1, [("RUNNING", "2025-10-24T21:12:13Z")])
        changed = s.task_lifecycle(5, s.TASK_ID, 1, [("FAILED", "2025-10-24T21:12:14Z")])
        assert _counts(store.insert_batch_sync([twice, changed, twice])) == (1, 2)
        result = store.insert_batch_sync(
            [s.task_definition(4, s.TASK_ID, 2, "d", "2025-10-24T21:12:15Z"), {"x": 1}]
        )
        assert _counts(result) == (1, 0)
        [refused] = result.refused
        assert (refused.index, refused.reason) == (1, "missing_event_id")
        assert refused.message.startswith("Event 1 has no eventId")
        assert store.count_sync() == 5
    finally:
        store.close()
    states = timeline(store_name, "task", s.TASK_ID.hex(), attempt=1).transitions
    assert [t.state for t in states] == ["RUNNING"]  # the first copy's transitions


def test_nul_characters_are_stored(store_name: str) -> None:
    event = s.task_definition(1, s.TASK_ID, 0, "a\x00b", "2025-10-24T21:12:10Z")
    fill(store_name, [[event]])
    reader = open_reader(store_name)
    try:
        stored = reader.fetchall("SELECT json FROM events")
        assert orjson.loads(stored[0][0]) == event  # the JSON keeps the character itself
    finally:
        reader.close()


def test_prune_deletes_whole_old_sessions(store_name: str) -> None:
    store = open_writer(store_name)
    try:
        store.insert_batch_sync(query_batches()[1])
        assert store.prune_sync(time.time_ns() - 3600 * 10**9) == 0  # nothing an hour old
        assert store.count_sync() > 0
        assert store.prune_sync(time.time_ns() + 10**9) == 1
        assert store.count_sync() == 0
    finally:
        store.close()
    assert counts(store_name).total == 0
    assert failed_tasks(store_name) == []  # the transitions went with the events


def test_counts_and_queries_agree(both: dict[str, str]) -> None:
    results = {
        backend: (
            counts(name),
            timeline(name, "task", s.TASK_ID.hex()),
            timeline(name, "task", s.TASK_ID.hex(), attempt=0),
            timeline(name, "actor", s.ACTOR_ID.hex()),
            timeline(name, "worker", s.WORKER_ID.hex()),
            failed_tasks(name),
            recent_entities(name),
            recent_entities(name, "task", limit=2),
        )
        for backend, name in both.items()
    }
    assert results["sqlite"] == results["postgresql"]
    total, task, attempt0, actor, _, failures, recent, _ = results["postgresql"]
    assert total.total == 13
    assert [t.state for t in attempt0.transitions][-1] == "FAILED"
    assert len(task.transitions) > len(attempt0.transitions)
    assert [t.state for t in actor.transitions] == ["ALIVE", "DEAD"]
    assert [(f.task_id, f.error_type) for f in failures] == [
        (s.TASK_ID.hex(), "TASK_EXECUTION_EXCEPTION"),
        (s.TASK_ID_2.hex(), "WORKER_DIED"),
    ]
    assert len(recent) == 7


def _history_answers(name: str) -> dict[str, object]:
    index = HistoryIndex(name)
    try:
        index.refresh()
        out: dict[str, object] = {"sessions": index.sessions}
        for session in (None, *(s_.name for s_ in index.sessions)):
            for path in ("tasks", "tasks/summarize", "actors/summarize", *RESOURCES):
                for query in ("", "detail=true", "filter_keys=state&filter_predicates=%3D&"
                              "filter_values=FAILED"):  # fmt: skip
                    out[f"{session} {path} {query}"] = answer(index, session, path, query)
            out[f"trace {session}"] = chrome_trace(index, job_attempts(index, session, None))
        return out
    finally:
        index.close()


def test_history_answers_agree(tmp_path: Any, pg_url: str) -> None:
    names = {"sqlite": str(tmp_path / "h.db"), "postgresql": pg_url}
    events = store_events()
    for name in names.values():
        fill(name, [events[:3], events[3:]])
    sqlite_answers = _history_answers(names["sqlite"])
    assert sqlite_answers == _history_answers(names["postgresql"])
    tasks = sqlite_answers["None tasks detail=true"]
    assert isinstance(tasks, tuple)
    status, body = tasks
    assert status == 200
    assert orjson.loads(body)["data"]["result"]["total"] >= 2


def test_history_follows_new_events(store_name: str) -> None:
    events = store_events()
    fill(store_name, [events[:2]])
    index = HistoryIndex(store_name)
    try:
        assert index.refresh() == 2
        fill(store_name, [events[2:]])
        assert index.refresh() == len(events) - 2
        assert index.refresh() == 0
    finally:
        index.close()


def test_query_command_reads_either_store(both: dict[str, str], capsys: Any) -> None:
    printed = []
    for name in both.values():
        assert run_query(parse(["query", "--store", name, "failed"], {})) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]
    assert "TASK_EXECUTION_EXCEPTION" in printed[0]
