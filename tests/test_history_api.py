"""``trio-events history`` in-process: Ray's state API envelope, parameters and answers."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx
import pytest
import trio

from tests import ray_event_samples as s
from tests.test_history_state import (
    OTHER_NODE,
    OTHER_WORKER,
    TRACEBACK,
    T,
    lifecycle,
    one_task_events,
)
from trio_events.store._history_server import HistoryConfig, HistoryServer
from trio_events.store._sqlite import EventStore

LATER = "session_2025-10-25_09-00-00_000000_1"
TASK_COLUMNS = [
    "task_id",
    "attempt_number",
    "name",
    "state",
    "job_id",
    "actor_id",
    "type",
    "func_or_class_name",
    "parent_task_id",
    "node_id",
    "worker_id",
    "worker_pid",
    "error_type",
]


def store_events() -> list[dict[str, Any]]:
    """One task (failed attempt, finished retry), a driver task, cluster entities, a later session."""
    driver = s.task_definition(50, bytes(24), 0, "driver", T.format(0, 0))
    driver["taskDefinitionEvent"]["taskType"] = "DRIVER_TASK"
    later = lifecycle(
        60, 0, [("RUNNING", T.format(30, 0))], node=OTHER_NODE, worker=OTHER_WORKER, session=LATER
    )
    later["timestamp"] = "2025-10-25T09:00:00Z"
    worker_def = s.base_event(70, "WORKER_DEFINITION_EVENT", T.format(0, 0), "RAYLET")
    worker_def["workerDefinitionEvent"] = {
        "workerId": s.b64(s.WORKER_ID),
        "nodeId": s.b64(s.NODE_ID),
        "workerType": "WORKER",
        "pid": 4242,
    }
    return [
        *one_task_events(),
        driver,
        s.node_definition(71, T.format(0, 0)),
        worker_def,
        s.actor_definition(72, T.format(0, 0)),
        s.actor_lifecycle(
            73,
            [{"state": "ALIVE", "timestamp": T.format(1, 0), "nodeId": s.b64(s.NODE_ID), "pid": 9}],
        ),
        s.job_lifecycle(74, [("CREATED", T.format(0, 0))]),
        later,
    ]


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "events.db"
    with EventStore(path) as store:
        store.insert_batch_sync(store_events())
    return path


@pytest.fixture
async def base_url(store_path, nursery):
    server = HistoryServer(HistoryConfig(str(store_path), "127.0.0.1", 0, refresh_interval=0))
    port = await nursery.start(server.run)
    return f"http://127.0.0.1:{port}"


def query(*filters: tuple[str, str, str], **params: object) -> str:
    pairs: list[tuple[str, object]] = list(params.items())
    for key, predicate, value in filters:
        pairs += [("filter_keys", key), ("filter_predicates", predicate), ("filter_values", value)]
    return urllib.parse.urlencode(pairs)


async def get(base_url: str, path: str) -> httpx.Response:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url) as client:
            return await client.get(path)


async def test_tasks_answer_in_rays_envelope_sorted_by_id(base_url) -> None:
    # The latest session is the default scope; the earlier one is under /session/<name>.
    response = await get(base_url, f"/session/{s.SESSION}/api/v0/tasks")
    assert response.status_code == 200
    body = response.json()
    assert body["result"] is True
    assert body["msg"] == ""
    answer = body["data"]["result"]
    assert set(answer) == {
        "total",
        "num_after_truncation",
        "num_filtered",
        "result",
        "partial_failure_warning",
        "warnings",
    }
    assert answer["total"] == answer["num_filtered"] == 2  # the driver task is excluded
    rows = answer["result"]
    assert [list(row) for row in rows] == [TASK_COLUMNS, TASK_COLUMNS]
    assert [(r["task_id"], r["attempt_number"], r["state"]) for r in rows] == [
        (s.TASK_ID.hex(), 0, "FAILED"),
        (s.TASK_ID.hex(), 1, "FINISHED"),
    ]
    assert rows[0]["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert rows[0]["node_id"] == s.NODE_ID.hex()
    assert rows[1]["node_id"] == OTHER_NODE.hex()


async def test_filters_limit_detail_and_exclude_driver(base_url) -> None:
    scope = f"/session/{s.SESSION}/api/v0/tasks?"
    failed = (await get(base_url, scope + query(("state", "=", "failed"), detail="true"))).json()
    answer = failed["data"]["result"]
    assert answer["num_filtered"] == 1
    assert answer["result"][0]["error_message"] == TRACEBACK
    assert [e["state"] for e in answer["result"][0]["events"]][-1] == "FAILED"
    not_failed = (await get(base_url, scope + query(("state", "!=", "FAILED")))).json()
    assert [r["state"] for r in not_failed["data"]["result"]["result"]] == ["FINISHED"]
    limited = (await get(base_url, scope + query(limit=1))).json()["data"]["result"]
    assert (len(limited["result"]), limited["num_filtered"]) == (1, 2)
    with_driver = (await get(base_url, scope + query(exclude_driver="false"))).json()
    assert [r["type"] for r in with_driver["data"]["result"]["result"]] == [
        "DRIVER_TASK",
        "NORMAL_TASK",
        "NORMAL_TASK",
    ]
    by_attempt = (await get(base_url, scope + query(("attempt_number", "=", "1")))).json()
    assert [r["attempt_number"] for r in by_attempt["data"]["result"]["result"]] == [1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (query(("color", "=", "red")), "The given filter column color is not supported."),
        (query(("state", ">", "x")), "Unsupported filter predicate > is given."),
        (query(limit=10_001), "Given limit 10001 exceeds the supported limit 10000."),
        (query(detail="maybe"), "detail='maybe' is not a boolean"),
    ],
)
async def test_bad_parameters_are_rays_400(base_url, params, message) -> None:
    response = await get(base_url, f"/api/v0/tasks?{params}")
    assert response.status_code == 400
    body = response.json()
    assert body["result"] is False
    assert body["msg"].startswith(message)


async def test_summary_and_other_resources(base_url) -> None:
    scope = f"/session/{s.SESSION}/api/v0/"
    summary = (await get(base_url, scope + "tasks/summarize")).json()["data"]["result"]
    cluster = summary["result"]["node_id_to_summary"]["cluster"]
    assert cluster["summary"]["train_step"]["state_counts"] == {"FAILED": 1, "FINISHED": 1}
    assert cluster["total_tasks"] == 2
    actors = (await get(base_url, scope + "actors")).json()["data"]["result"]["result"]
    assert [(a["class_name"], a["state"], a["pid"]) for a in actors] == [("Trainer", "ALIVE", 9)]
    nodes = (await get(base_url, scope + "nodes")).json()["data"]["result"]["result"]
    assert [(n["node_ip"], n["node_name"]) for n in nodes] == [("127.0.0.1", "head")]
    workers = (await get(base_url, scope + "workers")).json()["data"]["result"]["result"]
    assert [(w["pid"], w["ip"], w["is_alive"]) for w in workers] == [(4242, "127.0.0.1", True)]
    jobs = (await get(base_url, scope + "jobs")).json()["data"]["result"]["result"]
    assert [(j["job_id"], j["type"], j["status"]) for j in jobs] == [
        (s.JOB_ID.hex(), "DRIVER", "RUNNING")
    ]
    empty = (await get(base_url, scope + "placement_groups")).json()["data"]["result"]
    assert (empty["total"], empty["result"]) == (0, [])


async def test_sessions_are_separate_scopes(base_url) -> None:
    latest = (await get(base_url, "/api/v0/tasks")).json()["data"]["result"]["result"]
    assert [(r["state"], r["node_id"]) for r in latest] == [("RUNNING", OTHER_NODE.hex())]
    assert (await get(base_url, "/session/nope/api/v0/tasks")).status_code == 404
    version = (await get(base_url, "/api/version")).json()
    assert (version["ray_version"], version["session_name"]) == ("2.60.0", LATER)


async def test_new_events_are_followed(base_url, store_path) -> None:
    with EventStore(store_path) as store:
        store.insert_batch_sync([lifecycle(90, 0, [("FINISHED", T.format(40, 0))], session=LATER)])
    latest = (await get(base_url, "/api/v0/tasks")).json()["data"]["result"]["result"]
    assert [r["state"] for r in latest] == ["FINISHED"]


async def test_pages_show_sessions_jobs_and_the_error(base_url) -> None:
    home = await get(base_url, "/")
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert s.SESSION in home.text
    assert LATER in home.text
    assert "ValueError: loss is NaN" in home.text
    job = await get(base_url, f"/session/{s.SESSION}/job/{s.JOB_ID.hex()}?state=FAILED")
    assert "ValueError: loss is NaN" in job.text
    assert "1 of 1 matching attempts" in job.text
    assert 'class="bar bad"' in job.text  # the failed attempt on the Gantt timeline
    session = await get(base_url, f"/session/{s.SESSION}/")
    assert "Trainer" in session.text
    assert "127.0.0.1" in session.text
    css = await get(base_url, "/static/history.css")
    assert css.status_code == 200
    assert ".gantt" in css.text
    assert (await get(base_url, "/nowhere")).status_code == 404


async def test_chrome_trace_has_rays_shape(base_url) -> None:
    trace = (
        await get(base_url, f"/session/{s.SESSION}/api/v0/tasks/timeline?job_id={s.JOB_ID.hex()}")
    ).json()
    spans = [e for e in trace if e["ph"] == "X"]
    assert [(e["name"], e["args"]["attempt_number"], e["args"]["state"]) for e in spans] == [
        ("train_step", 0, "FAILED"),
        ("train_step", 1, "FINISHED"),
    ]
    assert spans[0]["dur"] == pytest.approx(1_995_000.0)  # microseconds
    names = {(e["name"], e["args"]["name"]) for e in trace if e["ph"] == "M"}
    assert ("process_name", "Node 127.0.0.1") in names
    assert ("thread_name", f"worker:{s.WORKER_ID.hex()}") in names


async def test_writes_are_refused(base_url) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.post("/api/v0/tasks", content=b"{}")
    assert response.status_code == 405


def test_error_messages_are_escaped_on_the_page(tmp_path) -> None:
    from trio_events.store._history_index import HistoryIndex
    from trio_events.store._history_page import render_home, render_job

    hostile = "<img src=x onerror=alert(1)>"
    events = [
        s.task_definition(1, s.TASK_ID, 0, "<b>name</b>", T.format(0, 0)),
        lifecycle(2, 0, [("FAILED", T.format(1, 0))], error=("TASK_EXECUTION_EXCEPTION", hostile)),
    ]
    with EventStore(tmp_path / "e.db") as store:
        store.insert_batch_sync(events)
    index = HistoryIndex(tmp_path / "e.db")
    index.refresh()
    try:
        pages = render_home(index) + render_job(index, s.SESSION, s.JOB_ID.hex(), "")
    finally:
        index.close()
    assert hostile not in pages
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages
    assert "<b>name</b>" not in pages
    assert "&lt;b&gt;name&lt;/b&gt;" in pages
