"""Command-line settings: one table of flags, their environment variables and defaults.

This is the only module that reads the environment (through the ``environ`` mapping the CLI
passes in). Each :class:`Setting` becomes an argparse flag whose default is the environment
variable's value if set (Ray's names, Ray 2.60's defaults) or the built-in default; flags
override both. ``docs/configuration.md`` is generated from the same table
(``python -m trio_events._cli._settings``), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

MIB = 1024 * 1024


def _bool(text: str) -> bool:
    # Ray's env_bool: true only for "true"/"1", case-insensitive.
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise ValueError("expected true/1 or false/0")


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if value != value:  # NaN
        raise ValueError("expected a number")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise ValueError("expected a whole number greater than 0")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise ValueError("expected a number >= 0")
    return value


def _ms_to_seconds(text: str) -> float:
    return _non_negative_float(text) / 1000.0


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    parse.__name__ = "one of " + "/".join(choices)
    return parse


def _text(text: str) -> str:
    return text


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535")
    return (host.strip("[]") or "127.0.0.1", int(port))


@final
@attrs.frozen
class Setting:
    """One command-line flag and the environment variable that supplies its default."""

    flag: str
    env: str | None
    default: Any
    parse: Callable[[str], Any]
    help: str
    shown_default: str | None = None  # how the default reads in help and docs, when not repr

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _describe(setting: Setting) -> str:
    if setting.shown_default is not None:
        return setting.shown_default
    if isinstance(setting.default, tuple) and len(setting.default) == 2:
        return f"{setting.default[0]}:{setting.default[1]}"
    return "(none)" if setting.default in ("", None) else str(setting.default)


def env_defaults(settings: Sequence[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings whose environment variable is set, parsed: ``{dest: value}``."""
    found: dict[str, Any] = {}
    for setting in settings:
        raw = environ.get(setting.env) if setting.env else None
        if raw is None:
            continue
        try:
            found[setting.dest] = setting.parse(raw)
        except ValueError as exc:
            raise ValueError(
                f"environment variable {setting.env}={raw!r} is invalid: {exc}."
            ) from None
    return found


