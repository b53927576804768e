"""Ray 2.60's own ``AggregatorAgent`` behind a ``grpc.aio`` server, for same-run comparisons.

``python -m benchmarks.ray_agent --export-url URL`` (in an environment with
``ray[default]==2.60.0``; ``nox -s bench`` installs it) prints ``ray-agent: listening on PORT``.

This is how Ray's dashboard agent hosts the module: it constructs
``ray.dashboard.modules.aggregator.aggregator_agent.AggregatorAgent(dashboard_agent)`` and calls
``await module.run(server)`` with its ``grpc.aio`` server, which registers the servicer and then
runs the publishers. The dashboard agent object is only read for ``ip``, ``session_name``,
``events_export_addr`` and ``gcs_client``; a small stand-in supplies them (no GCS: Ray's GCS
and dashboard-head publishers are off by default, as here). Everything else — the buffer, the
HTTP publisher with its ``MessageToJson`` conversion in a one-thread executor, aiohttp — is
Ray's code, unmodified, with Ray's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal


class _DashboardAgentStandIn:
    def __init__(self, export_url: str) -> None:
        self.ip = "127.0.0.1"
        self.session_name = "session_bench"
        self.events_export_addr = export_url
        self.gcs_client = None


async def serve(export_url: str) -> None:
    from grpc import aio
    from ray.dashboard.modules.aggregator.aggregator_agent import AggregatorAgent

    agent = AggregatorAgent(_DashboardAgentStandIn(export_url))
    # Ray's dashboard agent sets no message size limit below the gRPC default for this port
    # besides AGENT_GRPC_MAX_MESSAGE_LENGTH (20 MiB); requests here are far smaller.
    options = [("grpc.max_receive_message_length", 20 * 1024 * 1024)]
    server = aio.server(options=options)
    port = server.add_insecure_port("127.0.0.1:0")
    running = asyncio.ensure_future(agent.run(server))
    await asyncio.sleep(0)  # run() registers the servicer before its first await
    await server.start()
    print(f"ray-agent: listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop(1)
    running.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR", args.export_url)
    asyncio.run(serve(args.export_url))


if __name__ == "__main__":
    main()
