"""Settings: one flag, its environment variable, its config-file key and its default.

The tables of every command live in :mod:`trio_events._cli._tables`; this module turns them into
argparse flags and resolves each value from, in order of precedence:

1. the flag, when given;
2. its environment variable, when set (Ray's names, Ray 2.60's meanings);
3. the config file (``--config``): key ``<dest>`` of the command's table (``[agent]``), or of a
   ``[[agent.destination]]`` table first for per-destination settings;
4. the built-in default.

The environment arrives here as the ``environ`` mapping that :func:`trio_events._cli._main.main`
passes down: ``_main`` is the only module that touches ``os.environ``. Every invalid value is
one sentence naming where it came from and what is accepted.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, final

import attrs

from trio_events._cli import _values as v

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence


@final
@attrs.frozen
class Setting:
    """One command-line flag, the environment variable and file key that can also set it."""

    flag: str
    env: str | None
    default: Any
    parse: Callable[[str], Any]
    help: str
    shown_default: str | None = None  #: how the default reads in help and docs, when not str()
    env_parse: Callable[[str], Any] | None = None  #: when the variable has other units (ms)
    in_file: bool = True  #: may be set in the config file
    many: bool = False  #: repeatable flag; a list in the file
    secret: bool = False  #: shown redacted by ``config check``
    per_destination: bool = False  #: may be set per ``[[agent.destination]]``
    switch: bool = False  #: a flag without a value (store_true)
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  #: other spellings of the flag (``--store`` for ``--db``)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def key(self) -> str:
        """The config-file key."""
        return self.dest


@final
@attrs.frozen
class Command:
    """A sub-command, its settings and its questions (``query counts|timeline|...``)."""

    name: str
    help: str
    settings: tuple[Setting, ...] = ()
    children: tuple[Command, ...] = ()
    positionals: tuple[tuple[str, str], ...] = ()  #: (metavar, help), for the docs


def library_default(cls: type, name: str) -> Any:
    """The library's default for ``cls.name``: defined there, once, and read by the table."""
    return attrs.fields_dict(cls)[name].default


def describe_default(setting: Setting) -> str:
    if setting.shown_default is not None:
        return setting.shown_default
    default = setting.default
    if isinstance(default, tuple) and len(default) == 2:
        return f"{default[0]}:{default[1]}"
    if setting.switch:
        return "off"
    if isinstance(default, bool):
        return str(default).lower()
    return "(none)" if default in ("", None, []) else str(default)


class ArgumentError(Exception):
    """A command line argparse refused; ``prog`` is ``trio-events <command>``."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`ArgumentError` instead of printing usage and exiting."""

    def error(self, message: str) -> Any:
        raise ArgumentError(self.prog, message)


def _for_argparse(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    # argparse reports a ValueError as "invalid <function name> value"; ours says what it wants.
    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None

    return checked


def add_settings(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """Add each setting as a flag that appears in the namespace only when given."""
    for s in settings:
        where = f"; env {s.env}" if s.env else ""
        helptext = f"{s.help} (default {describe_default(s)}{where})"
        if s.switch:
            parser.add_argument(
                s.flag,
                *s.aliases,
                dest=s.dest,
                action="store_true",
                default=argparse.SUPPRESS,
                help=helptext,
            )
            continue
        parser.add_argument(
            s.flag,
            *s.aliases,
            dest=s.dest,
            type=_for_argparse(s.parse),
            action="append" if s.many else "store",
            default=argparse.SUPPRESS,
            metavar=s.metavar,
            help=helptext,
        )


@final
@attrs.frozen
class Resolved:
    """Resolved values by ``dest``, and where each came from (for ``config check``)."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]

    def __getitem__(self, dest: str) -> Any:
        return self.values[dest]

    def items(self) -> Iterator[tuple[str, Any, str]]:
        for dest, value in self.values.items():
            yield dest, value, self.origins[dest]


Layer = tuple[str, "Mapping[str, object]"]  #: (where, table): ("trio-events.toml [agent]", {...})


def resolve(
    settings: Sequence[Setting],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    layers: Sequence[Layer] = (),
) -> Resolved:
    """Each setting's value: flag > environment > file layers (first wins) > default."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for s in settings:
        if s.dest in given:
            values[s.dest], origins[s.dest] = given[s.dest], f"flag {s.flag}"
            continue
        raw = environ.get(s.env) if s.env else None
        if raw is not None:
            values[s.dest], origins[s.dest] = from_env(s, raw), f"env {s.env}"
            continue
        for where, table in layers:
            if s.in_file and s.key in table:
                values[s.dest] = from_file(s, table[s.key], where)
                origins[s.dest] = f"file {where}"
                break
        else:
            values[s.dest], origins[s.dest] = s.default, "default"
    return Resolved(values, origins)


def from_env(setting: Setting, raw: str) -> Any:
    """The variable's value, parsed; a ValueError names the variable."""
    parse = setting.env_parse or setting.parse
    try:
        return (
            [parse(part) for part in raw.split(",") if part.strip()]
            if setting.many
            else (parse(raw))
        )
    except ValueError as exc:
        raise ValueError(f"environment variable {setting.env}={raw!r} is invalid: {exc}.") from None


def from_file(setting: Setting, raw: object, where: str) -> Any:
    """A config-file value (already TOML-typed), parsed like the flag's text."""
    try:
        if setting.many:
            if setting.parse is v.header and isinstance(raw, dict):
                return [(str(k), _scalar_text(setting, val)) for k, val in raw.items()]
            if not isinstance(raw, list):
                raise ValueError("expected a list")
            return [setting.parse(_scalar_text(setting, item)) for item in raw]
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            raw = ",".join(raw)  # a list of event types, written as TOML's list
        if setting.switch:
            if not isinstance(raw, bool):
                raise ValueError("expected true or false")
            return raw
        return setting.parse(_scalar_text(setting, raw))
    except ValueError as exc:
        raise ValueError(f"{where} {setting.key} = {_toml(raw)} is invalid: {exc}.") from None


def _scalar_text(setting: Setting, raw: object) -> str:
    if isinstance(raw, bool):
        if setting.parse is not v.parse_bool:
            raise ValueError(f"expected {_expects(setting)}, not true or false")
        return str(raw).lower()
    if isinstance(raw, int | float | str):
        return str(raw)
    raise ValueError(f"expected {_expects(setting)}")


def _expects(setting: Setting) -> str:
    name = getattr(setting.parse, "__name__", "")
    return name if name.startswith("one of") else "a string or a number"


def _toml(raw: object) -> str:
    if isinstance(raw, bool):
        return str(raw).lower()
    if isinstance(raw, str):
        return '"' + raw.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(raw)


def read_secret(path: str, *, what: str) -> str:
    """A token from a file, stripped; errors name the setting, never the contents."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"{what} file {path!r} cannot be read ({exc.strerror}).") from None
    if not token:
        raise ValueError(f"{what} file {path!r} is empty.")
    return token


def secret_from_env(environ: Mapping[str, str], variable: str, *, what: str) -> str:
    """A token from the environment variable a setting names; errors never show the value."""
    token = environ.get(variable, "").strip()
    if not token:
        raise ValueError(f"{what} names {variable}, which is not set or empty.")
    return token
