"""The one settings table: every flag of every command, its variable, file key and default.

Defaults that a library config also has are read from that config class, so the command line
and the library cannot disagree (``ServiceConfig`` and ``trio-events agent`` run the same
pipeline). ``docs/configuration.md`` is generated from these tables (``python -m
trio_events._cli._docs``), and a test checks that every flag the parser knows is in them.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from trio_events._cli import _values as v
from trio_events._cli._settings import Command, Setting
from trio_events._http_server import DEFAULT_MAX_BODY_BYTES
from trio_events.agent._http_sink import HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig
from trio_events.agent._publisher_config import PublisherConfig
from trio_events.agent._service import DEFAULT_METRICS_LISTEN, ServiceConfig
from trio_events.agent._spool import SpoolConfig
from trio_events.producer._recorder import RecorderConfig
from trio_events.store._collector import CollectorConfig


def _d(cls: type, name: str) -> Any:
    """The library's default for ``cls.name``: defined there, once."""
    return attrs.fields_dict(cls)[name].default


_P = "RAY_DASHBOARD_AGGREGATOR_AGENT_"
EXPORT_ADDR_ENV: Final = f"{_P}EVENTS_EXPORT_ADDR"
CONFIG_ENV: Final = "TRIO_EVENTS_CONFIG"
DEFAULT_DB: Final = "trio-events.db"
KINDS_HELP: Final = "task, actor, job, node, worker, placement_group or submission_job"

#: Accepted by every command, before or after its name.
GLOBAL_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--config",
        CONFIG_ENV,
        "",
        v.text,
        "TOML file of settings for every command (docs/configuration.md)",
        in_file=False,
        metavar="FILE",
    ),
    Setting(
        "--log-format",
        "TRIO_EVENTS_LOG_FORMAT",
        "text",
        v.choice("text", "json"),
        "text lines, or one JSON object per line for log shippers",
    ),
    Setting(
        "--log-level",
        "TRIO_EVENTS_LOG_LEVEL",
        "INFO",
        v.choice("DEBUG", "INFO", "WARNING", "ERROR", fold_case=True),
        "logging threshold, in any case",
    ),
)

