"""The settings of the commands around the agent: collect, query, loadgen and demo.

Part of the one settings table (:mod:`trio_events._cli._tables` puts the commands together);
defaults a library config also has are read from that config class.
"""

from __future__ import annotations

from typing import Final

from trio_events._cli import _values as v
from trio_events._cli._settings import Command, Setting, library_default
from trio_events._http_server import DEFAULT_MAX_BODY_BYTES
from trio_events.producer._recorder import RecorderConfig
from trio_events.store._collector import CollectorConfig
from trio_events.store._history_server import DEFAULT_PORT as HISTORY_PORT

_d = library_default
DEFAULT_DB: Final = "trio-events.db"
STORE_HELP: Final = (
    "event store: an SQLite file, or postgresql://USER@HOST:PORT/DB (docs/postgres.md)"
)
KINDS_HELP: Final = "task, actor, job, node, worker, placement_group or submission_job"

COLLECT_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--listen",
        "TRIO_EVENTS_COLLECT_LISTEN",
        (_d(CollectorConfig, "host"), _d(CollectorConfig, "port")),
        v.listen_any,
        "address to receive POSTed events on; :PORT is every interface, port 0 picks one",
        metavar="HOST:PORT",
    ),
    Setting(
        "--db",
        "TRIO_EVENTS_COLLECT_DB",
        DEFAULT_DB,
        v.text,
        STORE_HELP,
        aliases=("--store",),
        metavar="PATH|URL",
    ),
    Setting(
        "--retention",
        "TRIO_EVENTS_COLLECT_RETENTION",
        None,
        v.duration,
        "delete sessions whose last event arrived longer ago (30d, 12h, ...; at least 1m)",
        shown_default="keep everything",
        metavar="DURATION",
    ),
    Setting(
        "--max-body-bytes",
        "TRIO_EVENTS_COLLECT_MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        v.positive_int,
        "largest accepted body, before and after decompression",
        shown_default="33554432 (32 MiB)",
    ),
)

_QUERY_DB = Setting(
    "--db",
    "TRIO_EVENTS_QUERY_DB",
    DEFAULT_DB,
    v.text,
    STORE_HELP,
    aliases=("--store",),
    metavar="PATH|URL",
)
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

HISTORY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "--db",
        "TRIO_EVENTS_HISTORY_DB",
        DEFAULT_DB,
        v.text,
        STORE_HELP,
        aliases=("--store",),
        metavar="PATH|URL",
    ),
    Setting(
        "--listen",
        "TRIO_EVENTS_HISTORY_LISTEN",
        ("127.0.0.1", HISTORY_PORT),
        v.listen_any,
        "address to serve Ray's state API and the page on; port 0 picks one",
        metavar="HOST:PORT",
    ),
    Setting(
        "--refresh",
        "TRIO_EVENTS_HISTORY_REFRESH",
        2.0,
        v.non_negative_float,
        "seconds between looks for events stored since the last look",
    ),
    Setting(
        "--chrome-trace",
        None,
        "",
        v.text,
        "write a Chrome trace (the format `ray timeline` writes) to FILE and exit",
        in_file=False,
        metavar="FILE",
    ),
    Setting(
        "--job", None, "", v.text, "with --chrome-trace: only this job (hex id)", in_file=False
    ),
    Setting(
        "--session",
        None,
        "",
        v.text,
        "with --chrome-trace: this session",
        in_file=False,
        shown_default="the latest",
    ),
)

_FUZZ_SETTINGS: tuple[Setting, ...] = (
    Setting("--examples", None, 100, v.positive_int, "inputs to try", in_file=False, metavar="N"),
    Setting("--max-time", None, 60.0, v.positive_float, "seconds to search", in_file=False),
    Setting(
        "--seed",
        None,
        None,
        v.optional_int,
        "repeat the run of this seed",
        in_file=False,
        shown_default="a new one, printed",
    ),
    Setting("--max-events", None, 5, v.positive_int, "events per batch at most", in_file=False),
    Setting("--timeout", None, 5.0, v.positive_float, "seconds per request", in_file=False),
    Setting(
        "--save",
        None,
        "trio-events-fuzz-failures.json",
        v.text,
        "where the minimal failing inputs are written",
        in_file=False,
        metavar="FILE",
    ),
    Setting(
        "--replay",
        None,
        "",
        v.text,
        "send the inputs saved in FILE again, instead of fuzzing",
        in_file=False,
        metavar="FILE",
    ),
)
FUZZ_SINK = Command(
    "fuzz-sink",
    "throw Ray-shaped batches, exactly as Ray's publisher posts them, at an HTTP receiver",
    (
        *_FUZZ_SETTINGS,
        Setting(
            "--proto-names",
            None,
            "both",
            v.choice("both", "yes", "no"),
            "keys as protobuf field names (yes), camelCase (no) or either (both)",
            in_file=False,
        ),
    ),
    positionals=(("URL", "the receiver's URL, e.g. http://127.0.0.1:8084/v1/events"),),
)
FUZZ_AGENT = Command(
    "fuzz-agent",
    "throw AddEvents requests, as Ray's core workers and GCS send them, at an aggregator",
    _FUZZ_SETTINGS,
    positionals=(("HOST:PORT", "the aggregator's gRPC address"),),
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
