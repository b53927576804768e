"""trio-events and Ray's OWN aggregator agent (needs ``ray[default]``; skipped with plain ``ray``).

One cluster whose dashboard agent runs Ray's ``AggregatorAgent`` with its HTTP publisher
pointed at ``trio-events collect``
(``RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR``, every event type exposed):

- our recorder (``trio-events loadgen``) exports into Ray's aggregator over gRPC, and every
  event it got acknowledged comes out of Ray's HTTP publisher into our collector;
- Ray's own workload events take the supported path (Ray's aggregator, then HTTP) into our
  collector, with the same merged timelines as when ``trio-events agent`` carries them;
- the JSON Ray's publisher posts is exactly what our converter makes of the same events.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import pytest
from google.protobuf import json_format

from tests.interop import _checks
from tests.interop._harness import (
    EVENT_SWITCHES,
    Collector,
    Process,
    RayCluster,
    clean_env,
    free_ports,
    ray_env,
    start_collector,
    trio_events,
    wait_until,
)
from trio_events import pb
from trio_events.agent._convert import JsonConverter
from trio_events.store._query import counts, format_counts
from trio_events.store._sqlite import connect_read_only

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.interop.conftest import RayInstall

LOADGEN_EVENTS = 500
_SUMMARY = re.compile(
    r"^loadgen: events=(\d+) exported=(\d+) dropped=(\d+) failures=(\d+) ", re.MULTILINE
)


@attrs.frozen
class RaysAggregator:
    collector: Collector
    cluster: RayCluster
    grpc_port: int  # Ray's dashboard agent: its aggregator's AddEvents
    env: dict[str, str]
    log_dir: Path

    @property
    def db(self) -> Path:
        return self.collector.db

    def diagnostics(self) -> str:
        ray_lines = self.cluster.log_lines(r"aggregator|Failed|rror")
        return "\n".join([_checks.describe(self.db), *ray_lines[-30:]])


@pytest.fixture(scope="module")
def rays_aggregator(
    default_ray: RayInstall, tmp_path_factory: pytest.TempPathFactory, ray_temp_dir: Path
) -> Iterator[RaysAggregator]:
    log_dir = tmp_path_factory.mktemp("interop-rays-aggregator")
    with contextlib.ExitStack() as stack:
        collector = start_collector(log_dir)
        stack.callback(collector.process.stop)
        env = ray_env(
            **EVENT_SWITCHES["env-task-event-recorder"].env,
            RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR=collector.url,
            RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES="ALL",
        )
        (grpc_port,) = free_ports(1)
        cluster = RayCluster.start(
            log_dir=log_dir,
            temp_dir=ray_temp_dir / "a",
            env=env,
            agent_grpc_port=grpc_port,
            agent_grpc_served_by="ray",
        )
        stack.callback(cluster.stop)
        aggregator = RaysAggregator(collector, cluster, grpc_port, env, log_dir)
        # GCS -> Ray's aggregator -> Ray's HTTP publisher -> our collector: the path is up.
        _checks.wait_for_store(
            "the GCS's first events via Ray's aggregator",
            collector.db,
            _checks.node_registered,
            {},
            aggregator.diagnostics,
        )
        yield aggregator


def _stored_ids(db: Path) -> set[str]:
    try:
        with contextlib.closing(connect_read_only(db)) as conn:
            return {bytes(row[0]).hex() for row in conn.execute("SELECT event_id FROM events")}
    except (FileNotFoundError, sqlite3.OperationalError):
        return set()


def test_our_recorder_exports_into_rays_aggregator(rays_aggregator: RaysAggregator) -> None:
    log_dir = rays_aggregator.log_dir
    ids_file = log_dir / "loadgen-ids.txt"
    argv = trio_events(
        "loadgen",
        "--target", f"127.0.0.1:{rays_aggregator.grpc_port}",
        "--events", str(LOADGEN_EVENTS),
        "--seed", "7",
        "--batch-interval", "0.2",
        "--ids-out", str(ids_file),
    )  # fmt: skip
    with Process.start("loadgen", argv, log_dir=log_dir, env=clean_env()) as loadgen:
        code = loadgen.wait(120)
    summary = _SUMMARY.search(loadgen.output())
    assert code == 0, loadgen.describe()
    assert summary is not None, loadgen.describe()
    events, exported, dropped, failures = (int(g) for g in summary.groups())
    assert (events, exported, dropped, failures) == (LOADGEN_EVENTS, LOADGEN_EVENTS, 0, 0)

    # Merged groups carry the id of their first event: fewer ids than events.
    acknowledged = set(ids_file.read_text().split())
    assert 0 < len(acknowledged) <= LOADGEN_EVENTS

    def all_stored() -> bool | None:
        return True if acknowledged <= _stored_ids(rays_aggregator.db) else None

    wait_until(
        "every acknowledged event to come out of Ray's aggregator",
        all_stored,
        timeout=60,
        details=lambda: (
            f"{len(acknowledged - _stored_ids(rays_aggregator.db))} missing; "
            + rays_aggregator.diagnostics()
        ),
    )
    print(f"\n{len(acknowledged)} loadgen events went through Ray's aggregator into the collector")


def test_rays_workload_through_rays_aggregator(rays_aggregator: RaysAggregator) -> None:
    """The supported path (Ray's aggregator, HTTP) gives the same timelines as our agent."""
    db = rays_aggregator.db
    workload = _checks.run_workload(
        rays_aggregator.cluster.gcs_address,
        db,
        log_dir=rays_aggregator.log_dir,
        env=rays_aggregator.env,
        details=rays_aggregator.diagnostics,
    )
    print("\nRay's aggregator published, as stored (loadgen's events included):\n")
    print(format_counts(counts(db)))
    _checks.check_common_fields(db, workload, rays_aggregator.cluster.session_name)
    _checks.check_tasks(db, workload)
    _checks.check_failed_task(db, workload)
    _checks.check_actor(db, workload)
    _checks.check_profiles(db, workload)
    _checks.check_job(db, workload)
    _checks.check_node(db, workload)
    _checks.check_workers(db, workload)


def test_rays_json_is_what_our_converter_produces(rays_aggregator: RaysAggregator) -> None:
    """Each event Ray's publisher posted, parsed into our RayEvent and converted back by our
    compiled converter, gives exactly the JSON Ray sent (no field unknown to our schema)."""
    converter = JsonConverter()
    stored: list[dict[str, Any]] = _checks.events(rays_aggregator.db)
    assert len(stored) > LOADGEN_EVENTS // 4  # what the tests above sent, at least
    mismatches = []
    for event in stored:
        message = json_format.ParseDict(event, pb.RayEvent())  # unknown fields raise
        converted = converter.to_dict(message)
        if converted != event:
            mismatches.append((orjson.dumps(event).decode(), orjson.dumps(converted).decode()))
    assert mismatches == []
    types = {e["eventType"] for e in stored}
    print(f"\n{len(stored)} events of {len(types)} types: Ray's JSON == our converter's")
