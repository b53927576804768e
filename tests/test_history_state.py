"""Rebuilding state from partial, unordered events, and reconciling what the events left open."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import ray_event_samples as s
from trio_events.store._history_reconcile import reconcile
from trio_events.store._history_state import ClusterHistory

T = "2025-10-24T21:12:{:02d}.{:03d}Z"
OTHER_NODE = bytes(range(28))
OTHER_WORKER = bytes(range(100, 128))
TRACEBACK = "Traceback (most recent call last):\n  ...\nValueError: loss is NaN"


def lifecycle(
    n: int,
    attempt: int,
    transitions: list[tuple[str, str]],
    *,
    node: bytes | None = None,
    worker: bytes | None = None,
    error: tuple[str, str] | None = None,
    session: str = s.SESSION,
) -> dict[str, Any]:
    """A task lifecycle event as a real reporter sends it: the owner's carry no node/worker."""
    event = s.task_lifecycle(n, s.TASK_ID, attempt, transitions, error=error)
    payload = event["taskLifecycleEvent"]
    if node is None:
        del payload["nodeId"], payload["workerId"], payload["workerPid"]
    else:
        payload["nodeId"], payload["workerId"] = s.b64(node), s.b64(worker or s.WORKER_ID)
    event["sessionName"] = session
    return event


def one_task_events() -> list[dict[str, Any]]:
    """Attempt 0 fails on the default node; attempt 1 runs on another node and finishes."""
    return [
        s.task_definition(1, s.TASK_ID, 0, "train_step", T.format(0, 0)),
        lifecycle(
            2,
            0,
            [("PENDING_ARGS_AVAIL", T.format(0, 1)), ("PENDING_NODE_ASSIGNMENT", T.format(0, 2))],
        ),
        lifecycle(
            3,
            0,
            [("SUBMITTED_TO_WORKER", T.format(1, 0)), ("RUNNING", T.format(1, 5))],
            node=s.NODE_ID,
        ),
        lifecycle(
            4, 0, [("FAILED", T.format(3, 0))], error=("TASK_EXECUTION_EXCEPTION", TRACEBACK)
        ),
        s.task_definition(5, s.TASK_ID, 1, "train_step", T.format(3, 1)),
        lifecycle(6, 1, [("PENDING_ARGS_AVAIL", T.format(3, 2))]),
        lifecycle(7, 1, [("RUNNING", T.format(4, 0))], node=OTHER_NODE, worker=OTHER_WORKER),
        lifecycle(8, 1, [("FINISHED", T.format(5, 0))]),
    ]


def fold(events: list[dict[str, Any]]) -> ClusterHistory:
    history = ClusterHistory()
    for event in events:
        history.apply(event, event.get("eventType") or event["event_type"])
    reconcile(history)
    return history


def summary(history: ClusterHistory) -> dict[object, object]:
    return {
        key: (
            a.state,
            a.node_id,
            a.worker_id,
            a.error_type,
            a.error_message,
            dict(a.states),
            a.task_type,
            a.job_id,
            a.reconciled,
        )
        for key, a in history.tasks.items()
    }


def test_split_lifecycle_is_rebuilt_per_attempt() -> None:
    history = fold(one_task_events())
    first = history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)]
    retry = history.tasks[(s.SESSION, s.TASK_ID.hex(), 1)]
    assert first.state == "FAILED"
    assert first.node_id == s.NODE_ID.hex()  # from the executor's RUNNING event
    assert first.worker_id == s.WORKER_ID.hex()
    assert first.error_type == "TASK_EXECUTION_EXCEPTION"
    assert first.error_message == TRACEBACK
    assert list(first.states) == [
        "PENDING_ARGS_AVAIL",
        "PENDING_NODE_ASSIGNMENT",
        "SUBMITTED_TO_WORKER",
        "RUNNING",
        "FAILED",
    ]
    assert first.end_ns is not None
    assert first.start_ns is not None
    assert first.end_ns - first.start_ns == 1_995_000_000
    assert retry.state == "FINISHED"
    assert retry.node_id == OTHER_NODE.hex()
    assert retry.error_type == ""


def test_definition_after_lifecycle_still_names_the_task() -> None:
    events = one_task_events()
    history = fold([*events[1:4], events[0]])
    attempt = history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)]
    assert attempt.task_type == "NORMAL_TASK"
    assert attempt.definition is not None
    assert attempt.definition["taskName"] == "train_step"


@settings(max_examples=200, deadline=None)
@given(st.permutations(one_task_events()), st.lists(st.integers(0, 7), max_size=4))
def test_any_interleaving_gives_the_same_state(
    order: list[dict[str, Any]], repeats: list[int]
) -> None:
    expected = summary(fold(one_task_events()))
    events = list(order)
    for i in repeats:  # a retried export re-sends an event
        events.insert(i % (len(events) + 1), order[i])
    assert summary(fold(events)) == expected


