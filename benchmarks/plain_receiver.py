"""A receiver as many real ones are: Python's own ``http.server``, one thread per connection.

``python -m benchmarks.plain_receiver`` prints ``plain-receiver: listening on PORT``. It answers
every POST with 200 and a small JSON body. ``BaseHTTPRequestHandler`` writes the status line and
headers in one send and the body in a second, on a socket without ``TCP_NODELAY``: Nagle's
algorithm holds the body until the client acknowledges the headers, and the client's delayed
ACK holds that acknowledgement for about 40 ms on Linux. So each answer takes ~40 ms whatever
the work, which is what a publisher with one request in flight runs into against many real
services. Counting is :func:`benchmarks.sink.count_events`; ``GET /_stats`` and
``POST /_reset`` are the harness's, as in :mod:`benchmarks.sink`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.sink import count_events

_lock = threading.Lock()
_stats: dict[str, Any] = {}


def _reset() -> None:
    with _lock:
        _stats.update(events=0, posts=0, bytes=0, first_ns=None, last_ns=None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the agents' HTTP clients expect

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would cost more than the receiver's work

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # first send: status line and headers
        self.wfile.write(body)  # second send: the body

    def do_GET(self) -> None:
        if self.path == "/_stats":
            with _lock:
                body = json.dumps(_stats).encode()
            self._answer(200, body)
        else:
            self._answer(404, b"{}")

    def do_POST(self) -> None:
        now = time.monotonic_ns()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path == "/_reset":
            _reset()
            self._answer(200, b"{}")
            return
        n = count_events(body)
        with _lock:
            _stats["events"] += n
            _stats["posts"] += 1
            _stats["bytes"] += len(body)
            if _stats["first_ns"] is None:
                _stats["first_ns"] = now
            _stats["last_ns"] = now
        self._answer(200, b'{"status":"ok"}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _reset()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"plain-receiver: listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