AGENT_SETTINGS: tuple[Setting, ...] = (
    Setting("--listen", None, ("127.0.0.1", 50051), v.host_port, "gRPC address for AddEvents"),
    Setting(
        "--buffer-size",
        f"{_P}MAX_EVENT_BUFFER_SIZE",
        _d(AgentConfig, "buffer_size"),
        v.positive_int,
        "events the multi-consumer buffer holds",
    ),
    Setting(
        "--max-batch-size",
        f"{_P}MAX_EVENT_SEND_BATCH_SIZE",
        _d(AgentConfig, "max_batch_size"),
        v.positive_int,
        "events per published batch",
    ),
    Setting(
        "--max-message-bytes",
        "AGENT_GRPC_MAX_MESSAGE_LENGTH",
        _d(AgentConfig, "max_message_bytes"),
        v.positive_int,
        "largest AddEvents request accepted",
        shown_default="20971520 (20 MiB)",
    ),
    Setting(
        "--on-full",
        "TRIO_EVENTS_ON_FULL",
        _d(AgentConfig, "on_full"),
        v.choice("drop_oldest", "reject"),
        "overflow policy: drop_oldest (Ray) or reject (RESOURCE_EXHAUSTED, lossless)",
    ),
    Setting(
        "--auth-token-file",
        "TRIO_EVENTS_AUTH_TOKEN_FILE",
        "",
        v.text,
        "file holding the bearer token AddEvents callers must present",
    ),
    Setting(
        "--metrics-listen",
        "TRIO_EVENTS_METRICS_LISTEN",
        DEFAULT_METRICS_LISTEN,
        v.host_port_or_off,
        "HTTP address for /metrics and /healthz, or off",
    ),
    Setting(
        "--node-ip",
        "TRIO_EVENTS_NODE_IP",
        "",
        v.text,
        "the ip label of Ray's ray_aggregator_agent_* series",
        shown_default="the --listen host, or this host's address when it listens everywhere",
    ),
    Setting(
        "--session-name",
        "TRIO_EVENTS_SESSION_NAME",
        "",
        v.text,
        "the SessionName label of Ray's ray_aggregator_agent_* series",
        shown_default="the name of /tmp/ray/session_latest, if there is one",
    ),
    Setting(
        "--db",
        "TRIO_EVENTS_DB",
        "",
        v.text,
        "SQLite store used when no export address is set",
        shown_default=f"./{DEFAULT_DB}",
    ),
    Setting(
        "--spool",
        "TRIO_EVENTS_SPOOL",
        "",
        v.text,
        "SQLite file that makes the buffer durable: accepted events survive a crash and are "
        "published after the restart (docs/spool.md); none keeps them in memory",
    ),
    Setting(
        "--spool-max-events",
        "TRIO_EVENTS_SPOOL_MAX_EVENTS",
        _d(SpoolConfig, "max_events"),
        v.positive_int,
        "unread events the spool holds (with --spool, instead of --buffer-size)",
    ),
    Setting(
        "--spool-max-bytes",
        "TRIO_EVENTS_SPOOL_MAX_BYTES",
        _d(SpoolConfig, "max_bytes"),
        v.non_negative_int,
        "bytes of unread serialized events the spool holds; 0 bounds only the count",
        shown_default="1073741824 (1 GiB)",
    ),
    Setting(
        "--spool-synchronous",
        "TRIO_EVENTS_SPOOL_SYNCHRONOUS",
        _d(SpoolConfig, "synchronous"),
        v.choice("normal", "full"),
        "normal: an accepted event survives the agent being killed; full: also a power loss "
        "(an fsync per request)",
    ),
    Setting(
        "--grace-period",
        "TRIO_EVENTS_GRACE_PERIOD_SECONDS",
        _d(ServiceConfig, "grace_period"),
        v.non_negative_float,
        "seconds publishers get to drain the buffer at shutdown",
    ),
    Setting(
        "--unhealthy-after",
        "TRIO_EVENTS_UNHEALTHY_AFTER_SECONDS",
        _d(ServiceConfig, "unhealthy_after"),
        v.non_negative_float,
        "a publisher failing this long makes /healthz unhealthy",
    ),
)