def test_a_task_of_a_finished_job_is_failed_with_the_reason() -> None:
    events = one_task_events()[5:7]  # attempt 1 pending, then running; never finishes
    events.append(s.job_lifecycle(20, [("CREATED", T.format(0, 0)), ("FINISHED", T.format(9, 0))]))
    attempt = fold(events).tasks[(s.SESSION, s.TASK_ID.hex(), 1)]
    assert attempt.reported_state == "RUNNING"
    assert attempt.state == "FAILED"
    assert attempt.error_type == "WORKER_DIED"
    assert attempt.error_message.startswith(f"Job finishes ({s.JOB_ID.hex()}) as driver exits.")
    assert attempt.end_ns is not None


def test_a_task_whose_worker_died_is_failed_by_the_earliest_cause() -> None:
    events = one_task_events()[:3]  # attempt 0 running on WORKER_ID, never terminal
    death = {
        "state": "DEAD",
        "timestamp": T.format(2, 0),
        "deathInfo": {"exitType": "SYSTEM_ERROR", "exitDetail": "OOM killed"},
    }
    events.append(s.worker_lifecycle(21, [{"state": "ALIVE", "timestamp": T.format(0, 0)}, death]))
    events.append(s.job_lifecycle(22, [("FINISHED", T.format(8, 0))]))
    attempt = fold(events).tasks[(s.SESSION, s.TASK_ID.hex(), 0)]
    assert attempt.state == "FAILED"
    assert attempt.error_type == "WORKER_DIED"
    assert (
        "died with exit_type: SYSTEM_ERROR with error_message: OOM killed" in attempt.error_message
    )
    assert attempt.end_ns == fold([events[-2]]).entities["worker"][
        (s.SESSION, s.WORKER_ID.hex())
    ].first_ns("DEAD")


def test_a_task_on_a_dead_node_is_failed_and_a_finished_one_is_left_alone() -> None:
    events = one_task_events()  # attempt 0 FAILED (terminal), attempt 1 FINISHED
    events = events[:3] + events[4:]  # drop attempt 0's FAILED: it is left RUNNING on NODE_ID
    node_death = s.base_event(30, "NODE_LIFECYCLE_EVENT", T.format(6, 0), "GCS")
    node_death["nodeLifecycleEvent"] = {
        "nodeId": s.b64(s.NODE_ID),
        "stateTransitions": [
            {
                "state": "DEAD",
                "timestamp": T.format(6, 0),
                "deathInfo": {"reason": "UNEXPECTED_TERMINATION", "reasonMessage": "preempted"},
            }
        ],
    }
    history = fold([*events, node_death])
    assert history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)].error_type == "NODE_DIED"
    assert history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)].state == "FAILED"
    assert history.tasks[(s.SESSION, s.TASK_ID.hex(), 1)].state == "FINISHED"
    assert history.tasks[(s.SESSION, s.TASK_ID.hex(), 1)].reconciled == ""


def test_sessions_are_kept_apart() -> None:
    later = "session_2025-10-25_09-00-00_000000_1"
    events = [
        *one_task_events()[:3],
        lifecycle(40, 0, [("FINISHED", T.format(9, 0))], session=later),
    ]
    history = fold(events)
    assert history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)].state == "RUNNING"
    assert history.tasks[(later, s.TASK_ID.hex(), 0)].state == "FINISHED"
    assert set(history.sessions) == {s.SESSION, later}


def test_an_actor_on_a_dead_node_is_dead_with_the_reason() -> None:
    alive = {"state": "ALIVE", "timestamp": T.format(1, 0), "nodeId": s.b64(s.NODE_ID), "pid": 7}
    node_death = s.base_event(31, "NODE_LIFECYCLE_EVENT", T.format(6, 0), "GCS")
    node_death["nodeLifecycleEvent"] = {
        "nodeId": s.b64(s.NODE_ID),
        "stateTransitions": [{"state": "DEAD", "timestamp": T.format(6, 0)}],
    }
    history = fold(
        [s.actor_lifecycle(32, [alive]), s.actor_definition(33, T.format(0, 0)), node_death]
    )
    actor = history.entities["actor"][(s.SESSION, s.ACTOR_ID.hex())]
    assert actor.reported_state == "ALIVE"
    assert actor.state == "DEAD"
    assert actor.reconciled is not None
    assert "node" in actor.reconciled[2]


def test_snake_case_events_fold_the_same() -> None:
    assert summary(fold([s.to_snake(e) for e in one_task_events()])) == summary(
        fold(one_task_events())
    )


