"""The indexed list path gives exactly what Ray's plain filter over every row would give."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_events._cli._workload import realistic_events
from trio_events.agent._convert import JsonConverter
from trio_events.store._history_api import ListOptions, _matches, select_tasks
from trio_events.store._history_index import HistoryIndex
from trio_events.store._history_rows import task_row
from trio_events.store._sqlite import EventStore

if TYPE_CHECKING:
    from collections.abc import Iterator

COLUMNS = [
    "state",
    "job_id",
    "node_id",
    "worker_id",
    "name",
    "type",
    "attempt_number",
    "error_type",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryIndex]:
    path = tmp_path_factory.mktemp("filters") / "events.db"
    converter = JsonConverter()
    events = [converter.to_dict(e.serialize()) for e in realistic_events("mixed", 3000, seed=3)]
    # One driver task, which exclude_driver must leave out.
    definition = next(e for e in events if e["eventType"] == "TASK_DEFINITION_EVENT")
    definition["taskDefinitionEvent"]["taskType"] = "DRIVER_TASK"
    with EventStore(path) as store:
        store.insert_batch_sync(events)
    found = HistoryIndex(path)
    found.refresh()
    assert any(a.task_type == "DRIVER_TASK" for a in found.tasks_by_id)
    yield found
    found.close()


def naive(index: HistoryIndex, options: ListOptions) -> tuple[list[tuple[str, int]], int]:
    """Ray's do_filter over every row of the session, then sort by task id and cut."""
    session = index.latest_session()
    rows = []
    for attempt in index.tasks_by_id:
        if attempt.session != session:
            continue
        if options.exclude_driver and attempt.task_type == "DRIVER_TASK":
            continue
        row = task_row(index, attempt, detail=False)
        if all(_matches(row[c], p, v) for c, p, v in options.filters):
            rows.append((attempt.task_id, attempt.attempt))
    return rows[: options.limit], len(rows)


def values(index: HistoryIndex, column: str) -> list[str]:
    session = index.latest_session()
    seen = set()
    for attempt in index.tasks_by_id[:400]:
        value = task_row(index, attempt, detail=False)[column]
        if value is not None and attempt.session == session:
            seen.add(str(value))
    return sorted(seen) + ([] if column == "attempt_number" else ["nope"])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_indexed_answer_equals_a_scan_of_every_row(
    index: HistoryIndex, data: st.DataObject
) -> None:
    filters = []
    for _ in range(data.draw(st.integers(0, 3))):
        column = data.draw(st.sampled_from(COLUMNS))
        value = data.draw(st.sampled_from(values(index, column)))
        if data.draw(st.booleans()):
            value = value.upper() if column != "attempt_number" else value
        filters.append((column, data.draw(st.sampled_from(["=", "!="])), value))
    options = ListOptions(
        limit=data.draw(st.integers(0, 50)),
        exclude_driver=data.draw(st.booleans()),
        filters=tuple(filters),
    )
    selected, _, matched = select_tasks(index, index.latest_session(), options)
    expected, expected_matched = naive(index, options)
    assert [(a.task_id, a.attempt) for a in selected] == expected
    assert matched == expected_matched