def _for_argparse(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    # argparse reports a ValueError as "invalid <function name> value"; ours says what it wants.
    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None

    return checked


def add_settings(
    parser: argparse.ArgumentParser, settings: Sequence[Setting], environ: Mapping[str, str]
) -> None:
    """Add each setting as a flag; its default comes from ``environ`` when the variable is set."""
    from_env = env_defaults(settings, environ)
    for setting in settings:
        where = f"; env {setting.env}" if setting.env else ""
        parser.add_argument(
            setting.flag,
            dest=setting.dest,
            type=_for_argparse(setting.parse),
            default=from_env.get(setting.dest, setting.default),
            help=f"{setting.help} (default {_describe(setting)}{where})",
        )


# --- the tables ----------------------------------------------------------------------------

_P = "RAY_DASHBOARD_AGGREGATOR_AGENT_"

AGENT_SETTINGS: tuple[Setting, ...] = (
    Setting("--listen", None, ("127.0.0.1", 50051), _host_port, "gRPC address for AddEvents"),
    Setting(
        "--buffer-size",
        f"{_P}MAX_EVENT_BUFFER_SIZE",
        100_000,
        _positive_int,
        "events the multi-consumer buffer holds",
    ),
    Setting(
        "--max-batch-size",
        f"{_P}MAX_EVENT_SEND_BATCH_SIZE",
        1000,
        _positive_int,
        "events per published batch",
    ),
    Setting(
        "--max-message-bytes",
        "AGENT_GRPC_MAX_MESSAGE_LENGTH",
        20 * MIB,
        _positive_int,
        "largest AddEvents request accepted",
        shown_default="20971520 (20 MiB)",
    ),
    Setting(
        "--on-full",
        "TRIO_EVENTS_ON_FULL",
        "drop_oldest",
        _choice("drop_oldest", "reject"),
        "overflow policy: drop_oldest (Ray) or reject (RESOURCE_EXHAUSTED, lossless)",
    ),
    Setting(
        "--auth-token-file",
        "TRIO_EVENTS_AUTH_TOKEN_FILE",
        "",
        _text,
        "file holding the bearer token AddEvents callers must present",
    ),
    Setting(
        "--metrics-listen",
        "TRIO_EVENTS_METRICS_LISTEN",
        None,
        _host_port,
        "HTTP address for /metrics and /healthz",
    ),
    Setting(
        "--db",
        "TRIO_EVENTS_DB",
        "",
        _text,
        "SQLite store used when no export address is set",
        shown_default="./trio-events.db",
    ),
    Setting(
        "--spool",
        "TRIO_EVENTS_SPOOL",
        "",
        _text,
        "SQLite file that makes the buffer durable: accepted events survive a crash and are "
        "published after the restart (docs/spool.md); none keeps them in memory",
    ),
    Setting(
        "--spool-max-events",
        "TRIO_EVENTS_SPOOL_MAX_EVENTS",
        1_000_000,
        _positive_int,
        "unread events the spool holds (with --spool, instead of --buffer-size)",
    ),
    Setting(
        "--spool-max-bytes",
        "TRIO_EVENTS_SPOOL_MAX_BYTES",
        1024 * MIB,
        _non_negative_int,
        "bytes of unread serialized events the spool holds; 0 bounds only the count",
        shown_default="1073741824 (1 GiB)",
    ),
    Setting(
        "--spool-synchronous",
        "TRIO_EVENTS_SPOOL_SYNCHRONOUS",
        "normal",
        _choice("normal", "full"),
        "normal: an accepted event survives the agent being killed; full: also a power loss "
        "(an fsync per request)",
    ),
    Setting(
        "--grace-period",
        "TRIO_EVENTS_GRACE_PERIOD_SECONDS",
        10.0,
        _non_negative_float,
        "seconds publishers get to drain the buffer at shutdown",
    ),
    Setting(
        "--unhealthy-after",
        "TRIO_EVENTS_UNHEALTHY_AFTER_SECONDS",
        60.0,
        _non_negative_float,
        "a publisher failing this long makes /healthz unhealthy",
    ),
)

PUBLISHER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--publish",
        f"{_P}PUBLISH_EVENTS_TO_EXTERNAL_HTTP_SERVICE",
        True,
        _bool,
        "publish to the HTTP export address(es)",
    ),
    Setting(
        "--exposable-event-types",
        f"{_P}EXPOSABLE_EVENT_TYPES",
        None,  # unset: Ray's default list; set but empty: nothing is exposed (as in Ray)
        _text,
        "comma-separated event types the HTTP publishers send, or ALL",
        shown_default="Ray 2.60's list (see docs/publishing.md)",
    ),
    Setting(
        "--preserve-proto-field-name",
        f"{_P}PRESERVE_PROTO_FIELD_NAME",
        False,
        _bool,
        "JSON keys as proto field names instead of lowerCamelCase",
    ),
    Setting(
        "--publisher-timeout",
        f"{_P}PUBLISHER_TIMEOUT_SECONDS",
        3.0,
        _non_negative_float,
        "HTTP request timeout in seconds",
    ),
    Setting(
        "--max-retries",
        f"{_P}PUBLISHER_MAX_RETRIES",
        -1,
        _int,
        "retries per batch for retryable failures; -1 is unlimited",
    ),
    Setting(
        "--initial-backoff",
        f"{_P}PUBLISHER_INITIAL_BACKOFF_SECONDS",
        0.01,
        _non_negative_float,
        "first retry backoff base in seconds",
    ),
    Setting(
        "--max-backoff",
        f"{_P}PUBLISHER_MAX_BACKOFF_SECONDS",
        5.0,
        _non_negative_float,
        "backoff cap in seconds",
    ),
    Setting(
        "--jitter-ratio",
        f"{_P}PUBLISHER_JITTER_RATIO",
        0.1,
        _non_negative_float,
        "backoff jitter ratio",
    ),
    Setting(
        "--give-up-after",
        "TRIO_EVENTS_PUBLISHER_GIVE_UP_AFTER_SECONDS",
        0.0,
        _non_negative_float,
        "drop a batch still failing after this many seconds; 0 never gives up",
    ),
    Setting(
        "--linger",
        f"{_P}PUBLISHER_MAX_BUFFER_SEND_INTERVAL_SECONDS",
        0.1,
        _non_negative_float,
        "seconds a publisher waits to fill a batch once one event is there",
    ),
    Setting(
        "--compression",
        "TRIO_EVENTS_COMPRESSION",
        "none",
        _choice("none", "gzip", "zstd"),
        "HTTP body compression",
    ),
    Setting(
        "--bearer-token-env",
        "TRIO_EVENTS_BEARER_TOKEN_ENV",
        "",
        _text,
        "name of an environment variable holding the sink's bearer token",
    ),
    Setting(
        "--bearer-token-file",
        "TRIO_EVENTS_BEARER_TOKEN_FILE",
        "",
        _text,
        "file holding the sink's bearer token",
    ),
    Setting(
        "--ca-bundle",
        "TRIO_EVENTS_CA_BUNDLE",
        "",
        _text,
        "PEM file of CA certificates to verify the sink with",
    ),
)

