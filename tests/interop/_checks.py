"""What a store must hold after ``ray_workload.py`` ran, whichever aggregator carried the events.

:func:`missing` says what has not arrived yet (the suite polls it under a deadline); the
``check_*`` functions then assert the details of each entity's merged timeline, using the same
query functions as ``trio-events query``.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tests.interop._harness import Workload, wait_until
from trio_events.store._query import Timeline, counts, failed_tasks, timeline
from trio_events.store._ray_json import id_hex
from trio_events.store._sqlite import connect_read_only

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

GCS_EVENT_TYPES = frozenset(
    {
        "ACTOR_DEFINITION_EVENT",
        "ACTOR_LIFECYCLE_EVENT",
        "DRIVER_JOB_DEFINITION_EVENT",
        "DRIVER_JOB_LIFECYCLE_EVENT",
        "NODE_DEFINITION_EVENT",
        "NODE_LIFECYCLE_EVENT",
        "WORKER_DEFINITION_EVENT",
        "WORKER_LIFECYCLE_EVENT",
    }
)
CORE_WORKER_EVENT_TYPES = frozenset(
    {
        "TASK_DEFINITION_EVENT",
        "ACTOR_TASK_DEFINITION_EVENT",
        "TASK_LIFECYCLE_EVENT",
        "TASK_PROFILE_EVENT",
    }
)
TASK_STATES = ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "RUNNING"]


def states(found: Timeline) -> list[str]:
    return [t.state for t in found.transitions]


def events(db: Path, event_type: str | None = None) -> list[dict[str, Any]]:
    """The stored events (parsed JSON), optionally of one type, in timestamp order."""
    sql, params = "SELECT json FROM events", tuple[str, ...]()
    if event_type is not None:
        sql, params = sql + " WHERE event_type = ?", (event_type,)
    with contextlib.closing(connect_read_only(db)) as conn:
        rows = conn.execute(sql + " ORDER BY timestamp_ns", params).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def type_counts(db: Path) -> dict[str, int]:
    return {c.key: c.count for c in counts(db).by_event_type}


def payloads(db: Path, event_type: str, key: str) -> list[dict[str, Any]]:
    return [event[key] for event in events(db, event_type)]


def wait_for_store(
    what: str,
    db: Path,
    lacking: Callable[[Path, dict[str, Any]], str | None],
    workload: dict[str, Any],
    details: Callable[[], str],
    *,
    timeout: float = 90.0,
) -> None:
    """Poll ``lacking(db, workload)`` until it says nothing is missing, or fail with what is."""
    last: list[str | None] = [None]

    def check() -> bool | None:
        last[0] = lacking(db, workload)
        return True if last[0] is None else None

    wait_until(
        what, check, timeout=timeout, details=lambda: f"Still missing: {last[0]}\n{details()}"
    )


def run_workload(
    gcs_address: str,
    db: Path,
    *,
    log_dir: Path,
    env: Mapping[str, str],
    details: Callable[[], str],
) -> dict[str, Any]:
    """Run ``ray_workload.py`` against the cluster and wait until its events are all stored.

    The job stays open until the workers' own events (RUNNING, profiles) have arrived; then
    the driver ends it, and the job's, actor's and tasks' final transitions follow.
    """
    with Workload.start(gcs_address, log_dir=log_dir, env=env) as driver:
        workload = driver.summary()
        wait_for_store("the workers' task events", db, unexported_by_workers, workload, details)
        driver.release()
    wait_for_store("the workload's events", db, missing, workload, details)
    return workload


def node_registered(db: Path, workload: dict[str, Any]) -> str | None:
    """None once the GCS has exported a NODE_DEFINITION_EVENT (it is exporting)."""
    try:
        return None if type_counts(db).get("NODE_DEFINITION_EVENT") else "NODE_DEFINITION_EVENT"
    except (FileNotFoundError, sqlite3.OperationalError):
        return "the event store"


def executed_task_ids(workload: dict[str, Any]) -> list[str]:
    return [*workload["square_task_ids"], workload["failed_task_id"], workload["actor_task_id"]]


def profiled_task_ids(db: Path) -> set[str]:
    return {id_hex(p["taskId"]) for p in payloads(db, "TASK_PROFILE_EVENT", "taskProfileEvents")}


def unexported_by_workers(db: Path, workload: dict[str, Any]) -> str | None:
    """Which executed tasks' worker-side events (RUNNING, profile) have not arrived; None once
    all have. Until then the job must stay open: Ray kills its workers when it ends."""
    try:
        profiled = profiled_task_ids(db)
        for task_id in executed_task_ids(workload):
            if "RUNNING" not in states(timeline(db, "task", task_id)):
                return f"task {task_id} RUNNING"
            if task_id not in profiled:
                return f"task {task_id} TASK_PROFILE_EVENT"
    except (FileNotFoundError, sqlite3.OperationalError):
        return "the event store"
    return None


def missing(db: Path, workload: dict[str, Any]) -> str | None:
    """What the store still lacks of the workload's events; None once all has arrived."""
    try:
        present = set(type_counts(db))
        lacking = sorted((GCS_EVENT_TYPES | CORE_WORKER_EVENT_TYPES) - present)
        if lacking:
            return f"event types {lacking}"
        for task_id in workload["square_task_ids"]:
            if states(timeline(db, "task", task_id))[-1:] != ["FINISHED"]:
                return f"task {task_id} FINISHED"
        if states(timeline(db, "task", workload["failed_task_id"]))[-1:] != ["FAILED"]:
            return f"task {workload['failed_task_id']} FAILED"
        if states(timeline(db, "task", workload["actor_task_id"]))[-1:] != ["FINISHED"]:
            return f"actor task {workload['actor_task_id']} FINISHED"
        actor = states(timeline(db, "actor", workload["actor_id"]))
        if "ALIVE" not in actor or actor[-1:] != ["DEAD"]:
            return f"actor {workload['actor_id']} ALIVE then DEAD (so far {actor})"
        if states(timeline(db, "job", workload["job_id"]))[-1:] != ["FINISHED"]:
            return f"job {workload['job_id']} FINISHED"
        if "ALIVE" not in states(timeline(db, "node", workload["node_id"])):
            return f"node {workload['node_id']} ALIVE"
    except (FileNotFoundError, sqlite3.OperationalError):
        return "the event store"
    return None


