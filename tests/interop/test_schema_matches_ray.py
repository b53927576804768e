"""Our wire schema against the installed Ray's own compiled descriptors, message by message.

``tests/test_schema.py`` checks the protos against a table transcribed from Ray 2.60; this
asks the real thing: Ray's ``ray.core.generated`` modules, loaded in a subprocess (never in
this process, where they would clash with ours), describe every message and enum reachable
from AddEvents and HealthCheck, and the description must equal ours field for field.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from tests.interop._descriptors import describe
from tests.interop._harness import HERE, PYTHON, clean_env
from trio_events import pb

if TYPE_CHECKING:
    from tests.interop.conftest import RayInstall


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    found = []
    for section in ("methods", "messages", "enums"):
        for name in sorted(set(ours[section]) | set(theirs[section])):
            mine, ray = ours[section].get(name), theirs[section].get(name)
            if mine != ray:
                found.append(f"{section} {name}:\n  ours: {mine}\n  Ray:  {ray}")
    return found


def test_wire_schema_equals_the_installed_rays(ray_install: RayInstall) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "tests.interop.ray_descriptors"],
        cwd=HERE.parents[1],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout.splitlines()[-1])
    ours = describe(
        [
            pb.AddEventsRequest.DESCRIPTOR.file.services_by_name["EventAggregatorService"],
            pb.HealthCheckRequest.DESCRIPTOR.file.services_by_name["ReporterService"],
        ]
    )
    assert _differences(ours, theirs) == []
    # What was compared: both RPCs, and every event type's payload down to the leaves.
    assert set(ours["methods"]) == {
        "/ray.rpc.events.EventAggregatorService/AddEvents",
        "/ray.rpc.ReporterService/HealthCheck",
    }
    assert "ray.rpc.events.RayEvent" in ours["messages"]
    print(f"\nCompared {len(ours['messages'])} messages and {len(ours['enums'])} enums with Ray's.")
