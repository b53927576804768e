"""``trio-events config check``: validate the settings and print the effective configuration.

Everything is resolved as the commands would resolve it (flags > environment > file >
defaults), the agent's configuration is built (so URLs, token files and event-type names are
checked too), and the result is printed in the config file's own layout, each value with where
it came from. Header values are shown as ``***``; tokens are never read into the output.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trio_events import __version__
from trio_events._cli import _agent
from trio_events._cli import _values as v
from trio_events._cli._settings import Resolved, Setting, describe_default, resolve
from trio_events._cli._tables import COMMANDS, GLOBAL_SETTINGS

if TYPE_CHECKING:
    from collections.abc import Mapping

REDACTED = "***"


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.question != "check":
        raise ValueError("say what to do: trio-events config check [--config FILE]")
    print(effective_configuration(args, environ), end="")
    return 0


def effective_configuration(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The resolved settings of every command as TOML with origins; ValueError when invalid."""
    file = args.config_file
    source = f"from {file.path}" if file is not None else "(no config file)"
    lines = [
        f"# trio-events {__version__}: the effective configuration {source}",
        "# precedence: flags > environment > config file > defaults",
    ]
    for setting in GLOBAL_SETTINGS:
        if setting.in_file:
            lines.append(_line(setting, args.__dict__[setting.dest], args.origins[setting.dest]))
    for cmd in COMMANDS:
        settings = [s for s in cmd.settings if s.in_file or s.env]
        if not settings:
            continue
        layers = [] if file is None else [file.layer(cmd.name)]
        resolved = resolve(settings, {}, environ, layers)
        lines += ["", f"[{cmd.name}]"]
        lines += [_line(s, resolved[s.dest], resolved.origins[s.dest]) for s in settings]
        if cmd.name == "agent":
            lines += _agent_destinations(resolved, file, environ)
    return "\n".join(lines) + "\n"


def _agent_destinations(resolved: Resolved, file: object, environ: Mapping[str, str]) -> list[str]:
    agent_args = argparse.Namespace(
        **resolved.values,
        given={},
        config_file=file,
        origins=dict(resolved.origins),
        json_converter="compiled",
    )
    config = _agent.service_config_from_args(agent_args, environ)  # checks what the agent would
    lines: list[str] = []
    per_destination = _agent.PER_DESTINATION
    for url, name, settings in _agent.destination_settings(agent_args, environ):
        lines += ["", "[[agent.destination]]", f'url = "{url}"', f'name = "{name}"']
        lines += [_line(s, settings[s.dest], settings.origins[s.dest]) for s in per_destination]
    if config.store_path is not None:
        lines += ["", f"# no destination: events are kept in the local store {config.store_path}"]
    return lines


def _line(setting: Setting, value: object, origin: str) -> str:
    if value is None:  # TOML has no null: say what the absence means
        return f"# {setting.key} unset: {describe_default(setting)}  # {origin}"
    line = f"{setting.key} = {_value(setting, value)}  # {origin}"
    return line if setting.in_file else f"# {line} (not a file key)"


def _value(setting: Setting, value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        host = value[0] or ""
        return _quote(f"[{host}]:{value[1]}" if ":" in host else f"{host}:{value[1]}")
    if isinstance(value, list):
        if setting.parse is v.header:
            shown = ", ".join(
                f"{_quote(k)} = {_quote(REDACTED if setting.secret else v)}" for k, v in value
            )
            return "{ " + shown + " }" if shown else "{}"
        return "[" + ", ".join(_quote(str(item)) for item in value) + "]"
    return _quote(REDACTED if setting.secret and value else str(value))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
