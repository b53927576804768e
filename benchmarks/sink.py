"""A minimal, fast HTTP sink for the benchmarks (its own process).

``python -m benchmarks.sink [--port 0] [--latency-ms MS]`` prints ``sink: listening on PORT``
once it serves. ``--latency-ms`` delays every answer to an export POST by that long (a receiver
that takes time per request, such as one that writes to a database before answering); the
answer is still a single send.
It is the project's own HTTP/1.1 server (``trio_events._http_server``, h11 on trio) with a
handler that does as little as possible, so that the sink does not compete for the CPU with
what is measured:

- counts the events of a POST body without parsing it: every exported event is a JSON object
  with exactly one ``"eventId"`` key (``"event_id"`` with proto field names), and no other
  message in Ray's schema has a field of that name; inside JSON strings a quote is escaped, so
  the pattern cannot occur in values (``tests/test_benchmarks_smoke.py`` checks the count
  against a real parse);
- stamps each POST with ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for every process
  of the machine) and keeps the first and last stamp, for throughput;
- for the latency benchmark, finds the request ids the ingest client put in each event's
  ``message`` (``"message":"bench:<id>"``) with one regular-expression pass, and records
  ``(stamp, {id: events})`` per POST.

Control endpoints (the harness's, all under ``/_``): ``GET /_stats``, ``GET /_latency``,
``POST /_reset``, ``POST /_pause`` (answer 503 to POSTs from now on, so an agent keeps its
events buffered), ``POST /_resume``. Any other POST is an export.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from collections import Counter
from typing import Any

import orjson
import trio

from trio_events._http_server import Request, Response, serve_http

_ID = re.compile(rb'"message":\s*"bench:(\d+)"')
_OK = Response(200, b"", (("content-type", "application/json"),))
_BUSY = Response.text(503, "paused")


def count_events(body: bytes) -> int:
    """The number of exported events in a JSON array body (without parsing it)."""
    return body.count(b'"eventId"') or body.count(b'"event_id"')


class Sink:
    def __init__(self, *, track_ids: bool = False, latency: float = 0.0) -> None:
        self.track_ids = track_ids
        self.latency = latency
        self.paused = False
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.posts = 0
        self.bytes = 0
        self.refused = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.by_post: list[tuple[int, dict[int, int]]] = []

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "posts": self.posts,
            "bytes": self.bytes,
            "refused": self.refused,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "paused": self.paused,
        }

    async def handle(self, request: Request) -> Response:
        now = time.monotonic_ns()
        path = request.path
        if path.startswith("/_"):
            return self.control(request.method, path)
        if request.method != "POST":
            return Response.text(405, "POST events here.")
        if self.paused:
            self.refused += 1
            return _BUSY
        body = request.body
        n = count_events(body)
        self.events += n
        self.posts += 1
        self.bytes += len(body)
        if self.first_ns is None:
            self.first_ns = now
        self.last_ns = now
        if self.track_ids:
            ids = Counter(int(i) for i in _ID.findall(body))
            self.by_post.append((now, dict(ids)))
        if self.latency:
            await trio.sleep(self.latency)
        return _OK

    def control(self, method: str, path: str) -> Response:
        if path == "/_stats":
            return Response.json(200, orjson.dumps(self.stats()))
        if path == "/_latency":
            return Response.json(200, orjson.dumps(self.by_post, option=orjson.OPT_NON_STR_KEYS))
        if method != "POST":
            return Response.text(405, "Control actions are POSTs.")
        if path == "/_reset":
            self.reset()
        elif path == "/_pause":
            self.paused = True
        elif path == "/_resume":
            self.paused = False
        else:
            return Response.text(404, "Unknown control path.")
        return Response.json(200, orjson.dumps(self.stats()))


async def main(port: int, track_ids: bool, latency: float = 0.0) -> None:
    sink = Sink(track_ids=track_ids, latency=latency)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(
            serve_http, sink.handle, "127.0.0.1", port, max_body_bytes=256 * 1024 * 1024
        )
        bound: int = await nursery.start(serve)
        print(f"sink: listening on {bound}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--track-ids", action="store_true", help="record ids for latency")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every answer")
    args = parser.parse_args()
    try:
        trio.run(main, args.port, args.track_ids, args.latency_ms / 1000)
    except KeyboardInterrupt:
        sys.exit(0)
