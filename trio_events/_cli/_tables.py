"""The one settings table: every flag of every command, its variable, file key and default.

Defaults that a library config also has are read from that config class, so the command line
and the library cannot disagree (``ServiceConfig`` and ``trio-events agent`` run the same
pipeline). ``docs/configuration.md`` is generated from these tables (``python -m
trio_events._cli._docs``), and a test checks that every flag the parser knows is in them.
"""

from __future__ import annotations

from typing import Final

from trio_events._cli import _values as v
from trio_events._cli._settings import Command, Setting, library_default
from trio_events._cli._tool_settings import (
    COLLECT_SETTINGS,
    DEFAULT_DB,
    DEMO_SETTINGS,
    FUZZ_AGENT,
    FUZZ_SINK,
    HISTORY_SETTINGS,
    LOADGEN_SETTINGS,
    QUERY,
)
from trio_events.agent._http_sink import HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig
from trio_events.agent._publisher_config import PublisherConfig
from trio_events.agent._service import DEFAULT_METRICS_LISTEN, ServiceConfig
from trio_events.agent._spool import SpoolConfig

_d = library_default
_P = "RAY_DASHBOARD_AGGREGATOR_AGENT_"
EXPORT_ADDR_ENV: Final = f"{_P}EVENTS_EXPORT_ADDR"
CONFIG_ENV: Final = "TRIO_EVENTS_CONFIG"

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
        "--receive-budget-bytes",
        "TRIO_EVENTS_RECEIVE_BUDGET_BYTES",
        _d(AgentConfig, "receive_budget_bytes"),
        v.positive_int,
        "bytes of AddEvents requests being received at once, all connections together; a "
        "request past it gets RESOURCE_EXHAUSTED (at least --max-message-bytes)",
        shown_default="67108864 (64 MiB)",
    ),
    Setting(
        "--receive-timeout",
        "TRIO_EVENTS_RECEIVE_TIMEOUT_SECONDS",
        _d(AgentConfig, "receive_timeout"),
        v.positive_float,
        "seconds one AddEvents request may take to arrive; a slower one gets DEADLINE_EXCEEDED",
    ),
    Setting(
        "--workers",
        "TRIO_EVENTS_WORKERS",
        0,
        v.non_negative_int,
        "processes converting events to JSON: 1 converts in the agent's own process, more start "
        "worker processes (docs/performance.md)",
        shown_default="0: the CPUs this process may run on",
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
        "--publish-to-gcs",
        f"{_P}PUBLISH_EVENTS_TO_GCS",
        False,
        v.parse_bool,
        "send task events and dropped task attempts to the GCS (publisher ray_gcs)",
    ),
    Setting(
        "--publish-to-dashboard-head",
        "RAY_enable_task_events_to_dashboard_head",
        False,
        v.parse_bool,
        "POST task events to the dashboard head's /api/task_events (publisher dashboard_head)",
    ),
    Setting(
        "--gcs-address",
        "TRIO_EVENTS_GCS_ADDRESS",
        "",
        v.text,
        "the GCS's HOST:PORT (Ray's --gcs-address), needed by the two publishers above",
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
        "--spool-max-file-bytes",
        "TRIO_EVENTS_SPOOL_MAX_FILE_BYTES",
        0,
        v.non_negative_int,
        "bytes the spool's files (database, WAL) may take; past it requests get "
        "RESOURCE_EXHAUSTED until deliveries free space; 0: only the disk bounds them",
    ),
    Setting(
        "--spool-min-free-bytes",
        "TRIO_EVENTS_SPOOL_MIN_FREE_BYTES",
        _d(SpoolConfig, "min_free_bytes"),
        v.non_negative_int,
        "free space the spool leaves on its file system (requests past it get "
        "RESOURCE_EXHAUSTED), so acknowledging deliveries can always be written",
        shown_default="8388608 (8 MiB)",
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
        "--max-in-flight",
        "TRIO_EVENTS_PUBLISHER_MAX_IN_FLIGHT",
        _d(PublisherConfig, "max_in_flight"),
        v.positive_int,
        "most batches in flight per destination (adapted to the sink's latency); 1 keeps "
        "strict order",
        per_destination=True,
    ),
    Setting(
        "--max-batch-bytes",
        "TRIO_EVENTS_PUBLISHER_MAX_BATCH_BYTES",
        _d(PublisherConfig, "max_batch_bytes"),
        v.batch_bytes,
        "largest request body in bytes (a single larger event goes alone)",
        per_destination=True,
    ),
    Setting(
        "--max-retry-after",
        "TRIO_EVENTS_PUBLISHER_MAX_RETRY_AFTER_SECONDS",
        _d(PublisherConfig, "max_retry_after"),
        v.non_negative_float,
        "longest Retry-After a publisher honours, in seconds",
        per_destination=True,
    ),
    Setting(
        "--dead-letter",
        "TRIO_EVENTS_PUBLISHER_DEAD_LETTER",
        "",
        v.text,
        "JSON-lines file keeping the events a sink refused (the publisher's name is added "
        "before the suffix for every destination but the first)",
        per_destination=True,
        metavar="FILE",
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
        "history",
        "serve a store's history: Ray's state API, a web page and Chrome traces",
        HISTORY_SETTINGS,
    ),
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
    FUZZ_SINK,
    FUZZ_AGENT,
    Command("version", "print the version"),
    Command("event-types", "list the event types this build knows"),
)


def command(name: str) -> Command:
    return next(c for c in COMMANDS if c.name == name)