#: The agent's publisher flags; those marked per_destination may differ per destination.
PUBLISHER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--export-addr",
        EXPORT_ADDR_ENV,
        [],
        v.text,
        "HTTP endpoint to POST events to; repeat for several destinations, each with its own "
        "publisher (the variable is comma-separated; in the file, [[agent.destination]] tables)",
        shown_default="none: events go to the local store (--db)",
        in_file=False,
        many=True,
        metavar="URL",
    ),
    Setting(
        "--header",
        None,
        [],
        v.header,
        "extra HTTP header sent with every POST (repeatable; in the file a table NAME = VALUE)",
        many=True,
        secret=True,
        per_destination=True,
        metavar="NAME:VALUE",
    ),
    Setting(
        "--publish",
        f"{_P}PUBLISH_EVENTS_TO_EXTERNAL_HTTP_SERVICE",
        True,
        v.parse_bool,
        "publish to the HTTP export address(es)",
    ),
    Setting(
        "--exposable-event-types",
        f"{_P}EXPOSABLE_EVENT_TYPES",
        None,  # unset: Ray's default list; set but empty: nothing is exposed (as in Ray)
        v.text,
        "comma-separated event types the HTTP publishers send, or ALL; empty exposes nothing",
        shown_default="Ray 2.60's list (see docs/publishing.md)",
        per_destination=True,
    ),
    Setting(
        "--preserve-proto-field-name",
        f"{_P}PRESERVE_PROTO_FIELD_NAME",
        _d(PublisherConfig, "preserve_proto_field_name"),
        v.parse_bool,
        "JSON keys as proto field names instead of lowerCamelCase",
        per_destination=True,
    ),
    Setting(
        "--publisher-timeout",
        f"{_P}PUBLISHER_TIMEOUT_SECONDS",
        _d(HttpPublisherConfig, "timeout"),
        v.positive_float,
        "HTTP request timeout in seconds (also how long a drain leaves for a last attempt)",
        per_destination=True,
    ),
    Setting(
        "--max-retries",
        f"{_P}PUBLISHER_MAX_RETRIES",
        _d(PublisherConfig, "max_retries"),
        v.retries,
        "retries per batch for retryable failures; -1 is unlimited",
        per_destination=True,
    ),
    Setting(
        "--initial-backoff",
        f"{_P}PUBLISHER_INITIAL_BACKOFF_SECONDS",
        _d(PublisherConfig, "initial_backoff"),
        v.non_negative_float,
        "first retry backoff base in seconds",
        per_destination=True,
    ),
    Setting(
        "--max-backoff",
        f"{_P}PUBLISHER_MAX_BACKOFF_SECONDS",
        _d(PublisherConfig, "max_backoff"),
        v.non_negative_float,
        "backoff cap in seconds",
        per_destination=True,
    ),
    Setting(
        "--jitter-ratio",
        f"{_P}PUBLISHER_JITTER_RATIO",
        _d(PublisherConfig, "jitter"),
        v.ratio,
        "backoff jitter ratio",
        per_destination=True,
    ),
    Setting(
        "--give-up-after",
        "TRIO_EVENTS_PUBLISHER_GIVE_UP_AFTER_SECONDS",
        0.0,
        v.non_negative_float,
        "drop a batch still failing after this many seconds; 0 never gives up",
        per_destination=True,
    ),
    Setting(
        "--linger",
        f"{_P}PUBLISHER_MAX_BUFFER_SEND_INTERVAL_SECONDS",
        _d(PublisherConfig, "linger"),
        v.non_negative_float,
        "seconds a publisher waits to fill a batch once one event is there",
        per_destination=True,
    ),
    Setting(
        "--compression",
        "TRIO_EVENTS_COMPRESSION",
        _d(HttpPublisherConfig, "compression"),
        v.choice("none", "gzip", "zstd"),
        "HTTP body compression",
        per_destination=True,
    ),
    Setting(
        "--bearer-token-env",
        "TRIO_EVENTS_BEARER_TOKEN_ENV",
        "",
        v.text,
        "name of an environment variable holding the sink's bearer token",
        per_destination=True,
    ),
    Setting(
        "--bearer-token-file",
        "TRIO_EVENTS_BEARER_TOKEN_FILE",
        "",
        v.text,
        "file holding the sink's bearer token",
        per_destination=True,
    ),
    Setting(
        "--ca-bundle",
        "TRIO_EVENTS_CA_BUNDLE",
        "",
        v.text,
        "PEM file of CA certificates to verify the sink with",
        per_destination=True,
    ),
)

#: Keys only a ``[[agent.destination]]`` table has.
DESTINATION_KEYS: Final = {
    "url": "the HTTP endpoint (required)",
    "name": "the publisher's name: its buffer consumer and metrics label "
    "(default http_service, then http_service_2, ...)",
}

COLLECT_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--listen",
        "TRIO_EVENTS_COLLECT_LISTEN",
        (_d(CollectorConfig, "host"), _d(CollectorConfig, "port")),
        v.listen_any,
        "address to receive POSTed events on; :PORT is every interface, port 0 picks one",
        metavar="HOST:PORT",
    ),
    Setting("--db", "TRIO_EVENTS_COLLECT_DB", DEFAULT_DB, v.text, "event store file"),
    Setting(
        "--max-body-bytes",
        "TRIO_EVENTS_COLLECT_MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        v.positive_int,
        "largest accepted body, before and after decompression",
        shown_default="33554432 (32 MiB)",
    ),
)

