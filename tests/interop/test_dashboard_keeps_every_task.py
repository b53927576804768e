"""Replace Ray's agent with ``trio-events agent`` on a live cluster: the dashboard keeps every task.

Issue 18's acceptance. Two single-node Ray 2.60 clusters (``ray[default]``, dashboard head on)
run the same workload (three normal tasks, an actor with one call, a failing task) with task
events routed through the aggregator to the GCS, and the core workers' direct path to the GCS
switched off (``RAY_enable_core_worker_task_event_to_gcs=0``), so the GCS's task table is fed by
the aggregator alone:

- ``ray``: Ray's own dashboard agent serves the agent gRPC port, its GCS publisher on
  (``RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISH_EVENTS_TO_GCS=True``);
- ``trio-events``: Ray's dashboard agent is started minimal (off the port) and
  ``trio-events agent --publish-to-gcs true --gcs-address ...`` serves it.

Then ``ray list tasks`` and ``ray summary tasks``, Ray's own commands on the live cluster, must
show every task in the right final state, and the same with either agent.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pytest

from tests.interop._harness import (
    Process,
    RayCluster,
    Workload,
    clean_env,
    free_ports,
    ray_command,
    ray_env,
    trio_events,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.interop.conftest import RayInstall

AgentKind = Literal["ray", "trio-events"]

# Task events from the 2.60 RayTaskEventRecorder to the aggregator only, never directly to the
# GCS: what reaches the GCS's task table went through the aggregator's GCS publisher.
TASK_EVENTS_THROUGH_AGGREGATOR = {
    "RAY_enable_ray_event": "1",
    "RAY_enable_ray_task_event_recorder": "1",
    "RAY_enable_core_worker_task_event_to_gcs": "0",
}
# (function or class name, type, final state) of every task the workload runs.
EXPECTED = sorted(
    [
        ("square", "NORMAL_TASK", "FINISHED"),
        ("square", "NORMAL_TASK", "FINISHED"),
        ("square", "NORMAL_TASK", "FINISHED"),
        ("Counter.__init__", "ACTOR_CREATION_TASK", "FINISHED"),
        ("Counter.add", "ACTOR_TASK", "FINISHED"),
        ("fail", "NORMAL_TASK", "FAILED"),
    ]
)
SETTLE_TIMEOUT = 300.0  # seconds for the task table to show every final state (slow machine)


@attrs.frozen
class TaskView:
    """What Ray's commands showed on one cluster."""

    tasks: list[dict[str, Any]]  # `ray list tasks --format json --detail`
    summary: str  # `ray summary tasks`, without its time-stamped title
    workload: dict[str, Any]
    agent_metrics: str  # trio-events agent's /metrics ("" for Ray's agent)

    def rows(self) -> list[tuple[str, str, str]]:
        return sorted((t["func_or_class_name"], t["type"], t["state"]) for t in self.tasks)

    def comparable(self) -> list[tuple[object, ...]]:
        """Each task without what differs between two runs of the same workload (ids, times)."""
        keys = ("func_or_class_name", "name", "type", "state", "attempt_number", "error_type")
        return sorted(tuple(t.get(k) for k in keys) for t in self.tasks)

    def state_of(self, task_id: str) -> str | None:
        return next((t["state"] for t in self.tasks if t["task_id"] == task_id), None)


def _list_tasks(cluster: RayCluster, env: dict[str, str]) -> list[dict[str, Any]]:
    out = ray_command(
        ["list", "tasks", "--address", cluster.gcs_address, "--format", "json", "--detail"],
        env=env,
    )
    tasks: list[dict[str, Any]] = json.loads(out)
    return tasks


def _summary(cluster: RayCluster, env: dict[str, str]) -> str:
    out = ray_command(["summary", "tasks", "--address", cluster.gcs_address], env=env)
    return re.sub(r"Tasks Summary: [^=]*=", "Tasks Summary: =", out).strip()


def _start_trio_events_agent(log_dir: Path, port: int, gcs_address: str) -> tuple[Process, int]:
    argv = trio_events(
        "agent",
        "--listen", f"127.0.0.1:{port}",
        "--publish-to-gcs", "true",
        "--gcs-address", gcs_address,
        "--metrics-listen", "127.0.0.1:0",
        "--db", str(log_dir / "agent-store.db"),
    )  # fmt: skip
    process = Process.start("trio-events-agent", argv, log_dir=log_dir, env=clean_env())
    try:
        process.wait_for_output(rf"gRPC AddEvents on 127\.0\.0\.1:{port}", timeout=60)
        metrics = process.wait_for_output(r"metrics on http://127\.0\.0\.1:(\d+)/", timeout=60)
    except BaseException:
        process.stop()
        raise
    return process, int(metrics.group(1))


