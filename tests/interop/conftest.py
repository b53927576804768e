"""Which Ray is installed decides which interop tests run; Ray itself only runs in subprocesses.

- Any Ray 2.60 (``nox -s interop`` installs ``ray[default]``): the GCS and core workers export
  to ``trio-events agent`` on the agent gRPC port, which Ray's dashboard agent leaves alone (it is
  minimal with plain ``ray``, and started minimal by ``ray_start_without_agent_grpc.py`` with
  ``ray[default]``) (``test_ray_exports_to_trio_events.py``).
- ``ray[default]``: Ray's own aggregator agent owns that port; trio-events' recorder exports
  into it and Ray's HTTP publisher posts to ``trio-events collect``
  (``test_trio_events_exports_to_ray.py``); and the dashboard's ``ray list tasks`` and
  ``ray summary tasks`` are compared with trio-events agent and with Ray's own agent feeding
  the GCS (``test_dashboard_keeps_every_task.py``).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from tests.interop._harness import PYTHON, clean_env, ray_executable

if TYPE_CHECKING:
    from collections.abc import Iterator

RAY_VERSION = "2.60.0"


@attrs.frozen
class RayInstall:
    version: str
    has_dashboard: bool  # ray[default]: the dashboard agent (and its aggregator) is complete


@pytest.fixture(scope="session")
def ray_install() -> RayInstall:
    try:
        version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"ray is not installed; `nox -s interop` installs ray=={RAY_VERSION}")
    if version != RAY_VERSION:
        pytest.skip(f"these tests are for ray=={RAY_VERSION}; ray {version} is installed")
    if not Path(ray_executable()).exists():
        pytest.skip(f"no `ray` command beside {PYTHON}")
    # Ray's own test for a minimal install, asked in a subprocess: never import ray here.
    probe = subprocess.run(
        [PYTHON, "-c", "import ray._private.utils as u; print(u.get_dashboard_dependency_error())"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=True,
    )
    return RayInstall(version, has_dashboard=probe.stdout.strip().splitlines()[-1] == "None")


@pytest.fixture(scope="module")
def minimal_ray(ray_install: RayInstall) -> RayInstall:
    """Any Ray 2.60: the cluster is started with its dashboard agent off the gRPC port."""
    return ray_install


@pytest.fixture(scope="module")
def default_ray(ray_install: RayInstall) -> RayInstall:
    if not ray_install.has_dashboard:
        pytest.skip(
            "Ray's aggregator agent needs ray[default] (the dashboard agent's non-minimal "
            f"modules); install ray[default]=={RAY_VERSION} to run these"
        )
    return ray_install


@pytest.fixture(scope="module")
def ray_temp_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A short --temp-dir for Ray (its socket paths must fit in 107 bytes).

    Removed afterwards unless a test failed meanwhile, so Ray's logs stay for a post-mortem.
    """
    failed_before = request.session.testsfailed
    path = Path(tempfile.mkdtemp(prefix="tei-ray-", dir="/tmp"))
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)
    else:
        print(f"\nRay's session directory (logs) is kept in {path}")