_QUERY_DB = Setting("--db", "TRIO_EVENTS_QUERY_DB", DEFAULT_DB, v.text, "event store file")
_QUERY_JSON = Setting("--json", None, False, v.parse_bool, "print JSON", switch=True)
QUERY = Command(
    "query",
    "ask questions of a store written by collect or agent",
    (_QUERY_DB, _QUERY_JSON),
    children=(
        Command("counts", "events per event type and source type (the default question)"),
        Command(
            "timeline",
            "every state transition of one entity, in time order",
            (
                Setting(
                    "--attempt",
                    None,
                    None,
                    v.non_negative_int,
                    "only this task attempt",
                    in_file=False,
                ),
            ),
            positionals=(("KIND", KINDS_HELP), ("ID", "the ID, in hex or base64")),
        ),
        Command(
            "failed",
            "failed tasks and their errors",
            (
                Setting(
                    "--limit", None, 50, v.positive_int, "tasks shown", in_file=False, metavar="N"
                ),
            ),
        ),
        Command(
            "recent",
            "the most recently seen entities",
            (
                Setting(
                    "--kind", None, None, v.text, f"only this kind: {KINDS_HELP}", in_file=False
                ),
                Setting(
                    "--limit",
                    None,
                    20,
                    v.positive_int,
                    "entities shown",
                    in_file=False,
                    metavar="N",
                ),
            ),
        ),
    ),
)

LOADGEN_SETTINGS: tuple[Setting, ...] = (
    Setting("--target", None, "", v.text, "aggregator address, HOST:PORT (required)"),
    Setting("--events", None, 0, v.positive_int, "events to generate (required)"),
    Setting(
        "--rate",
        None,
        None,
        v.positive_float,
        "events per second, open loop",
        shown_default="as fast as exports keep up, no drops",
    ),
    Setting(
        "--kind",
        None,
        "mixed",
        v.choice("mixed", "lifecycle"),
        "mixed: a whole cluster's events; lifecycle: task lifecycle events only",
    ),
    Setting(
        "--max-queued-events",
        "RAY_ray_event_recorder_max_queued_events",
        _d(RecorderConfig, "max_queued_events"),
        v.positive_int,
        "recorder ring capacity",
    ),
    Setting(
        "--batch-interval",
        "RAY_ray_events_report_interval_ms",
        _d(RecorderConfig, "report_interval"),
        v.positive_float,
        "seconds between exports (the variable is in ms)",
        env_parse=v.ms_to_seconds,
    ),
    Setting(
        "--export-timeout",
        None,
        _d(RecorderConfig, "export_timeout"),
        v.positive_float,
        "deadline of each export in seconds",
    ),
    Setting(
        "--flush-timeout",
        "RAY_task_events_shutdown_flush_timeout_ms",
        10.0,
        v.positive_float,
        "seconds to export what is left at the end (the variable is in ms; Ray's default is "
        "5000, loadgen's own 10 s)",
        env_parse=v.ms_to_seconds,
    ),
    Setting("--seed", None, None, v.parse_int, "make the events reproducible"),
    Setting(
        "--ids-out",
        None,
        "",
        v.text,
        "write the ids of the events the aggregator acknowledged (hex, one per line); a "
        "merged event carries the id of the first event of its group",
    ),
    Setting("--token-file", None, "", v.text, "file holding a bearer token to send"),
)

DEMO_SETTINGS: tuple[Setting, ...] = (
    Setting("--workloads", None, 3, v.positive_int, "recorder processes"),
    Setting("--events", None, 20_000, v.positive_int, "events per workload"),
    Setting(
        "--workdir",
        None,
        "trio-events-demo",
        v.text,
        "where the collector's store is kept; it is left behind (about 50 MB with the defaults)",
    ),
)

COMMANDS: tuple[Command, ...] = (
    Command(
        "agent",
        "run the aggregator agent: gRPC AddEvents in, HTTP publishers (or a local store) out",
        AGENT_SETTINGS + PUBLISHER_SETTINGS,
    ),
    Command(
        "collect",
        "receive exported events over HTTP and store them in SQLite (dedup by id)",
        COLLECT_SETTINGS,
    ),
    QUERY,
    Command(
        "loadgen", "drive a recorder with realistic events against an aggregator", LOADGEN_SETTINGS
    ),
    Command(
        "demo",
        "run collector, agent and recorder workloads together and show the result",
        DEMO_SETTINGS,
    ),
    Command(
        "config",
        "work with the config file",
        children=(
            Command("check", "validate --config and print the effective settings, secrets hidden"),
        ),
    ),
    Command("version", "print the version"),
    Command("event-types", "list the event types this build knows"),
)


def command(name: str) -> Command:
    return next(c for c in COMMANDS if c.name == name)
