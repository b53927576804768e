"""The command line: flags and Ray's environment variables, one way to say an error, the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.harness import clean_env, command
from trio_events import pb
from trio_events._cli._agent import ray_labels, service_config_from_args, warn_about
from trio_events._cli._docs import configuration_markdown
from trio_events._cli._main import _JsonFormatter, build_parser, main, parse
from trio_events._cli._settings import ArgumentError
from trio_events._cli._tables import COMMANDS, GLOBAL_SETTINGS
from trio_events.agent._publisher_config import DEFAULT_EXPOSABLE_EVENT_TYPES
from trio_events.agent._service import DEFAULT_METRICS_LISTEN
from trio_events.store._sqlite import EventStore

ROOT = Path(__file__).resolve().parent.parent


def _agent_config(argv: list[str], environ: dict[str, str]):
    return service_config_from_args(parse(["agent", *argv], environ), environ)


def test_agent_defaults_are_ray_2_60s() -> None:
    config = _agent_config([], {})
    assert config.agent.buffer_size == 100_000
    assert config.agent.max_batch_size == 1000
    assert config.agent.max_message_bytes == 20 * 1024 * 1024
    assert config.agent.on_full == "drop_oldest"
    assert config.destinations == ()
    assert config.store_path == "trio-events.db"  # no export address: keep events locally
    assert config.store_publisher.exposable_event_types is None  # the local store keeps all
    assert config.metrics_listen == DEFAULT_METRICS_LISTEN == ("127.0.0.1", 9478)
    assert _agent_config(["--metrics-listen", "OFF"], {}).metrics_listen is None


def test_ray_environment_variables_configure_the_agent() -> None:
    env = {
        "RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR": "http://127.0.0.1:9/a,http://127.0.0.1:9/b",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE": "500",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES": "all",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_PRESERVE_PROTO_FIELD_NAME": "True",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_MAX_RETRIES": "2",
        "RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_TIMEOUT_SECONDS": "7",
    }
    config = _agent_config([], env)
    assert config.agent.buffer_size == 500
    assert config.store_path is None
    assert [d.http.url for d in config.destinations] == [
        "http://127.0.0.1:9/a",
        "http://127.0.0.1:9/b",
    ]
    assert [d.publisher.name for d in config.destinations] == ["http_service", "http_service_2"]
    publisher = config.destinations[0].publisher
    assert publisher.exposable_event_types is None  # ALL
    assert publisher.preserve_proto_field_name is True
    assert publisher.max_retries == 2
    assert config.destinations[0].http.timeout == 7.0
    assert publisher.attempt_timeout == 7.0  # one value, taken from the HTTP client's


def test_workers_default_to_the_cpus_available_and_1_is_in_process() -> None:
    assert _agent_config([], {}).conversion_workers == len(os.sched_getaffinity(0))
    assert _agent_config(["--workers", "1"], {}).conversion_workers == 1
    assert _agent_config([], {"TRIO_EVENTS_WORKERS": "3"}).conversion_workers == 3


def test_hidden_json_converter_flag_selects_the_publishers_converter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = ["--export-addr", "http://127.0.0.1:9/"]
    assert _agent_config(url, {}).destinations[0].publisher.converter == "compiled"
    config = _agent_config([*url, "--json-converter", "protobuf"], {})
    assert config.destinations[0].publisher.converter == "protobuf"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--help"])
    help_text = capsys.readouterr().out
    assert "--linger" in help_text
    assert "--json-converter" not in help_text  # a benchmark option, not a product one


def test_delivery_flags_reach_every_publisher() -> None:
    urls = ["--export-addr", "http://127.0.0.1:9/a", "--export-addr", "http://127.0.0.1:9/b"]
    flags = ["--max-in-flight", "4", "--max-batch-bytes", "65536", "--max-retry-after", "7"]
    config = _agent_config([*urls, *flags, "--dead-letter", "/var/dl/dead.jsonl"], {})
    names = ("http_service", "http_service_2")
    for destination, name in zip(config.destinations, names, strict=True):
        publisher = destination.publisher
        assert (publisher.max_in_flight, publisher.max_batch_bytes) == (4, 65536)
        assert publisher.max_retry_after == 7.0
        assert publisher.dead_letter == f"/var/dl/dead.{name}.jsonl"  # one file each
    one = _agent_config([urls[0], urls[1], "--dead-letter", "dead"], {})
    assert one.destinations[0].publisher.dead_letter == "dead"
    assert one.store_publisher.max_in_flight == 1  # one SQLite writer
    assert _agent_config([], {}).destinations == ()
    with pytest.raises(
        ArgumentError, match=r"--max-batch-bytes: expected a whole number of bytes >= 1024"
    ):
        _agent_config(["--max-batch-bytes", "100"], {})


def test_flags_override_the_environment(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    env = {"RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE": "500"}
    argv = ["--buffer-size", "42", "--export-addr", "http://127.0.0.1:9/x", "--on-full", "reject"]
    argv += ["--exposable-event-types", "TASK_DEFINITION_EVENT, TASK_LIFECYCLE_EVENT"]
    argv += ["--auth-token-file", str(token), "--header", "X-Team: infra"]
    config = _agent_config([*argv, "--compression", "zstd"], env)
    assert config.agent.buffer_size == 42
    assert config.agent.on_full == "reject"
    assert config.agent.auth_token == "s3cret"
    (destination,) = config.destinations
    assert destination.http.headers == (("X-Team", "infra"),)
    assert destination.http.compression == "zstd"
    assert destination.publisher.exposable_event_types == frozenset(
        {pb.RayEvent.TASK_DEFINITION_EVENT, pb.RayEvent.TASK_LIFECYCLE_EVENT}
    )


def test_unknown_exposable_type_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="TASK_EVENT") as info:
        _agent_config(["--exposable-event-types", "TASK_EVENT"], {})
    assert "TASK_DEFINITION_EVENT" in str(info.value)


def test_event_types_lists_all_17(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["event-types"]) == 0
    out = capsys.readouterr().out
    assert "17 Ray 2.60 event types" in out
    assert all(name in out for n, name in pb.EVENT_TYPE_NAMES.items() if n)


# --- one way to say an error --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (
            ["agent"],
            {"RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE": "lots"},
            "trio-events agent: error: environment variable "
            "RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE='lots' is invalid: expected a "
            "whole number.",
        ),
        (
            ["version"],
            {"TRIO_EVENTS_LOG_FORMAT": "xml"},
            "trio-events version: error: environment variable TRIO_EVENTS_LOG_FORMAT='xml' is "
            "invalid: expected one of text, json.",
        ),
        (
            ["--log-format", "xml", "version"],
            {},
            "trio-events: error: argument --log-format: expected one of text, json, got 'xml'.",
        ),
        (
            ["agent", "--buffer-size", "0"],
            {},
            "trio-events agent: error: argument --buffer-size: expected a whole number greater "
            "than 0, got '0'.",
        ),
        (
            ["query", "timeline", "task", "zzzz", "--db", "{tmp}/x.db"],
            {},
            "trio-events query: error: 'zzzz' is not a task ID: give 48 hex digits or the "
            "base64 of 24 bytes, as the JSON shows it.",
        ),
        (
            ["loadgen", "--events", "3"],
            {},
            "trio-events loadgen: error: --target is required (HOST:PORT of the aggregator).",
        ),
        (
            ["collect", "--listen", "nowhere"],
            {},
            "trio-events collect: error: argument --listen: expected HOST:PORT (for example "
            "127.0.0.1:8084, [::1]:8084 or :8084), got 'nowhere'.",
        ),
        (
            ["demo", "--workloads", "0"],
            {},
            "trio-events demo: error: argument --workloads: expected a whole number greater "
            "than 0, got '0'.",
        ),
        (
            ["agent", "--config", "{tmp}/missing.toml"],
            {},
            "trio-events agent: error: the config file {tmp}/missing.toml cannot be read (No "
            "such file or directory).",
        ),
    ],
    ids=[
        "env",
        "log-format-env",
        "log-format-flag",
        "flag",
        "bad-id",
        "required",
        "collect",
        "demo",
        "config",
    ],
)
def test_every_error_is_one_line_naming_the_command(
    argv: list[str],
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "{tmp}/x.db" in argv:
        EventStore(tmp_path / "x.db").close()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert capsys.readouterr().err == expected.format(tmp=tmp_path) + "\n"  # no usage block


def test_log_level_takes_any_case() -> None:
    assert parse(["--log-level", "debug", "version"], {}).log_level == "DEBUG"
    assert parse(["version", "--log-level", "Warning"], {}).log_level == "WARNING"
    assert parse(["version"], {"TRIO_EVENTS_LOG_LEVEL": "error"}).log_level == "ERROR"


def test_json_log_time_is_rfc_3339_with_milliseconds_in_utc() -> None:
    record = logging.LogRecord(
        "trio_events.cli.agent", logging.INFO, "x", 1, "hi %s", ("you",), None
    )
    record.created = 1767225600.25  # 2026-01-01T00:00:00.250Z
    entry = json.loads(_JsonFormatter().format(record))
    assert entry == {
        "time": "2026-01-01T00:00:00.250Z",
        "level": "INFO",
        "logger": "trio_events.cli.agent",
        "message": "hi you",
    }


def test_only_main_touches_the_environment() -> None:
    """The one reader: _cli/_main.py passes the mapping down; nobody else reads os.environ."""
    readers = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "trio_events").rglob("*.py")
        if re.search(r"os\.environ|os\.getenv|environ\.get\(", path.read_text())
    ]
    assert sorted(readers) == ["trio_events/_cli/_main.py", "trio_events/_cli/_settings.py"]
    main_text = (ROOT / "trio_events/_cli/_main.py").read_text()
    settings_text = (ROOT / "trio_events/_cli/_settings.py").read_text()
    assert "os.environ" in main_text
    assert "import os" not in settings_text  # it reads only the mapping it is given


def test_logger_names_follow_the_module_layout() -> None:
    """trio_events.<part>.<stage>: the module path without its leading underscores."""
    found = {}
    for path in (ROOT / "trio_events").rglob("*.py"):
        for name in re.findall(r"logging\.getLogger\(([^)]*)\)", path.read_text()):
            if name in ('"httpx"', "") or not name.startswith('"'):
                continue  # httpx's own logger, the root, or a name passed in
            module = path.relative_to(ROOT).with_suffix("").parts
            expected = ".".join(part.lstrip("_") for part in module)
            found[str(path.relative_to(ROOT))] = (name.strip('"'), expected)
    assert len(found) >= 8
    for where, (name, expected) in found.items():
        assert name == expected, where


def test_ray_labels_for_the_metrics(tmp_path: Path) -> None:
    args = parse(["agent", "--listen", "10.1.2.3:50051", "--session-name", "session_x"], {})
    labels = ray_labels(args)
    assert labels["ip"] == "10.1.2.3"
    assert labels["SessionName"] == "session_x"
    assert labels["pid"].isdigit()
    given = parse(["agent", "--node-ip", "10.9.9.9"], {"TRIO_EVENTS_SESSION_NAME": "s"})
    assert (ray_labels(given)["ip"], ray_labels(given)["SessionName"]) == ("10.9.9.9", "s")


def test_loadgen_takes_ray_s_recorder_variables() -> None:
    env = {
        "RAY_ray_events_report_interval_ms": "250",
        "RAY_ray_event_recorder_max_queued_events": "77",
        "RAY_task_events_shutdown_flush_timeout_ms": "3000",
    }
    args = parse(["loadgen", "--target", "127.0.0.1:1", "--events", "5"], env)
    assert (args.batch_interval, args.max_queued_events, args.flush_timeout) == (0.25, 77, 3.0)
    # The flag is in seconds, the variable in milliseconds.
    assert parse(["loadgen", "--batch-interval", "0.5"], env).batch_interval == 0.5


def test_an_explicitly_empty_exposable_list_exposes_nothing_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES": ""}
    args = parse(["agent", "--export-addr", "http://127.0.0.1:9/x"], env)
    config = service_config_from_args(args, env)
    assert config.destinations[0].publisher.exposable_event_types == frozenset()
    with caplog.at_level(logging.WARNING, logger="trio_events.cli.agent"):
        warn_about(config, args)
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "The exposable event types of http_service are empty (env "
        "RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES): as in Ray, no event is sent"
    )
    unset = _agent_config(["--export-addr", "http://127.0.0.1:9/x"], {})
    assert unset.destinations[0].publisher.exposable_event_types == DEFAULT_EXPOSABLE_EVENT_TYPES
    caplog.clear()
    warn_about(unset, args)
    assert not caplog.records


# --- real processes -----------------------------------------------------------------------------


def _run(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=clean_env(),
    )


def test_a_failed_start_leaves_no_store_and_names_the_address(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(
            "agent", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off", cwd=tmp_path
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"trio-events agent: error: cannot start: the gRPC address 127.0.0.1:{port} cannot be "
        "served (Address already in use).\n"
    )
    assert "storing events" not in result.stdout + result.stderr  # not promised first
    assert list(tmp_path.iterdir()) == []  # no ./trio-events.db left behind


def test_query_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`trio-events query ... | head -2`: the reader goes away; no 'Broken pipe', exit 0."""
    EventStore(tmp_path / "x.db").close()
    with subprocess.Popen(
        command("query", "--db", str(tmp_path / "x.db")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # as head does once it has its lines
        err = process.stderr.read()
        assert process.wait(timeout=60) == 0
    assert err == b""


def test_sighup_does_not_stop_the_agent_and_says_why(tmp_path: Path) -> None:
    with subprocess.Popen(
        command("agent", "--listen", "127.0.0.1:0", "--metrics-listen", "off"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        watchdog = threading.Timer(60, process.kill)  # a hung agent ends the test, not CI
        watchdog.start()
        try:
            assert "gRPC AddEvents on" in process.stdout.readline()
            process.send_signal(signal.SIGHUP)
            said = ""
            for line in process.stderr:  # until the agent says it handled the signal
                said += line
                if "Received SIGHUP" in line:
                    break
            assert process.poll() is None  # handled, and still running
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
        finally:
            watchdog.cancel()
            process.kill()
    assert process.returncode == 0
    assert "Received SIGHUP; settings are not reloaded while running" in said
    assert "trio-events agent: stopped: delivered=0" in out


def test_demo_runs_the_whole_pipeline_with_no_drops(tmp_path: Path) -> None:
    """The README's first command, smaller: real processes, real sockets, a real store."""
    argv = ["demo", "--workloads", "2", "--events", "1500", "--workdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "trio_events", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drops=0" in result.stdout
    assert "A failed task's timeline" in result.stdout
    assert "FAILED" in result.stdout
    assert (tmp_path / "demo-events.db").exists()
    # The last progress line counts what the agent delivered, not 0.
    delivered = re.search(r"merged into ([\d,]+) exported events", result.stdout)
    assert delivered is not None
    published = re.findall(r"published ([\d,]+)", result.stdout)
    assert published
    assert published[-1] == delivered.group(1)
    assert f"trio-events history --db {tmp_path / 'demo-events.db'}" in result.stdout


# --- docs/configuration.md --------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_configuration_doc_is_generated_and_names_every_flag_and_variable() -> None:
    """docs/configuration.md is `python -m trio_events._cli._docs` output: rerun it if this fails."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == configuration_markdown()
    head, *sections = re.split(r"^## trio-events ", doc, flags=re.MULTILINE)
    by_command = {section.split()[0]: section for section in sections}
    every_command = head[head.index("## Every command") :]
    checked = 0
    for name, sub in _subparsers(build_parser()).items():
        parsers = [sub, *_subparsers(sub).values()]
        for p in parsers:
            for action in p._actions:
                for flag in action.option_strings:
                    if flag in ("-h", "--help", "--json-converter"):
                        continue  # argparse's own, and the hidden benchmark switch
                    checked += 1
                    assert f"`{flag}`" in by_command[name] + every_command, (name, flag)
    assert checked > 80
    variables = {s.env for s in GLOBAL_SETTINGS if s.env}
    variables |= {s.env for c in COMMANDS for s in c.settings if s.env}
    for variable in variables:
        assert f"`{variable}`" in doc, variable
    # The variables the code reads are exactly the table's: one list, no stray reader.
    assert "RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR" in variables
