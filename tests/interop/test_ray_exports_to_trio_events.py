"""A real Ray 2.60 cluster whose GCS and core workers export their events to ``trio-events agent``.

Per docs/ray-interop.md: minimal Ray started with ``--dashboard-agent-grpc-port`` set to the
port ``trio-events agent`` listens on; the GCS health-checks it (ReporterService/HealthCheck)
and then exports, the core workers call AddEvents on it directly. The agent publishes every
event type to ``trio-events collect``, and the tests read the merged timelines from the
collector's SQLite store with the query functions behind ``trio-events query``.

Run on a fresh cluster per way of switching the events on: environment variables with either
core-worker path for task events (the 2.60 RayTaskEventRecorder, the older TaskEventBuffer),
and ``--system-config`` on the head (the recipe in the docs: no variable on the driver).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from tests.interop import _checks
from tests.interop._harness import (
    EVENT_SWITCHES,
    Agent,
    Collector,
    RayCluster,
    ray_env,
    start_agent,
    start_collector,
    wait_until,
)
from trio_events.store._query import counts, format_counts, timeline

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.interop.conftest import RayInstall

# Ray logs these when an AddEvents call fails or cannot be made, or when the GCS gives up on
# the agent's health check (it then never exports): none may appear.
EXPORT_ERRORS = (
    r"Failed to record ray event"
    r"|Failed to send task events"
    r"|EventAggregatorClient is not connected"
    r"|Event aggregator client is not connected"
    r"|Failed to establish connection to the event\+metrics exporter agent"
)
# Ray's OpenTelemetry metric export to the same port gets UNIMPLEMENTED from our agent.
METRICS_EXPORT_WARNING = r"Failed to export metrics to the metrics agent"


@attrs.frozen
class Exported:
    switches: str
    collector: Collector
    agent: Agent
    cluster: RayCluster
    workload: dict[str, Any]

    @property
    def db(self) -> Path:
        return self.collector.db


@pytest.fixture(scope="module", params=sorted(EVENT_SWITCHES))
def exported(
    request: pytest.FixtureRequest,
    minimal_ray: RayInstall,
    tmp_path_factory: pytest.TempPathFactory,
    ray_temp_dir: Path,
) -> Iterator[Exported]:
    """Collector, agent and cluster up; the workload run; all its events arrived."""
    name: str = request.param
    switches = EVENT_SWITCHES[name]
    log_dir = tmp_path_factory.mktemp(f"interop-{name}")
    env = ray_env(**switches.env)
    with contextlib.ExitStack() as stack:
        collector = start_collector(log_dir)
        stack.callback(collector.process.stop)
        agent = start_agent(log_dir, collector.url)
        stack.callback(agent.process.stop)
        short = str(sorted(EVENT_SWITCHES).index(name))  # Ray's socket paths are bounded
        cluster = RayCluster.start(
            log_dir=log_dir,
            temp_dir=ray_temp_dir / short,
            env=env,
            agent_grpc_port=agent.grpc_port,
            agent_grpc_served_by="trio-events",
            system_config=switches.system_config,
        )
        stack.callback(cluster.stop)

        def diagnostics() -> str:
            ray_lines = cluster.log_lines(EXPORT_ERRORS + "|HealthCheck|metrics agent")
            return "\n".join(
                [_checks.describe(collector.db), agent.process.describe(2000), *ray_lines[-20:]]
            )

        # The GCS exports only after its health check of our agent: its node is the sign.
        _checks.wait_for_store(
            "the GCS's first events", collector.db, _checks.node_registered, {}, diagnostics
        )
        workload = _checks.run_workload(
            cluster.gcs_address, collector.db, log_dir=log_dir, env=env, details=diagnostics
        )
        print(f"\n[{name}] Ray {workload['ray_version']} exported, as stored:\n")
        print(format_counts(counts(collector.db)))
        yield Exported(name, collector, agent, cluster, workload)


def test_every_event_type_ray_emits_arrives(exported: Exported) -> None:
    present = set(_checks.type_counts(exported.db))
    assert present == _checks.GCS_EVENT_TYPES | _checks.CORE_WORKER_EVENT_TYPES
    sources = _checks.check_common_fields(
        exported.db, exported.workload, exported.cluster.session_name
    )
    assert sources["GCS"] > 0
    assert sources["CORE_WORKER"] > 0
    assert sum(sources.values()) == counts(exported.db).total  # all of them Ray's


def test_task_lifecycle_merges_to_finished(exported: Exported) -> None:
    _checks.check_tasks(exported.db, exported.workload)


def test_failed_task_carries_its_error(exported: Exported) -> None:
    _checks.check_failed_task(exported.db, exported.workload)


def test_actor_definition_and_lifecycle(exported: Exported) -> None:
    _checks.check_actor(exported.db, exported.workload)


def test_workers_profile_events(exported: Exported) -> None:
    _checks.check_profiles(exported.db, exported.workload)


def test_driver_job_definition_and_lifecycle(exported: Exported) -> None:
    _checks.check_job(exported.db, exported.workload)


def test_node_and_worker_events(exported: Exported) -> None:
    _checks.check_node(exported.db, exported.workload)
    _checks.check_workers(exported.db, exported.workload)


def test_ray_logs_no_export_failure_and_agent_stays_healthy(exported: Exported) -> None:
    """Every AddEvents call succeeded; the metric exports our agent answers UNIMPLEMENTED
    (visible as warnings in Ray's logs) leave it serving and healthy."""
    assert exported.cluster.log_lines(EXPORT_ERRORS) == []
    warnings = exported.cluster.log_lines(METRICS_EXPORT_WARNING)
    print(f"\n[{exported.switches}] Ray logged {len(warnings)} metrics-export warnings (expected)")
    assert exported.agent.process.returncode is None
    status, body = exported.agent.get("/healthz")
    assert status == 200, body
    status, metrics = exported.agent.get("/metrics")
    assert status == 200
    # Ray's series carry Ray's tags (ip, pid, SessionName), as Ray's own do.
    received = re.search(
        r"^ray_aggregator_agent_events_received_total\{[^}]*\} (\S+)$", metrics, re.M
    )
    assert received is not None, metrics
    assert float(received.group(1)) >= counts(exported.db).total
    assert "Traceback" not in exported.agent.process.output()


def test_stopping_ray_flushes_node_dead(exported: Exported) -> None:
    """Last: stop the cluster; the GCS's shutdown flush reaches the agent (node DEAD)."""
    exported.cluster.stop()
    node_id = exported.workload["node_id"]

    def node_dead() -> bool | None:
        return (
            True
            if _checks.states(timeline(exported.db, "node", node_id))[-1:] == ["DEAD"]
            else None
        )

    wait_until("the node's DEAD transition", node_dead, timeout=60)
    dead = timeline(exported.db, "node", node_id).transitions[-1]
    assert dead.error_type, dead  # the reason Ray gives, e.g. the drain on SIGTERM