def describe(db: Path) -> str:
    """Counts by event type, for failure messages."""
    try:
        return f"Stored so far: {type_counts(db)}"
    except (FileNotFoundError, sqlite3.OperationalError) as exc:
        return f"No event store yet: {exc}"


def _b64_id(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def check_common_fields(db: Path, workload: dict[str, Any], session_name: str) -> Counter[str]:
    """Every event of the Ray session: 28-byte id, the node, INFO, a source that emits its
    type; returns their counts by source type."""
    sources: Counter[str] = Counter()
    for event in events(db):
        if event["sessionName"] != session_name:
            continue  # not Ray's (trio-events loadgen's, when Ray's aggregator is tested)
        assert len(_b64_id(event["eventId"])) == 28, event
        assert id_hex(event["nodeId"]) == workload["node_id"], event
        assert event["severity"] == "INFO", event
        assert event["timestamp"].endswith("Z"), event
        sources[event["sourceType"]] += 1
        expected = GCS_EVENT_TYPES if event["sourceType"] == "GCS" else CORE_WORKER_EVENT_TYPES
        assert event["eventType"] in expected, event
    assert set(sources) == {"GCS", "CORE_WORKER"}, sources
    return sources


def check_tasks(db: Path, workload: dict[str, Any]) -> None:
    """Each normal task: one definition, a lifecycle through RUNNING to FINISHED in time order."""
    definitions = {
        id_hex(p["taskId"]): p for p in payloads(db, "TASK_DEFINITION_EVENT", "taskDefinitionEvent")
    }
    for task_id in workload["square_task_ids"]:
        definition = definitions[task_id]
        assert definition["taskName"] == "square", definition
        assert definition["taskType"] == "NORMAL_TASK", definition
        assert definition["language"] == "PYTHON", definition
        assert id_hex(definition["jobId"]) == workload["job_id"], definition
        function = definition["taskFunc"]["pythonFunctionDescriptor"]
        assert function["functionName"] == "square", function

        found = timeline(db, "task", task_id, attempt=0)
        assert found.name == "square", found
        # Sorted by timestamp, the transitions come out in lifecycle order.
        assert states(found) == [*TASK_STATES, "FINISHED"], found
        finished = found.transitions[-1]
        assert finished.node_id == workload["node_id"], finished
        assert finished.worker_id in workload["square_worker_ids"], finished
        assert not finished.error_type, finished
        assert not finished.error_message, finished


def check_failed_task(db: Path, workload: dict[str, Any]) -> None:
    """The failing task: FAILED last, with Ray's error type and the exception's message."""
    task_id = workload["failed_task_id"]
    found = timeline(db, "task", task_id, attempt=0)
    assert found.name == "fail", found
    assert states(found) == [*TASK_STATES, "FAILED"], found
    failed = found.transitions[-1]
    assert failed.error_type == "TASK_EXECUTION_EXCEPTION", failed
    assert workload["failure_message"] in failed.error_message, failed

    (failure,) = [f for f in failed_tasks(db) if f.task_id == task_id]
    assert failure.name == "fail", failure
    assert failure.attempt == 0, failure
    assert failure.error_type == "TASK_EXECUTION_EXCEPTION", failure
    assert workload["failure_message"] in failure.error_message, failure
    assert failure.job_id == workload["job_id"], failure


def check_actor(db: Path, workload: dict[str, Any]) -> None:
    """ACTOR_DEFINITION once; the lifecycle through ALIVE (on our node and worker) to DEAD."""
    actor_id = workload["actor_id"]
    (definition,) = [
        p
        for p in payloads(db, "ACTOR_DEFINITION_EVENT", "actorDefinitionEvent")
        if id_hex(p["actorId"]) == actor_id
    ]
    assert definition["className"] == "Counter", definition
    assert id_hex(definition["jobId"]) == workload["job_id"], definition

    found = timeline(db, "actor", actor_id)
    assert found.name == "Counter", found
    actor_states = states(found)
    assert actor_states.index("PENDING_CREATION") < actor_states.index("ALIVE"), found
    assert actor_states[-1] == "DEAD", found
    (alive,) = [t for t in found.transitions if t.state == "ALIVE"]
    assert alive.node_id == workload["node_id"], alive
    assert alive.worker_id == workload["actor_worker_id"], alive
    alive_payloads = [
        t
        for p in payloads(db, "ACTOR_LIFECYCLE_EVENT", "actorLifecycleEvent")
        if id_hex(p["actorId"]) == actor_id
        for t in p["stateTransitions"]
        if t["state"] == "ALIVE"
    ]
    assert [t["pid"] for t in alive_payloads] == [workload["actor_pid"]], alive_payloads
    dead = found.transitions[-1]
    assert dead.error_message, dead  # why: its owner, the driver, exited

    # The method call: an ACTOR_TASK_DEFINITION and a lifecycle that ends FINISHED.
    task_id = workload["actor_task_id"]
    (task,) = [
        p
        for p in payloads(db, "ACTOR_TASK_DEFINITION_EVENT", "actorTaskDefinitionEvent")
        if id_hex(p["taskId"]) == task_id
    ]
    assert task["actorTaskName"] == "Counter.add", task
    assert id_hex(task["actorId"]) == actor_id, task
    method = timeline(db, "task", task_id, attempt=0)
    assert method.name == "Counter.add", method
    assert states(method)[0] == "PENDING_ARGS_AVAIL", method
    assert states(method)[-2:] == ["RUNNING", "FINISHED"], method


def check_profiles(db: Path, workload: dict[str, Any]) -> None:
    """Each executed task has a worker-side TASK_PROFILE_EVENT covering its execution."""
    by_task: dict[str, list[str]] = {}
    for p in payloads(db, "TASK_PROFILE_EVENT", "taskProfileEvents"):
        names = [e["eventName"] for e in p["profileEvents"]["events"]]
        by_task.setdefault(id_hex(p["taskId"]), []).extend(names)
        if p["profileEvents"]["componentType"] == "worker":
            assert all(
                int(e["endTime"]) >= int(e["startTime"]) for e in p["profileEvents"]["events"]
            )
    for task_id in executed_task_ids(workload):
        assert "task:execute" in by_task[task_id], (task_id, by_task.get(task_id))


def check_job(db: Path, workload: dict[str, Any]) -> None:
    """DRIVER_JOB_DEFINITION with the driver's pid and entrypoint; CREATED then FINISHED."""
    job_id = workload["job_id"]
    (definition,) = [
        p
        for p in payloads(db, "DRIVER_JOB_DEFINITION_EVENT", "driverJobDefinitionEvent")
        if id_hex(p["jobId"]) == job_id
    ]
    assert int(definition["driverPid"]) == workload["driver_pid"], definition
    assert "ray_workload.py" in definition["entrypoint"], definition
    assert id_hex(definition["driverNodeId"]) == workload["node_id"], definition
    found = timeline(db, "job", job_id)
    assert states(found) == ["CREATED", "FINISHED"], found


def check_node(db: Path, workload: dict[str, Any]) -> None:
    """NODE_DEFINITION on 127.0.0.1 and an ALIVE transition with the node's resources."""
    node_id = workload["node_id"]
    (definition,) = [
        p
        for p in payloads(db, "NODE_DEFINITION_EVENT", "nodeDefinitionEvent")
        if id_hex(p["nodeId"]) == node_id
    ]
    assert definition["nodeIpAddress"] == "127.0.0.1", definition
    assert states(timeline(db, "node", node_id))[0] == "ALIVE"
    alive = [
        t
        for p in payloads(db, "NODE_LIFECYCLE_EVENT", "nodeLifecycleEvent")
        for t in p["stateTransitions"]
        if t["state"] == "ALIVE"
    ]
    assert alive, node_id
    assert alive[0]["resources"]["CPU"] == 1.0, alive


def check_workers(db: Path, workload: dict[str, Any]) -> None:
    """WORKER_DEFINITION and an ALIVE WORKER_LIFECYCLE for the workers that ran our code."""
    definitions = {
        id_hex(p["workerId"]): p
        for p in payloads(db, "WORKER_DEFINITION_EVENT", "workerDefinitionEvent")
    }
    for worker_id in [*workload["square_worker_ids"], workload["actor_worker_id"]]:
        definition = definitions[worker_id]
        assert definition["workerType"] == "WORKER", definition
        assert id_hex(definition["nodeId"]) == workload["node_id"], definition
        assert "ALIVE" in states(timeline(db, "worker", worker_id)), worker_id
    actor_worker = definitions[workload["actor_worker_id"]]
    assert int(actor_worker["pid"]) == workload["actor_pid"], actor_worker
