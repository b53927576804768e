"""The ``trio-events`` command line: the only place that reads the environment.

Each subcommand parses flags whose defaults come from Ray's environment variables (see
``docs/configuration.md``), builds frozen config objects, and hands them to library code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson
import trio

from trio_events import __version__, pb
from trio_events.producer._events import EVENT_CLASSES

Runner = Callable[[argparse.Namespace], int]


class _JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"trio-events {__version__}")
    return 0


def _cmd_event_types(args: argparse.Namespace) -> int:
    print(f"trio-events {__version__}: {len(EVENT_CLASSES)} Ray 2.60 event types")
    for number, cls in sorted(EVENT_CLASSES.items()):
        print(f"  {number:>2}  {pb.EVENT_TYPE_NAMES[number]:<34} {cls.__name__}")
    return 0


def _async(fn: Callable[[argparse.Namespace], Awaitable[int]]) -> Runner:
    def run(args: argparse.Namespace) -> int:
        try:
            return trio.run(fn, args)
        except KeyboardInterrupt:
            return 130

    return run


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-events",
        description="Ray's event export pipeline on trio: recorder, aggregator agent, publishers.",
    )
    parser.add_argument("--version", action="version", version=f"trio-events {__version__}")
    parser.add_argument(
        "--log-format",
        default=environ.get("TRIO_EVENTS_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text lines, or one JSON object per line for log shippers (default: text; "
        "env TRIO_EVENTS_LOG_FORMAT)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(runner=_cmd_version)
    p = sub.add_parser("event-types", help="list the event types this build knows")
    p.set_defaults(runner=_cmd_event_types)

    from trio_events._cli import _fuzz

    p = sub.add_parser("fuzz-sink", help="throw Ray-shaped batches at an HTTP receiver (testing)")
    _fuzz.add_fuzz_sink_arguments(p)
    p.set_defaults(runner=_fuzz.run_fuzz_sink)
    p = sub.add_parser("fuzz-agent", help="throw AddEvents requests at an aggregator (testing)")
    _fuzz.add_fuzz_agent_arguments(p)
    p.set_defaults(runner=_fuzz.run_fuzz_agent)

    from trio_events._cli import _agent as _agent_cli
    from trio_events._cli import _demo, _loadgen, _settings
    from trio_events._cli import _sink as _sink_cli

    p = sub.add_parser(
        "demo", help="run collector, agent and recorder workloads together and show the result"
    )
    _demo.add_demo_arguments(p)
    p.set_defaults(runner=_async(_demo.run_demo))

    p = sub.add_parser(
        "agent",
        help="run the aggregator agent: gRPC AddEvents in, HTTP publishers (or a local store) out",
    )
    _agent_cli.add_agent_arguments(p, environ)

    async def run_agent(args: argparse.Namespace) -> int:
        return await _agent_cli.run_agent(args, environ)

    p.set_defaults(runner=_async(run_agent))

    p = sub.add_parser(
        "loadgen", help="drive a recorder with realistic events against an aggregator"
    )
    _loadgen.add_loadgen_arguments(p)
    # loadgen's flags are the recorder settings' flags; Ray's variables supply their defaults.
    p.set_defaults(
        runner=_async(_loadgen.run_loadgen),
        **_settings.env_defaults(_settings.RECORDER_SETTINGS, environ),
    )

    p = sub.add_parser(
        "collect", help="receive exported events over HTTP and store them in SQLite (dedup by id)"
    )
    _sink_cli.add_collect_arguments(p)
    p.set_defaults(runner=_async(_sink_cli.run_collect))
    p = sub.add_parser("query", help="ask questions of a store written by collect or agent")
    _sink_cli.add_query_arguments(p)
    p.set_defaults(runner=_sink_cli.run_query)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser(os.environ)
    except ValueError as exc:  # an invalid environment variable: one sentence, no traceback
        print(f"trio-events: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    logging.basicConfig(level=args.log_level, handlers=[handler])
    # httpx logs every request at INFO; that is noise next to our one line per event of note.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    runner: Runner = args.runner
    try:
        return runner(args)
    except ValueError as exc:  # invalid configuration: one sentence, no traceback
        print(f"trio-events: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, BaseExceptionGroup) as exc:
        # Start-up failures of a service (a port in use, an unreadable file) arrive from its
        # nursery wrapped in exception groups; say each in one sentence. Anything else is a bug
        # and keeps its traceback.
        leaves = _leaves(exc)
        if not all(isinstance(leaf, OSError | ValueError) for leaf in leaves):
            raise
        for leaf in leaves:
            print(f"trio-events: error: {leaf}", file=sys.stderr)
        return 1


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
