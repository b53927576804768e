"""Ray's own state CLI and SDK against ``trio-events history``, beside the live dashboard.

Needs ``ray[default]`` (Ray's dashboard answers the live side; ``nox -s interop-default``). One
cluster with its dashboard on a free port and Ray's aggregator publishing every event type to
``trio-events collect``. While the workload's job is open, Ray's CLI asks the live dashboard;
after the job has ended and the cluster is gone, the same commands ask ``trio-events history``
over the collector's store. Both answers are printed side by side, and they must agree on what
the events carry (ids, names, types, states of finished tasks, nodes, workers, errors).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from tests.interop import _checks
from tests.interop._harness import (
    EVENT_SWITCHES,
    PYTHON,
    Process,
    RayCluster,
    Workload,
    free_ports,
    ray_env,
    ray_executable,
    start_collector,
    trio_events,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from tests.interop.conftest import RayInstall

# What the Python SDK answers, as JSON, run in a Ray-enabled subprocess (never import ray here).
SDK_SCRIPT = """
import json, sys
from ray.util.state import list_tasks, summarize_tasks
tasks = list_tasks(address=sys.argv[1], filters=[("state", "=", "FAILED")], detail=True)
print(json.dumps([{"task_id": t.task_id, "name": t.name, "error_type": t.error_type,
                   "error_message": t.error_message} for t in tasks]))
"""
COMPARED_TASK_FIELDS = ("name", "type", "job_id", "func_or_class_name", "node_id", "worker_id")


@attrs.frozen
class Answers:
    """What Ray's CLI and SDK printed for one address."""

    tasks: list[dict[str, Any]]
    actors: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    summary: str
    failed: list[dict[str, Any]]


def run(argv: list[str], env: Mapping[str, str]) -> str:
    """stdout of a Ray client command (stderr, where Ray logs and warns, kept apart)."""
    done = subprocess.run(
        argv, capture_output=True, text=True, env=dict(env), timeout=180, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def ray_cli(address: str, env: Mapping[str, str], *args: str) -> str:
    return run([ray_executable(), *args, "--address", address], env)


def ask(address: str, env: Mapping[str, str]) -> Answers:
    def listed(resource: str) -> list[dict[str, Any]]:
        output = ray_cli(address, env, "list", resource, "--format", "json", "--limit", "1000")
        result: list[dict[str, Any]] = json.loads(output)
        return result

    failed = json.loads(run([PYTHON, "-c", SDK_SCRIPT, address], env).strip().splitlines()[-1])
    return Answers(
        tasks=listed("tasks"),
        actors=listed("actors"),
        nodes=listed("nodes"),
        summary=ray_cli(address, env, "summary", "tasks"),
        failed=failed,
    )


def start_cluster_with_dashboard(
    log_dir: Path, temp_dir: Path, env: Mapping[str, str], agent_grpc_port: int, dashboard_port: int
) -> RayCluster:
    gcs, client, agent_http, metrics, runtime_env = free_ports(5)
    argv = [
        ray_executable(),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--num-cpus=1",
        "--num-gpus=0",
        "--object-store-memory=100000000",
        f"--dashboard-agent-grpc-port={agent_grpc_port}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}",
        f"--runtime-env-agent-port={runtime_env}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        "--log-style=record",
    ]
    process = Process.start("ray", argv, log_dir=log_dir, env=env, new_session=True)
    cluster = RayCluster(process, temp_dir, f"127.0.0.1:{gcs}", agent_grpc_port)
    try:
        process.wait_for_output(r"Ray runtime started", timeout=180)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@attrs.frozen
class SideBySide:
    workload: dict[str, Any]
    live: Answers
    history: Answers


@pytest.fixture(scope="module")
def side_by_side(
    default_ray: RayInstall, tmp_path_factory: pytest.TempPathFactory, ray_temp_dir: Path
) -> Iterator[SideBySide]:
    log_dir = tmp_path_factory.mktemp("interop-history")
    with contextlib.ExitStack() as stack:
        collector = start_collector(log_dir)
        stack.callback(collector.process.stop)
        env = ray_env(
            **EVENT_SWITCHES["env-task-event-recorder"].env,
            RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR=collector.url,
            RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES="ALL",
        )
        grpc_port, dashboard_port, history_port = free_ports(3)
        cluster = start_cluster_with_dashboard(
            log_dir, ray_temp_dir / "h", env, grpc_port, dashboard_port
        )
        stack.callback(cluster.stop)
        db = collector.db

        def details() -> str:
            return "\n".join([_checks.describe(db), *cluster.log_lines(r"aggregator|rror")[-30:]])

        _checks.wait_for_store("the GCS's first events", db, _checks.node_registered, {}, details)
        with Workload.start(cluster.gcs_address, log_dir=log_dir, env=env) as driver:
            workload = driver.summary()
            _checks.wait_for_store(
                "the workers' task events", db, _checks.unexported_by_workers, workload, details
            )
            live = ask(f"http://127.0.0.1:{dashboard_port}", env)  # the job is still open
            driver.release()
        _checks.wait_for_store("the workload's events", db, _checks.missing, workload, details)
        cluster.stop()  # the cluster, its dashboard and its state API are gone

        argv = trio_events("history", "--db", str(db), "--listen", f"127.0.0.1:{history_port}")
        history_server = Process.start("history", argv, log_dir=log_dir, env=ray_env())
        stack.callback(history_server.stop)
        history_server.wait_for_output(r"History of [\d,]+ events at", timeout=60)
        history = ask(f"http://127.0.0.1:{history_port}", env)
        yield SideBySide(workload, live, history)


def _by_attempt(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["task_id"], r["attempt_number"]): r for r in rows}