TASK_PUBLISHER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--publish-to-gcs",
        f"{_P}PUBLISH_EVENTS_TO_GCS",
        False,
        _bool,
        "send task events and dropped task attempts to the GCS (publisher ray_gcs)",
    ),
    Setting(
        "--publish-to-dashboard-head",
        "RAY_enable_task_events_to_dashboard_head",
        False,
        _bool,
        "POST task events to the dashboard head's /api/task_events (publisher dashboard_head)",
    ),
    Setting(
        "--gcs-address",
        "TRIO_EVENTS_GCS_ADDRESS",
        "",
        _text,
        "the GCS's HOST:PORT (Ray's --gcs-address), needed by the two publishers above",
    ),
)

RECORDER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--max-queued-events",
        "RAY_ray_event_recorder_max_queued_events",
        10_000,
        _positive_int,
        "recorder ring capacity",
    ),
    Setting(
        "--batch-interval",
        "RAY_ray_events_report_interval_ms",
        1.0,
        _ms_to_seconds,
        "seconds between exports (the env var is in ms)",
        shown_default="1 s (1000 ms)",
    ),
    Setting(
        "--flush-timeout",
        "RAY_task_events_shutdown_flush_timeout_ms",
        10.0,
        _ms_to_seconds,
        "seconds to export what is left at the end (the env var is in ms; Ray's default is "
        "5000, loadgen's own 10 s)",
        shown_default="10 s",
    ),
)


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


def configuration_markdown() -> str:
    """docs/configuration.md's tables, generated from the settings above."""
    lines = [
        "# Configuration",
        "",
        "Generated by `python -m trio_events._cli._settings` from `trio_events/_cli/_settings.py`.",
        "Flags override environment variables; environment variables override defaults. Ray's",
        "variables keep Ray 2.60's names, meanings and defaults. An invalid value stops start-up",
        "with one sentence naming the variable.",
        "",
    ]
    sections = [
        ("trio-events agent: server and buffer", AGENT_SETTINGS),
        ("trio-events agent: HTTP publishers", PUBLISHER_SETTINGS),
        ("trio-events agent: GCS and dashboard-head publishers", TASK_PUBLISHER_SETTINGS),
        ("trio-events loadgen (the recorder's settings)", RECORDER_SETTINGS),
    ]
    for title, table in sections:
        lines += [f"## {title}", "", "| flag | environment variable | default | meaning |"]
        lines.append("|---|---|---|---|")
        for s in table:
            env = f"`{s.env}`" if s.env else ""
            lines.append(f"| `{s.flag}` | {env} | {_describe(s)} | {s.help} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(configuration_markdown())
