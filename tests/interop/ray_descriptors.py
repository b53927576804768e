"""Print the installed Ray's wire schema as JSON: ``python -m tests.interop.ray_descriptors``.

Run from the repository root as a subprocess with a Ray-enabled Python (never imported by
pytest, never alongside trio_events): it loads Ray's own generated modules and describes them
with ``_descriptors``.
"""

from __future__ import annotations

import importlib
import json

from tests.interop._descriptors import describe


def main() -> None:
    aggregator = importlib.import_module("ray.core.generated.events_event_aggregator_service_pb2")
    reporter = importlib.import_module("ray.core.generated.reporter_pb2")
    services = [
        aggregator.DESCRIPTOR.services_by_name["EventAggregatorService"],
        reporter.DESCRIPTOR.services_by_name["ReporterService"],
    ]
    print(json.dumps(describe(services), sort_keys=True))


if __name__ == "__main__":
    main()