def _show(title: str, live: object, history: object) -> None:
    print(f"\n--- {title}\n    live dashboard:     {live}\n    trio-events history: {history}")


def test_list_tasks_agrees_with_the_live_dashboard(side_by_side: SideBySide) -> None:
    live, history, workload = (
        _by_attempt(side_by_side.live.tasks),
        _by_attempt(side_by_side.history.tasks),
        side_by_side.workload,
    )
    executed = _checks.executed_task_ids(workload)
    for task_id in executed:
        key = (task_id, 0)
        assert key in live, (key, sorted(live))
        assert key in history, (key, sorted(history))
        _show(
            f"task {task_id}",
            {f: live[key][f] for f in ("name", "state", "node_id")},
            {f: history[key][f] for f in ("name", "state", "node_id")},
        )
        for name in COMPARED_TASK_FIELDS:
            assert history[key][name] == live[key][name], (name, live[key], history[key])
        # Finished and failed tasks were terminal while the dashboard was asked: same state.
        assert history[key]["state"] == live[key]["state"]
        assert history[key]["error_type"] == live[key]["error_type"]
    assert history[(workload["failed_task_id"], 0)]["state"] == "FAILED"
    # Ray's list is sorted by task id and excludes the driver; so is ours.
    assert [k[0] for k in history] == sorted(k[0] for k in history)
    assert all(r["type"] != "DRIVER_TASK" for r in side_by_side.history.tasks)


def test_failed_task_error_through_the_sdk(side_by_side: SideBySide) -> None:
    failed_id = side_by_side.workload["failed_task_id"]
    live = {t["task_id"]: t for t in side_by_side.live.failed}
    history = {t["task_id"]: t for t in side_by_side.history.failed}
    _show("list_tasks(filters=[('state', '=', 'FAILED')])", sorted(live), sorted(history))
    assert failed_id in history
    assert side_by_side.workload["failure_message"] in history[failed_id]["error_message"]
    assert history[failed_id]["error_type"] == live[failed_id]["error_type"]


def test_actors_nodes_and_summary(side_by_side: SideBySide) -> None:
    workload = side_by_side.workload
    live_actor = next(a for a in side_by_side.live.actors if a["actor_id"] == workload["actor_id"])
    actor = next(a for a in side_by_side.history.actors if a["actor_id"] == workload["actor_id"])
    _show("actor", live_actor, actor)
    for name in ("class_name", "job_id", "node_id", "pid", "name"):
        assert actor[name] == live_actor[name], name
    assert (live_actor["state"], actor["state"]) == ("ALIVE", "DEAD")  # the job ended since
    live_node = next(n for n in side_by_side.live.nodes if n["node_id"] == workload["node_id"])
    node = next(n for n in side_by_side.history.nodes if n["node_id"] == workload["node_id"])
    _show("node", live_node, node)
    for name in ("node_ip", "resources_total", "is_head_node", "node_name", "state", "labels"):
        assert node[name] == live_node[name], name
    print("\n--- ray summary tasks, live dashboard:\n" + side_by_side.live.summary)
    print("--- ray summary tasks, trio-events history:\n" + side_by_side.history.summary)
    for name in ("square", "fail", "Counter.add"):
        assert name in side_by_side.history.summary
