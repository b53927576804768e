"""The ``collect`` and ``query`` sub-commands, as functions the main CLI wires in.

Usage from the CLI module::

    collect = subcommands.add_parser("collect", help="receive Ray's HTTP event export")
    add_collect_arguments(collect)
    query = subcommands.add_parser("query", help="ask an event store questions")
    add_query_arguments(query)
    ...
    if args.command == "collect":
        return trio.run(run_collect, args)
    if args.command == "query":
        return run_query(args)

Both return a process exit code and report expected failures (port in use, no store, bad ID)
as one sentence on stderr rather than a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
from typing import TYPE_CHECKING

import trio

from trio_events._http_server import DEFAULT_MAX_BODY_BYTES
from trio_events.store._backend import StoreUnavailableError, describe, is_postgres
from trio_events.store._collector import Collector, CollectorConfig
from trio_events.store._query import (
    counts,
    failed_tasks,
    format_counts,
    format_entities,
    format_failed_tasks,
    format_timeline,
    normalize_kind,
    recent_entities,
    timeline,
    to_json,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DEFAULT_DB = "trio-events.db"
DEFAULT_LISTEN = ("127.0.0.1", 8084)  # KubeRay's history-server collector uses port 8084


def parse_listen(value: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface) into ``(host, port)``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not HOST:PORT (for example 127.0.0.1:8084, [::1]:8084 or :8084)."
        )
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port_text)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number.")
    return int(value)


def _kind(value: str) -> str:
    try:
        return normalize_kind(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="address to receive POSTed events on (default 127.0.0.1:8084; port 0 picks one)",
    )
    add_store_argument(parser)
    parser.add_argument(
        "--retention",
        type=parse_duration,
        metavar="DURATION",
        help="delete sessions whose last event arrived longer ago (e.g. 30d, 12h; at least 1m)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help="largest accepted body, before and after decompression (default 32 MiB)",
    )


def add_store_argument(parser: argparse.ArgumentParser, default: object = DEFAULT_DB) -> None:
    """``--store`` (alias ``--db``): an SQLite file, or ``postgresql://USER@HOST:PORT/DB``."""
    parser.add_argument(
        "--store",
        "--db",
        dest="db",
        default=default,
        metavar="PATH|URL",
        help=f"event store: an SQLite file (default {DEFAULT_DB}) or postgresql://USER@HOST/DB",
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> float:
    """``90s``, ``30m``, ``12h``, ``30d``, ``2w`` (or plain seconds) in seconds, at least 60."""
    text = value.strip().lower()
    unit = _UNITS.get(text[-1:], 0)
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration; write it like 30d, 12h, 30m or 90s"
        ) from None
    if seconds < 60:
        raise argparse.ArgumentTypeError(f"{value!r} is too short; keep at least 1m of events")
    return seconds


async def _store_name(db: str) -> str:
    return db if is_postgres(db) else str(await trio.Path(db).absolute())


async def run_collect(
    args: argparse.Namespace, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> int:
    """Run a collector until SIGINT, SIGTERM or cancellation; ``started()`` gets the port."""
    host, port = args.listen
    db_path = await _store_name(args.db)
    retention = getattr(args, "retention", None)
    collector = Collector(CollectorConfig(db_path, host, port, args.max_body_bytes, retention))
    shown_store = describe(db_path)
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
        failure = "; ".join(str(exc) for exc in group.exceptions)
    finally:
        if started:
            s = collector.statistics()
            print(
                f"Stopped: {s.accepted} events stored, {s.duplicates} duplicates ignored, "
                f"{s.rejected_requests} requests rejected.",
                flush=True,
            )
    if failure:
        where = f"{_show_host(host)}:{port}"
        print(
            f"Cannot start the collector on {where} with {shown_store}: {failure}.", file=sys.stderr
        )
        return 1
    return 0


def _show_host(host: str | None) -> str:
    shown = host or "0.0.0.0"
    return f"[{shown}]" if ":" in shown else shown


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        print(f"\nReceived {signal.Signals(signum).name}; stopping.", flush=True)
        scope.cancel()
        return


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """``query [--db PATH] [--json] [counts | timeline KIND ID [--attempt N] | failed | recent]``.

    ``--db`` and ``--json`` may also follow the question.
    """
    add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    questions = parser.add_subparsers(dest="question", metavar="QUESTION")
    asked = [
        questions.add_parser("counts", help="events per event type and source type (default)"),
        timeline_parser := questions.add_parser(
            "timeline", help="every state transition of one entity, in time order"
        ),
        failed_parser := questions.add_parser("failed", help="failed tasks and their errors"),
        recent_parser := questions.add_parser("recent", help="the most recently seen entities"),
    ]
    timeline_parser.add_argument(
        "kind",
        type=_kind,
        metavar="KIND",
        help="task, actor, job, node, worker, placement_group or submission_job",
    )
    timeline_parser.add_argument("entity_id", metavar="ID", help="the ID, in hex or base64")
    timeline_parser.add_argument("--attempt", type=int, help="only this task attempt")
    failed_parser.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    recent_parser.add_argument("--kind", type=_kind, help="only entities of this kind")
    recent_parser.add_argument("--limit", type=_positive_int, default=20, metavar="N")
    for sub in asked:
        # Also accepted after the question; SUPPRESS keeps a value given before it.
        add_store_argument(sub, default=argparse.SUPPRESS)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as above")


def run_query(args: argparse.Namespace) -> int:
    """Answer the question in ``args``; print the answer and return 0, or an error and 1."""
    db = args.db
    question = getattr(args, "question", None) or "counts"
    result: object
    try:
        if question == "timeline":
            result = found = timeline(db, args.kind, args.entity_id, args.attempt)
            if not found.event_count:
                print(format_timeline(found), file=sys.stderr)
                return 1
            text = format_timeline(found)
        elif question == "failed":
            result = failures = failed_tasks(db, args.limit)
            text = format_failed_tasks(failures)
        elif question == "recent":
            result = entities = recent_entities(db, args.kind, args.limit)
            text = format_entities(entities)
        else:
            result = totals = counts(db)
            text = format_counts(totals)
    except FileNotFoundError:
        print(
            f"There is no event store at {db!r}; run `trio-events collect --db {db}` first "
            "or pass --db PATH.",
            file=sys.stderr,
        )
        return 1
    except (ValueError, StoreUnavailableError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"Cannot read the event store {db!r}: {exc}.", file=sys.stderr)
        return 1
    print(to_json(result) if args.json else text)
    return 0
