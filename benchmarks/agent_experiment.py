"""Run ``trio-events agent`` with an experimental change patched in, for proposal measurements.

The agent's modules are not edited: the patch is applied in this process, then the real CLI
runs. Use it through the harness::

    TRIO_EVENTS_BENCH_AGENT_WRAPPER=benchmarks/agent_experiment.py \\
    TRIO_EVENTS_EXPERIMENT=nodelay python benchmarks/run.py --only ingest

``TRIO_EVENTS_EXPERIMENT`` is a comma-separated list of:

- ``nodelay``: TCP_NODELAY on the gRPC listening socket (accepted sockets inherit it on Linux).
  ``AggregatorAgent._bind`` uses ``socket.create_server``, whose socket has ``proto == 0``, and
  asyncio only sets TCP_NODELAY on transports whose socket says ``IPPROTO_TCP``: so today
  every AddEvents reply (headers, message and trailers in separate writes) waits for the
  client's delayed ACK, about 40 ms.
- ``h2repr``: a constant-time ``repr`` for h2 frames. h2 formats ``repr(frame)`` for a trace
  log line on every received frame even when nothing is logged; for DATA frames that formats
  the payload.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any


def _apply(experiments: set[str]) -> None:
    if "nodelay" in experiments:
        create_server = socket.create_server

        def create_server_nodelay(*args: Any, **kwargs: Any) -> socket.socket:
            sock = create_server(*args, **kwargs)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

        socket.create_server = create_server_nodelay
    if "h2repr" in experiments:
        import hyperframe.frame

        hyperframe.frame.Frame.__repr__ = lambda self: type(self).__name__  # type: ignore[method-assign]


if __name__ == "__main__":
    _apply(set(filter(None, os.environ.get("TRIO_EVENTS_EXPERIMENT", "").split(","))))
    from trio_events._cli._main import main

    sys.exit(main(sys.argv[1:]))
