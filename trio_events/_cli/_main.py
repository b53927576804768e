"""The ``trio-events`` command line. The only module that touches ``os.environ``.

:func:`main` parses the flags (from the table in :mod:`~trio_events._cli._tables`), reads the
config file, resolves every setting (flag > environment > file > default, in
:mod:`~trio_events._cli._settings`) and runs the command with a namespace of resolved values.
Every failure a user can cause is one line, ``trio-events <command>: error: <sentence>``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sqlite3
import sys
from typing import TYPE_CHECKING

import orjson

from trio_events import __version__, pb
from trio_events._cli._config_file import load_config
from trio_events._cli._settings import (
    ArgumentError,
    ArgumentParser,
    Command,
    add_settings,
    resolve,
)
from trio_events._cli._tables import COMMANDS, CONFIG_ENV, GLOBAL_SETTINGS, command
from trio_events._logging import install_redaction
from trio_events.producer._events import EVENT_CLASSES

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    Runner = Callable[[argparse.Namespace, Mapping[str, str]], int]


def _rfc3339(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)


class _JsonFormatter(logging.Formatter):
    """One JSON object per log record: time (RFC 3339, ms, UTC), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def _cmd_version(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    print(f"trio-events {__version__}")
    return 0


def _cmd_event_types(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    print(f"trio-events {__version__}: {len(EVENT_CLASSES)} Ray 2.60 event types")
    for number, cls in sorted(EVENT_CLASSES.items()):
        print(f"  {number:>2}  {pb.EVENT_TYPE_NAMES[number]:<34} {cls.__name__}")
    return 0


def _runner(name: str) -> Runner:
    # Imported when run, so `trio-events version` loads no agent or store code.
    from trio_events._cli import (
        _agent,
        _collect,
        _config_cmd,
        _demo,
        _fuzz,
        _history,
        _loadgen,
        _query,
    )

    runners: dict[str, Runner] = {
        "agent": _agent.run,
        "collect": _collect.run,
        "query": _query.run,
        "history": _history.run,
        "fuzz-sink": _fuzz.run_fuzz_sink,
        "fuzz-agent": _fuzz.run_fuzz_agent,
        "loadgen": _loadgen.run,
        "demo": _demo.run,
        "config": _config_cmd.run,
        "version": _cmd_version,
        "event-types": _cmd_event_types,
    }
    return runners[name]


def build_parser() -> ArgumentParser:
    """Every command's flags, each present in the namespace only when given."""
    from trio_events._cli import _agent, _fuzz, _query

    parser = ArgumentParser(
        prog="trio-events",
        description="Ray's event export pipeline on trio: recorder, aggregator agent, publishers.",
        epilog="Settings: flags > environment > config file > defaults (docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"trio-events {__version__}")
    add_settings(parser, GLOBAL_SETTINGS)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser
    )
    extras = {
        "agent": _agent.add_arguments,
        "query": _query.add_arguments,
        "fuzz-sink": _fuzz.add_sink_target,
        "fuzz-agent": _fuzz.add_agent_target,
    }
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, prog=_prog(cmd))
        add_settings(p, GLOBAL_SETTINGS)
        add_settings(p, cmd.settings)
        if cmd.name in extras:
            extras[cmd.name](p)
        if cmd.children:
            questions = p.add_subparsers(
                dest="question", metavar="QUESTION", parser_class=ArgumentParser
            )
            for child in cmd.children:
                q = questions.add_parser(
                    child.name, help=child.help, description=child.help, prog=_prog(cmd, child)
                )
                add_settings(q, GLOBAL_SETTINGS)
                add_settings(q, cmd.settings)  # also accepted after the question
                add_settings(q, child.settings)
                if cmd.name in extras:
                    extras[cmd.name](q)
    return parser


def _prog(cmd: Command, child: Command | None = None) -> str:
    return f"trio-events {cmd.name}" + (f" {child.name}" if child else "")


def parse(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse and resolve: a namespace with every setting of the command, by ``dest``.

    Also set: ``command``, ``question`` (query, config), ``given`` (the flags given),
    ``config_file`` (a :class:`ConfigFile` or None) and ``origins`` (where each value came from).
    """
    return resolve_args(build_parser().parse_args(argv), environ)


def resolve_args(args: argparse.Namespace, environ: Mapping[str, str]) -> argparse.Namespace:
    """The namespace of :func:`parse` from argparse's (which holds only the flags given)."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "question")}
    config_path = given.get("config") or environ.get(CONFIG_ENV, "")
    config_file = load_config(config_path) if config_path else None
    cmd = command(args.command)
    question = getattr(args, "question", None)
    settings = list(GLOBAL_SETTINGS) + list(cmd.settings)
    for child in cmd.children:
        if child.name == question:
            settings += child.settings
    layers = [] if config_file is None else [config_file.layer(cmd.name)]
    global_layers = [] if config_file is None else [config_file.layer(None)]
    resolved = resolve(GLOBAL_SETTINGS, given, environ, global_layers)
    rest = resolve(settings[len(GLOBAL_SETTINGS) :], given, environ, layers)
    extra = {k: v for k, v in given.items() if k not in resolved.values and k not in rest.values}
    namespace = argparse.Namespace(**extra, **resolved.values, **rest.values)
    namespace.command = args.command
    namespace.question = question
    namespace.given = given
    namespace.config_file = config_file
    namespace.origins = {**resolved.origins, **rest.origins}
    return namespace


def _setup_logging(log_format: str, log_level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if log_format == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    install_redaction(handler)  # no token in any line, at any level (hpack's DEBUG included)
    logging.basicConfig(level=log_level, handlers=[handler])
    # httpx logs every request at INFO; that is noise next to our one line per event of note.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def _sentence(message: object) -> str:
    text = str(message).strip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def main(argv: Sequence[str] | None = None) -> int:
    environ = os.environ
    prefix = "trio-events"
    try:
        parsed = build_parser().parse_args(argv)
        prefix = f"trio-events {parsed.command}"
        args = resolve_args(parsed, environ)
        _setup_logging(args.log_format, args.log_level)
        return _runner(args.command)(args, environ)
    except ArgumentError as exc:
        prog = " ".join(exc.prog.split()[:2])
        print(f"{prog}: error: {_sentence(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an invalid setting: one sentence, no traceback
        print(f"{prefix}: error: {_sentence(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`| head`): what it wanted it has. Point stdout at /dev/null so
        # the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except (OSError, sqlite3.Error, BaseExceptionGroup) as exc:
        # Start-up failures of a service (a port in use, an unreadable file) arrive from its
        # nursery wrapped in exception groups; say each in one sentence. Anything else is a bug
        # and keeps its traceback.
        leaves = _leaves(exc)
        if not all(isinstance(leaf, OSError | ValueError | sqlite3.Error) for leaf in leaves):
            raise
        for leaf in leaves:
            print(f"{prefix}: error: {_sentence(leaf)}", file=sys.stderr)
        return 1


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
