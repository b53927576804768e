"""The ``history`` sub-command: serve a store's history (state API, page, Chrome trace).

``trio-events history --db PATH [--listen HOST:PORT]`` serves until Ctrl+C;
``--chrome-trace FILE [--job ID] [--session NAME]`` writes a trace and exits instead.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from typing import TYPE_CHECKING

import orjson
import trio

from trio_events.store._backend import StoreUnavailableError, describe, is_postgres
from trio_events.store._chrome_trace import chrome_trace, job_attempts
from trio_events.store._history_index import HistoryIndex
from trio_events.store._history_server import HistoryConfig, HistoryServer

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Mapping


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return trio.run(run_history, args)


def _write_trace(args: argparse.Namespace) -> int:
    try:
        index = HistoryIndex(args.db)
    except (FileNotFoundError, ValueError, StoreUnavailableError) as exc:
        print(f"trio-events history: error: {exc}", file=sys.stderr)
        return 1
    try:
        index.refresh()
        session = args.session or index.latest_session()
        if args.session and not any(s.name == args.session for s in index.sessions):
            print(
                f"trio-events history: error: the store {args.db} has no session named "
                f"{args.session!r}.",
                file=sys.stderr,
            )
            return 1
        trace = chrome_trace(index, job_attempts(index, session, args.job))
    finally:
        index.close()
    with open(args.chrome_trace, "wb") as out:
        out.write(orjson.dumps(trace))
    spans = sum(1 for e in trace if e.get("ph") == "X")
    print(
        f"Wrote {spans} spans to {args.chrome_trace}; "
        "open it in https://ui.perfetto.dev or chrome://tracing."
    )
    return 0


async def run_history(
    args: argparse.Namespace, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> int:
    """Serve until SIGINT, SIGTERM or cancellation; ``started()`` gets the port."""
    if args.chrome_trace:
        return _write_trace(args)
    host, port = args.listen
    db = args.db if is_postgres(args.db) else str(await trio.Path(args.db).absolute())
    server = HistoryServer(HistoryConfig(db, host, port, args.refresh))
    shown = f"[{host}]" if host and ":" in host else (host or "0.0.0.0")
    failures: list[str] = []
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                print(f"Reading {describe(db)} ...", flush=True)
                bound = await nursery.start(server.run)
                events = server.index.history.events
                print(f"History of {events:,} events at http://{shown}:{bound}/", flush=True)
                print(
                    f"Ray's CLI works against it: ray list tasks --address http://{shown}:{bound}"
                )
                print("Press Ctrl+C to stop.", flush=True)
                task_status.started(bound)
    except* (FileNotFoundError, ValueError, sqlite3.Error, StoreUnavailableError) as group:
        failures += [str(exc) for exc in group.exceptions]
    except* OSError as group:
        failures += [f"cannot serve on {shown}:{port}: {exc}" for exc in group.exceptions]
    for failure in failures:
        print(f"trio-events history: error: {failure}", file=sys.stderr)
    return 1 if failures else 0


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        print(f"\nReceived {signal.Signals(signum).name}; stopping.", flush=True)
        scope.cancel()
        return
