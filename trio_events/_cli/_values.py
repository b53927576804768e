"""Value parsers of the settings table: text (a flag, a variable, a file entry) to a value.

Each parser raises ``ValueError`` with what it expects ("expected a whole number >= 0"); the
caller adds where the text came from and what it was. ``__name__`` of each parser reads as the
accepted values, so the generated documentation can say them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

MIB = 1024 * 1024
#: What ``--metrics-listen`` takes to serve no metrics at all.
OFF = "off"


def parse_bool(text: str) -> bool:
    # Ray's env_bool: true only for "true"/"1", case-insensitive.
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise ValueError("expected true/1 or false/0")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return value


def positive_int(text: str) -> int:
    value = parse_int(text)
    if value <= 0:
        raise ValueError("expected a whole number greater than 0")
    return value


def batch_bytes(text: str) -> int:
    """A request body limit: at least MIN_BATCH_BYTES, where a body of one event still fits."""
    from trio_events.agent._publisher_config import MIN_BATCH_BYTES

    value = parse_int(text)
    if value < MIN_BATCH_BYTES:
        raise ValueError(f"expected a whole number of bytes >= {MIN_BATCH_BYTES}")
    return value


_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``30d``, ``2w`` (or plain seconds) in seconds, at least 60."""
    clean = text.strip().lower()
    unit = _UNITS.get(clean[-1:], 0)
    try:
        seconds = float(clean[:-1] if unit else clean) * (unit or 1)
    except ValueError:
        raise ValueError("expected a duration such as 30d, 12h, 30m or 90s") from None
    if not seconds >= 60:
        raise ValueError("expected at least 1m: keep at least a minute of events")
    return seconds


def non_negative_int(text: str) -> int:
    value = parse_int(text)
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


def retries(text: str) -> int:
    value = parse_int(text)
    if value < -1:
        raise ValueError("expected -1 (unlimited) or a whole number >= 0")
    return value


def non_negative_float(text: str) -> float:
    value = parse_float(text)
    if value < 0:
        raise ValueError("expected a number >= 0")
    return value


def positive_float(text: str) -> float:
    value = parse_float(text)
    if value <= 0:
        raise ValueError("expected a number greater than 0")
    return value


def ratio(text: str) -> float:
    value = parse_float(text)
    if not 0 <= value <= 1:
        raise ValueError("expected a number from 0 to 1")
    return value


def ms_to_seconds(text: str) -> float:
    """Ray's millisecond variables, as seconds."""
    return non_negative_float(text) / 1000.0


def choice(*choices: str, fold_case: bool = False) -> Callable[[str], str]:
    """One of ``choices``; with ``fold_case`` any case is accepted and the listed one returned."""

    def parse(text: str) -> str:
        for accepted in choices:
            if text == accepted or (fold_case and text.strip().lower() == accepted.lower()):
                return accepted
        raise ValueError(f"expected one of {', '.join(choices)}")

    parse.__name__ = "one of " + ", ".join(choices)
    return parse


def text(value: str) -> str:
    return value


def optional_int(value: str) -> int | None:
    return None if value.strip() == "" else parse_int(value)


def host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``; an empty host is 127.0.0.1."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535")
    return (host.strip("[]") or "127.0.0.1", int(port))


def host_port_or_off(value: str) -> tuple[str, int] | None:
    """``HOST:PORT``, or ``off`` for nothing at all."""
    if value.strip().lower() == OFF:
        return None
    try:
        return host_port(value)
    except ValueError:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, or {OFF}") from None


def listen_any(value: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface) into ``(host, port)``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("expected HOST:PORT (for example 127.0.0.1:8084, [::1]:8084 or :8084)")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port_text)


def header(value: str) -> tuple[str, str]:
    name, sep, content = value.partition(":")
    if not sep or not name.strip():
        raise ValueError("expected NAME:VALUE")
    return (name.strip(), content.strip())


def url_list(value: str) -> list[str]:
    """Comma-separated URLs (Ray's EVENTS_EXPORT_ADDR may hold several)."""
    return [part.strip() for part in value.split(",") if part.strip()]
