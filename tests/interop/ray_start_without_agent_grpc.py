"""``ray start`` whose dashboard agent leaves the agent gRPC port to ``trio-events agent``.

Run as ``python ray_start_without_agent_grpc.py <ray start arguments>`` with a Ray-enabled
Python; it must never import trio_events (Ray's generated protobuf modules and ours register
the same message names in protobuf's default pool).

With ``ray[default]`` installed, Ray's dashboard agent binds the agent gRPC port
(``--dashboard-agent-grpc-port``, the port core workers and the GCS send events to) for its own
aggregator. Started ``--minimal`` it does not, and the dashboard head, which ``ray list tasks``
and ``ray summary tasks`` need, is still complete. Ray decides ``--minimal`` for the agent in
``services.start_raylet`` from ``utils.get_dashboard_dependency_error()``; this script makes
that one call answer "minimal" while the raylet's command line is built, and changes nothing
else. This is what replacing Ray's agent with ours looks like on a real node (docs/ray-interop.md).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

services: Any = importlib.import_module("ray._private.services")
utils: Any = importlib.import_module("ray._private.utils")
scripts: Any = importlib.import_module("ray.scripts.scripts")

_start_raylet = services.start_raylet
_dependency_error = utils.get_dashboard_dependency_error


def _no_agent_grpc() -> ImportError:
    return ImportError("the agent gRPC port is served by trio-events agent")


def start_raylet(*args: Any, **kwargs: Any) -> Any:
    utils.get_dashboard_dependency_error = _no_agent_grpc
    try:
        return _start_raylet(*args, **kwargs)
    finally:
        utils.get_dashboard_dependency_error = _dependency_error


services.start_raylet = start_raylet

if __name__ == "__main__":
    sys.argv[0] = "ray"
    sys.exit(scripts.main())
