"""``trio-events collect``: receive Ray's HTTP event export and keep it in a SQLite store.

Expected failures (a port in use, a store that cannot be opened) are one sentence naming the
address or the path, like every other command's.
"""

from __future__ import annotations

import signal
import sqlite3
from typing import TYPE_CHECKING

import trio

from trio_events.store._backend import StoreUnavailableError, describe, is_postgres
from trio_events.store._collector import Collector, CollectorConfig

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Mapping


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return trio.run(run_collect, args)


async def run_collect(
    args: argparse.Namespace, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> int:
    """Run a collector until SIGINT, SIGTERM or cancellation; ``started()`` gets the port.

    Raises OSError (one sentence naming the address and the store) when it cannot start.
    """
    host, port = args.listen
    db_path = args.db if is_postgres(args.db) else str(await trio.Path(args.db).absolute())
    config = CollectorConfig(db_path, host, port, args.max_body_bytes, args.retention)
    collector = Collector(config)
    shown_store = describe(db_path)  # a password in a URL stays secret
    started = False
    failure = ""
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                bound_port = await nursery.start(collector.run)
                started = True
                print(f"Listening on http://{_show_host(host)}:{bound_port}/ (POST to any path).")
                print(f"Storing events in {shown_store}; press Ctrl+C to stop.", flush=True)
                task_status.started(bound_port)
    except* (OSError, sqlite3.Error, ValueError, StoreUnavailableError) as group:
        if started:
            raise
        failure = "; ".join(str(exc).rstrip(".") for exc in group.exceptions)
    finally:
        if started:
            s = collector.statistics()
            statuses = " ".join(f"{k}={v}" for k, v in sorted(s.rejected_by_status.items()))
            reasons = " ".join(f"{k}={v}" for k, v in sorted(s.refused_by_reason.items()))
            print(
                f"Stopped: {s.accepted} events stored, {s.duplicates} duplicates ignored, "
                f"{s.rejected_requests} requests rejected"
                + (f" (HTTP {statuses})" if statuses else "")
                + f", {s.refused_events} events refused"
                + (f" ({reasons})" if reasons else "")
                + f", {s.unavailable_requests} requests answered 503.",
                flush=True,
            )
    if failure:
        where = f"{_show_host(host)}:{port}"
        raise OSError(f"cannot start on {where} with the store {shown_store}: {failure}")
    return 0


def _show_host(host: str | None) -> str:
    shown = host or "0.0.0.0"
    return f"[{shown}]" if ":" in shown else shown


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        print(f"\nReceived {signal.Signals(signum).name}; stopping.", flush=True)
        scope.cancel()
        return
