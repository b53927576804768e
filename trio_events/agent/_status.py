"""The agent's status endpoint: Prometheus text at ``/metrics``, health at ``/healthz``.

Health is derived from the stages' state (is the gRPC server serving, each publisher's
statistics), never read back from metrics; the metrics compute their gauges themselves when
scraped (``set_function``), so serving them is only rendering the registry.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trio_events._http_server import Request, Response

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trio_events._metrics import Metrics
    from trio_events.agent._publisher_config import PublisherStatistics


def health(
    serving: bool,
    publishers: Sequence[PublisherStatistics],
    unhealthy_after: float,
    problems: Sequence[str] = (),
) -> tuple[bool, dict[str, object]]:
    """Unhealthy while the gRPC server is not ``serving``, a stage reports one of ``problems``
    (the spool is full, stalled or replaced), or a publisher has failed for longer than
    ``unhealthy_after`` seconds since its last success (or its start)."""
    reasons: list[str] = []
    if not serving:
        reasons.append("the gRPC server is not serving")
    reasons += problems
    detail: dict[str, object] = {}
    now = trio.current_time()
    for stats in publishers:
        since = max(0.0, now - stats.last_success)
        detail[stats.name] = {
            "delivered": stats.delivered,
            "unread": stats.unread,
            "consecutive_failures": stats.consecutive_failures,
            "seconds_since_last_success": round(since, 3),
        }
        if stats.consecutive_failures and since > unhealthy_after:
            reasons.append(
                f"publisher {stats.name} has failed for {since:.0f} s "
                f"({stats.consecutive_failures} attempts)"
            )
    return (not reasons, {"reasons": reasons, "publishers": detail, "time": time.time()})


async def answer_status(
    metrics: Metrics,
    check: Callable[[], tuple[bool, dict[str, object]]],
    request: Request,
) -> Response:
    """The answer to one request to the status endpoint (``check`` is the health check)."""
    if request.method not in ("GET", "HEAD"):
        return Response.text(405, "Only GET is served here.")
    if request.path == "/metrics":
        body = generate_latest(metrics.registry)
        return Response(200, body, (("content-type", CONTENT_TYPE_LATEST),))
    if request.path == "/healthz":
        healthy, detail = check()
        body = orjson.dumps({"status": "healthy" if healthy else "unhealthy", **detail})
        return Response.json(200 if healthy else 503, body)
    return Response.text(404, "Not found; try /metrics or /healthz.")