def test_an_actor_task_is_named_after_its_actors_repr_as_in_ray() -> None:
    from trio_events.store._history_index import task_name

    definition = s.base_event(80, "ACTOR_TASK_DEFINITION_EVENT", T.format(0, 0))
    definition["actorTaskDefinitionEvent"] = {
        "taskId": s.b64(s.TASK_ID), "taskAttempt": 0, "actorId": s.b64(s.ACTOR_ID),
        "actorTaskName": "Trainer.step",
        "actorFunc": {"pythonFunctionDescriptor": {"className": "Trainer", "functionName": "step"}},
    }  # fmt: skip
    running = lifecycle(81, 0, [("RUNNING", T.format(1, 0))], node=s.NODE_ID)
    history = fold([definition])
    assert task_name(history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)]) == "Trainer.step"
    running["taskLifecycleEvent"]["actorReprName"] = "Trainer(rank=0)"
    history = fold([definition, running])
    assert task_name(history.tasks[(s.SESSION, s.TASK_ID.hex(), 0)]) == "Trainer(rank=0).step"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
PAYLOAD_KEYS = [
    "taskLifecycleEvent", "taskDefinitionEvent", "actorTaskDefinitionEvent", "taskProfileEvents",
    "actorLifecycleEvent", "nodeLifecycleEvent", "workerLifecycleEvent", "driverJobLifecycleEvent",
    "placementGroupDefinitionEvent", "submissionJobLifecycleEvent",
]  # fmt: skip
FIELD_NAMES = [
    "taskId", "taskAttempt", "stateTransitions", "state", "timestamp", "nodeId", "workerId",
    "rayErrorInfo", "errorMessage", "jobId", "taskFunc", "profileEvents", "events", "deathInfo",
    "actorId", "bundles", "taskLogInfo", "actorReprName",
]  # fmt: skip


EVENT_TYPES = [
    "TASK_LIFECYCLE_EVENT", "TASK_DEFINITION_EVENT", "ACTOR_TASK_DEFINITION_EVENT",
    "TASK_PROFILE_EVENT", "ACTOR_LIFECYCLE_EVENT", "ACTOR_DEFINITION_EVENT", "NODE_LIFECYCLE_EVENT",
    "WORKER_LIFECYCLE_EVENT", "WORKER_DEFINITION_EVENT", "PLACEMENT_GROUP_DEFINITION_EVENT",
    "SUBMISSION_JOB_LIFECYCLE_EVENT", "FROM_A_NEWER_RAY",
]  # fmt: skip
ODD_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(PAYLOAD_KEYS),
        st.dictionaries(st.sampled_from(FIELD_NAMES), JSON, max_size=6),
        st.sampled_from(EVENT_TYPES),
    ),
    max_size=6,
)


def odd_events(items: list[tuple[str, dict[str, Any], str]]) -> list[dict[str, Any]]:
    events = []
    for n, (key, payload, event_type) in enumerate(items):
        event = s.base_event(n + 1, event_type, T.format(n % 60, 0))
        event[key] = payload
        events.append(event)
    return events


@settings(max_examples=300, deadline=None)
@given(ODD_EVENTS)
def test_odd_json_folds_without_raising(items: list[tuple[str, dict[str, Any], str]]) -> None:
    from trio_events.store._history_index import task_name
    from trio_events.store._history_rows import profiling_data

    history = fold(odd_events(items))  # must not raise
    for attempt in history.tasks.values():
        assert isinstance(task_name(attempt), str)
        assert isinstance(profiling_data(attempt), dict)
        assert isinstance(attempt.state, str)
    for table in history.entities.values():
        for entity in table.values():
            assert isinstance(entity.history(), list)


@settings(max_examples=60, deadline=None)
@given(ODD_EVENTS)
def test_odd_json_is_answered_by_every_endpoint_and_page(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[str, dict[str, Any], str]]
) -> None:
    import orjson

    from trio_events.store._chrome_trace import chrome_trace, job_attempts
    from trio_events.store._history_api import answer
    from trio_events.store._history_index import HistoryIndex
    from trio_events.store._history_page import render_home, render_job, render_session
    from trio_events.store._sqlite import EventStore

    path = tmp_path_factory.mktemp("odd") / "events.db"
    with EventStore(path) as store:
        store.insert_batch_sync(odd_events(items))
    index = HistoryIndex(path)
    try:
        index.refresh()
        session = index.latest_session()
        for resource in ("tasks", "actors", "nodes", "workers", "placement_groups", "jobs",
                         "tasks/summarize", "actors/summarize"):  # fmt: skip
            status, body = answer(index, session, f"/api/v0/{resource}", "detail=true")
            assert status == 200
            assert orjson.loads(body)["result"] is True
        assert isinstance(chrome_trace(index, job_attempts(index, session, None)), list)
        render_home(index)
        if session is not None:
            render_session(index, session)
            render_job(index, session, s.JOB_ID.hex(), "state=FAILED")
    finally:
        index.close()
