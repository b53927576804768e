"""``trio-events history``: a read-only server over an event store, for after the cluster is gone.

Routes (every one is a GET; anything else is a 405):

- ``/api/v0/tasks`` and the rest of Ray's state API (:mod:`._history_api`), for the most recent
  session; ``/session/<name>/api/v0/...`` for any other, so Ray's CLI can be pointed at one
  session with ``--address http://HOST:PORT/session/<name>``;
- ``/api/v0/tasks/timeline?job_id=...`` (Ray's dashboard path; also ``/api/v0/timeline``): a
  Chrome trace (:mod:`._chrome_trace`);
- ``/api/version``: what Ray's job client checks before talking to a dashboard;
- ``/``, ``/session/<name>/``, ``/session/<name>/job/<id>``: the page (:mod:`._history_page`);
- ``/static/history.css``, ``/healthz``.

The history is folded once at start-up (``started()`` is called after that) and then followed:
a request arriving more than ``refresh_interval`` seconds after the last read first folds what
the store gained since. Every read of the index, and the folding, runs in a worker thread behind
one ``CapacityLimiter(1)``, so the event loop never blocks on SQLite or on a large answer.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.resources
import logging
import os
import urllib.parse
from typing import Final, NoReturn, final

import attrs
import orjson
import trio

from trio_events._http_server import Request, Response, serve_http
from trio_events.store._backend import StoreUnavailableError
from trio_events.store._chrome_trace import chrome_trace, job_attempts
from trio_events.store._history_api import RAY_VERSION, answer, error_body
from trio_events.store._history_index import HistoryIndex
from trio_events.store._history_page import render_home, render_job, render_session

logger = logging.getLogger("trio_events.store.history_server")

# Beside Ray's dashboard port (8265), so a live cluster's dashboard and the history of an old one
# can run on one machine.
DEFAULT_PORT: Final = 8266
_HTML: Final = (("content-type", "text/html; charset=utf-8"),)


@final
@attrs.frozen
class HistoryConfig:
    """Where the store is, where to listen, and how often to look for new events."""

    store_path: str
    host: str | None = "127.0.0.1"
    port: int = DEFAULT_PORT
    refresh_interval: float = 2.0

    def __attrs_post_init__(self) -> None:
        if self.refresh_interval < 0:
            raise ValueError(f"refresh_interval must be >= 0 seconds, not {self.refresh_interval}.")


def _stylesheet() -> bytes:
    return (
        importlib.resources.files("trio_events.store").joinpath("static/history.css").read_bytes()
    )


@final
class HistoryServer:
    """Serves one store's history; see the module docstring for the routes."""

    def __init__(self, config: HistoryConfig) -> None:
        self._config = config
        self._limiter = trio.CapacityLimiter(1)
        self._index: HistoryIndex | None = None
        self._last_refresh = float("-inf")
        self._css = _stylesheet()

    @property
    def index(self) -> HistoryIndex:
        if self._index is None:
            raise RuntimeError("The history server has not loaded its store yet; call run().")
        return self._index

    async def run(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Load the store, then serve until cancelled; ``started()`` gets the bound port."""
        path = self._config.store_path
        index = await trio.to_thread.run_sync(HistoryIndex, path, limiter=self._limiter)
        try:
            await trio.to_thread.run_sync(self._refresh, index, limiter=self._limiter)
            self._index = index
            self._last_refresh = trio.current_time()
            logger.info(
                "history: folded %d events from %s in %.1f s",
                index.history.events,
                os.fspath(path),
                index.load_seconds,
            )
            await serve_http(
                self.handle, self._config.host, self._config.port, task_status=task_status
            )
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(index.close, limiter=self._limiter)

    async def _refresh_if_stale(self) -> None:
        if trio.current_time() - self._last_refresh < self._config.refresh_interval:
            return
        # A database that is down for now: answer from the last fold, look again later.
        with contextlib.suppress(StoreUnavailableError):
            await trio.to_thread.run_sync(self._refresh, self.index, limiter=self._limiter)
        self._last_refresh = trio.current_time()

    @staticmethod
    def _refresh(index: HistoryIndex) -> None:
        if index.refresh():
            # The fold is long-lived: move it out of the collector's generations so a request's
            # garbage collection does not walk millions of objects (a latency spike otherwise).
            gc.freeze()

    async def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, f"{request.method} is not allowed; the history is read-only.")
        path = urllib.parse.unquote(request.path)
        if path == "/healthz":
            return Response.text(200, "ok")
        if path == "/static/history.css":
            return Response(200, self._css, (("content-type", "text/css; charset=utf-8"),))
        await self._refresh_if_stale()
        return await trio.to_thread.run_sync(self.route, path, request.query, limiter=self._limiter)

    def route(self, path: str, query: str) -> Response:
        """Answer one GET (synchronous: called in a worker thread)."""
        index = self.index
        session: str | None = None
        rest = path
        if path.startswith("/session/"):
            session, _, tail = path.removeprefix("/session/").partition("/")
            rest = "/" + tail
            if not any(s.name == session for s in index.sessions):
                return Response.text(404, f"The store has no session named {session!r}.")
        if rest == "/api/version":
            version = {
                "version": "trio-events",
                "ray_version": RAY_VERSION,
                "ray_commit": "",
                "session_name": session or index.latest_session(),
            }
            return Response.json(200, orjson.dumps(version))
        if rest.startswith("/api/v0/"):
            scope = session if session is not None else index.latest_session()
            if rest.rstrip("/") in ("/api/v0/tasks/timeline", "/api/v0/timeline"):
                job_id = dict(urllib.parse.parse_qsl(query)).get("job_id") or None
                trace = chrome_trace(index, job_attempts(index, scope, job_id))
                return Response.json(200, orjson.dumps(trace))
            status, body = answer(index, scope, rest, query)
            return Response.json(status, body)
        if rest.startswith("/api/"):
            return Response.json(404, error_body(f"{path} is not served by trio-events history."))
        if rest == "/" and session is None:
            return Response(200, render_home(index).encode(), _HTML)
        if session is not None and rest == "/":
            return Response(200, render_session(index, session).encode(), _HTML)
        if session is not None and rest.startswith("/job/"):
            job_id = rest.removeprefix("/job/").strip("/")
            return Response(200, render_job(index, session, job_id, query).encode(), _HTML)
        return Response.text(404, f"{path} is not a page of trio-events history; start at /.")