def _metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def run_cluster(kind: AgentKind, log_dir: Path, temp_dir: Path) -> TaskView:
    """One cluster with ``kind``'s agent on the gRPC port: the workload, then Ray's views."""
    agent_port, gcs_port = free_ports(2)
    gcs_address = f"127.0.0.1:{gcs_port}"
    extra = (
        {"RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISH_EVENTS_TO_GCS": "True"} if kind == "ray" else {}
    )
    env = ray_env(**TASK_EVENTS_THROUGH_AGGREGATOR, **extra)
    with contextlib.ExitStack() as stack:
        metrics_port = None
        if kind == "trio-events":
            agent, metrics_port = _start_trio_events_agent(log_dir, agent_port, gcs_address)
            stack.callback(agent.stop)
        cluster = RayCluster.start(
            log_dir=log_dir,
            temp_dir=temp_dir,
            env=env,
            agent_grpc_port=agent_port,
            agent_grpc_served_by=kind,
            gcs_port=gcs_port,
            dashboard=True,
            timeout=300,
        )
        stack.callback(cluster.stop)
        workload = stack.enter_context(Workload.start(gcs_address, log_dir=log_dir, env=env))
        summary = workload.summary(timeout=300)
        cli_env = ray_env()
        last: list[list[dict[str, Any]]] = [[]]

        def settled() -> list[dict[str, Any]] | None:
            tasks = last[0] = _list_tasks(cluster, cli_env)
            rows = sorted((t["func_or_class_name"], t["type"], t["state"]) for t in tasks)
            return tasks if rows == EXPECTED else None

        wait_until(
            f"`ray list tasks` to show every task's final state ({kind}'s agent)",
            settled,
            timeout=SETTLE_TIMEOUT,
            details=lambda: json.dumps(last[0], indent=1)[-6000:],
        )
        workload.release(timeout=120)
        # After the job ended: the views the dashboard keeps.
        tasks = _list_tasks(cluster, cli_env)
        view = TaskView(
            tasks,
            _summary(cluster, cli_env),
            summary,
            _metrics(metrics_port) if metrics_port is not None else "",
        )
        print(f"\n[{kind}'s agent] ray summary tasks:\n{view.summary}\n")
        return view


@pytest.fixture(scope="module")
def views(
    default_ray: RayInstall, tmp_path_factory: pytest.TempPathFactory, ray_temp_dir: Path
) -> dict[AgentKind, TaskView]:
    kinds: tuple[AgentKind, ...] = ("ray", "trio-events")
    return {
        kind: run_cluster(kind, tmp_path_factory.mktemp(f"dashboard-{kind}"), ray_temp_dir / k)
        for kind, k in zip(kinds, ("r", "t"), strict=True)
    }


@pytest.fixture(params=["ray", "trio-events"])
def view(request: pytest.FixtureRequest, views: dict[AgentKind, TaskView]) -> TaskView:
    return views[request.param]


def test_ray_list_tasks_shows_every_task_in_its_final_state(view: TaskView) -> None:
    assert view.rows() == EXPECTED
    workload = view.workload
    for task_id in workload["square_task_ids"]:
        assert view.state_of(task_id) == "FINISHED"
    assert view.state_of(workload["actor_task_id"]) == "FINISHED"
    assert view.state_of(workload["failed_task_id"]) == "FAILED"
    (failed,) = [t for t in view.tasks if t["state"] == "FAILED"]
    assert failed["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert {t["job_id"] for t in view.tasks} == {workload["job_id"]}


def test_ray_summary_tasks_counts_every_state(view: TaskView) -> None:
    found = re.findall(
        r"^\s*\d+\s+(\S+)\s+((?:\w+: \d+,? ?)+?)\s+(\w+_TASK)\s*$", view.summary, re.M
    )
    rows = [(name, counts.strip(), kind) for name, counts, kind in found]
    assert sorted(rows) == sorted(
        [
            ("square", "FINISHED: 3", "NORMAL_TASK"),
            ("Counter.add", "FINISHED: 1", "ACTOR_TASK"),
            ("fail", "FAILED: 1", "NORMAL_TASK"),
            ("Counter.__init__", "FINISHED: 1", "ACTOR_CREATION_TASK"),
        ]
    )
    assert "total_tasks: 4" in view.summary
    assert "total_actor_tasks: 1" in view.summary


def test_trio_events_agent_shows_what_ray_s_agent_shows(views: dict[AgentKind, TaskView]) -> None:
    ours, rays = views["trio-events"], views["ray"]
    assert ours.comparable() == rays.comparable()
    assert ours.summary == rays.summary


def test_the_tasks_went_through_trio_events_agent_to_the_gcs(
    views: dict[AgentKind, TaskView],
) -> None:
    metrics = views["trio-events"].agent_metrics

    def value(name: str) -> float:
        # Ray's series carry Ray's tags (ip, pid, SessionName) beside the consumer.
        found = re.search(rf'^{name}\{{[^}}]*consumer="ray_gcs"[^}}]*\}} (\S+)$', metrics, re.M)
        return float(found.group(1)) if found else 0.0

    assert value("ray_aggregator_agent_published_events_total") > 0
    assert value("ray_aggregator_agent_publish_failures_total") == 0
