"""The config file (``--config trio-events.toml``): read with tomllib, checked key by key.

Layout: top-level ``log_format`` and ``log_level``; one table per command holding that
command's flags by name (``[agent]`` ``buffer_size = 5000``, ``[collect]`` ``db = "..."``);
and for the agent any number of ``[[agent.destination]]`` tables, each with a ``url`` and the
per-destination settings (``docs/configuration.md`` lists them). A key that is not known stops
start-up with one sentence naming it and the keys accepted there; values are checked when
resolved, with the same words as the flag's.
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING, final

import attrs

from trio_events._cli._tables import COMMANDS, DESTINATION_KEYS, GLOBAL_SETTINGS, command

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trio_events._cli._settings import Layer

Table = dict[str, object]


@final
@attrs.frozen
class ConfigFile:
    """A parsed, key-checked config file."""

    path: str
    top: Mapping[str, object]
    sections: Mapping[str, Table]
    destinations: tuple[Table, ...]

    def layer(self, section: str | None) -> Layer:
        """``section``'s table (None: the top level), labelled for error messages."""
        if section is None:
            return (f"{self.path}:", self.top)
        return (f"{self.path} [{section}]", self.sections.get(section, {}))

    def destination_layer(self, index: int) -> Layer:
        return (f"{self.path} [[agent.destination]] #{index + 1}", self.destinations[index])


def _file_keys(name: str) -> list[str]:
    return [s.key for s in command(name).settings if s.in_file]


def _accepted(keys: list[str]) -> str:
    return ", ".join(sorted(keys))


def load_config(path: str) -> ConfigFile:
    """Read and check the keys of ``path``; ValueError with one sentence when it is wrong."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"the config file {path} cannot be read ({exc.strerror}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the config file {path} is not valid TOML: {exc}.") from None
    top_keys = [s.key for s in GLOBAL_SETTINGS if s.in_file]
    sections_known = [c.name for c in COMMANDS if any(s.in_file for s in c.settings)]
    top: Table = {}
    sections: dict[str, Table] = {}
    for key, value in data.items():
        if key in top_keys:
            top[key] = value
        elif key in sections_known:
            if not isinstance(value, dict):
                raise ValueError(f"{path}: {key} must be a table ([{key}]).")
            sections[key] = value
        else:
            raise ValueError(
                f"{path}: unknown key {key!r}; accepted at the top level: "
                f"{_accepted(top_keys)}, and the tables [{'], ['.join(sections_known)}]."
            )
    for name, table in sections.items():
        accepted = _file_keys(name) + (["destination"] if name == "agent" else [])
        for key in table:
            if key not in accepted:
                raise ValueError(
                    f"{path}: unknown key {key!r} in [{name}]; accepted: {_accepted(accepted)}."
                )
    destinations = _destinations(path, sections.get("agent", {}).pop("destination", []))
    return ConfigFile(path, top, sections, destinations)


def _destinations(path: str, raw: object) -> tuple[Table, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise ValueError(f"{path}: agent.destination must be tables ([[agent.destination]]).")
    accepted = [s.key for s in command("agent").settings if s.per_destination]
    accepted += list(DESTINATION_KEYS)
    found: list[Table] = []
    for i, table in enumerate(raw, start=1):
        for key in table:
            if key not in accepted:
                raise ValueError(
                    f"{path}: unknown key {key!r} in [[agent.destination]] #{i}; accepted: "
                    f"{_accepted(accepted)}."
                )
        for key in DESTINATION_KEYS:
            if key in table and not isinstance(table[key], str):
                raise ValueError(f"{path}: [[agent.destination]] #{i} {key} must be a string.")
        if not table.get("url"):
            raise ValueError(f"{path}: [[agent.destination]] #{i} needs a url.")
        found.append(table)
    return tuple(found)
