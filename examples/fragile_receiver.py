"""A small receiver for Ray's HTTP event export, with a bug planted for docs/testing.md.

Run it, then fuzz it::

    python examples/fragile_receiver.py --port 8085 &
    trio-events fuzz-sink http://127.0.0.1:8085/events --examples 50 --seed 1

It looks reasonable: it parses each POSTed JSON array, keeps per-type counts and the latest
event time, and answers 500 when something goes wrong, as web frameworks do. The bug: it parses
timestamps with ``%S.%fZ``, so it only accepts 1 to 6 fractional digits. protobuf's JSON writes
0, 3, 6 or 9 digits (``2025-06-30T16:50:30Z`` for a whole second, nanoseconds as 9 digits), so
some of Ray's batches get a 500 forever, and Ray's publisher retries them forever.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS: Counter[str] = Counter()
LATEST: list[dt.datetime] = []


def ingest(events: list[dict[str, object]]) -> None:
    for event in events:
        stamp = str(event["timestamp"])
        when = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")  # the planted bug
        COUNTS[str(event.get("eventType", event.get("event_type")))] += 1
        LATEST[:] = [max([when, *LATEST])]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            ingest(json.loads(body))
        except Exception as exc:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(f"internal error: {exc}\n".encode())
            return
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8085, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"Listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
