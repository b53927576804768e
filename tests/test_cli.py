"""The command line: configuration from flags and Ray's environment variables, and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trio_events import pb
from trio_events._cli._agent import service_config_from_args
from trio_events._cli._main import build_parser, main
from trio_events.agent._publisher_config import DEFAULT_EXPOSABLE_EVENT_TYPES


def _agent_config(argv: list[str], environ: dict[str, str]):
    args = build_parser(environ).parse_args(["agent", *argv])
    return service_config_from_args(args, environ)


def test_agent_defaults_are_ray_2_60s() -> None:
    config = _agent_config([], {})
    assert config.agent.buffer_size == 100_000
    assert config.agent.max_batch_size == 1000
    assert config.agent.max_message_bytes == 20 * 1024 * 1024
    assert config.agent.on_full == "drop_oldest"
    assert config.destinations == ()
    assert config.store_path == "trio-events.db"  # no export address: keep events locally
    assert config.store_publisher.exposable_event_types is None  # the local store keeps all


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
        build_parser({}).parse_args(["agent", "--help"])
    help_text = capsys.readouterr().out
    assert "--linger" in help_text
    assert "--json-converter" not in help_text  # a benchmark option, not a product one


def test_flags_override_the_environment(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    env = {"RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE": "500"}
    config = _agent_config(
        [
            "--buffer-size",
            "42",
            "--export-addr",
            "http://127.0.0.1:9/x",
            "--exposable-event-types",
            "TASK_DEFINITION_EVENT, TASK_LIFECYCLE_EVENT",
            "--on-full",
            "reject",
            "--auth-token-file",
            str(token),
            "--header",
            "X-Team: infra",
            "--compression",
            "zstd",
        ],
        env,
    )
    assert config.agent.buffer_size == 42
    assert config.agent.on_full == "reject"
    assert config.agent.auth_token == "s3cret"
    (destination,) = config.destinations
    assert (
        config.store_publisher.exposable_event_types == destination.publisher.exposable_event_types
    )
    assert destination.http.headers == (("X-Team", "infra"),)
    assert destination.http.compression == "zstd"
    assert destination.publisher.exposable_event_types == frozenset(
        {pb.RayEvent.TASK_DEFINITION_EVENT, pb.RayEvent.TASK_LIFECYCLE_EVENT}
    )


def test_invalid_environment_is_one_sentence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE", "lots")
    assert main(["version"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "trio-events: error: environment variable "
        "RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE='lots' is invalid: expected a whole number.\n"
    )


def test_unknown_exposable_type_names_the_valid_ones() -> None:
    args = build_parser({}).parse_args(["agent", "--exposable-event-types", "TASK_EVENT"])
    with pytest.raises(ValueError, match="TASK_EVENT") as info:
        service_config_from_args(args, {})
    assert "TASK_DEFINITION_EVENT" in str(info.value)


def test_event_types_lists_all_17(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["event-types"]) == 0
    out = capsys.readouterr().out
    assert "17 Ray 2.60 event types" in out
    assert all(name in out for n, name in pb.EVENT_TYPE_NAMES.items() if n)


def test_demo_runs_the_whole_pipeline_with_no_drops(tmp_path: Path) -> None:
    """The README's first command, smaller: real processes, real sockets, a real store."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_events",
            "demo",
            "--workloads",
            "2",
            "--events",
            "1500",
            "--workdir",
            str(tmp_path),
        ],
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


def test_invalid_flag_value_says_what_it_wants(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_events",
            "--log-format",
            "json",
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "x.db"),
            "--buffer-size",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        "error: argument --buffer-size: expected a whole number greater than 0, got '0'\n"
    )
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "trio_events",
                "agent",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: cannot start: [Errno 98] Address already in use" in result.stderr
    assert f"'127.0.0.1', {port}" in result.stderr


def test_configuration_doc_is_generated_from_the_settings() -> None:
    """docs/configuration.md is `python -m trio_events._cli._settings` output: regenerate it if this fails."""
    from trio_events._cli._settings import configuration_markdown

    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == configuration_markdown() + "\n"


def test_loadgen_takes_ray_s_recorder_variables() -> None:
    env = {
        "RAY_ray_events_report_interval_ms": "250",
        "RAY_ray_event_recorder_max_queued_events": "77",
        "RAY_task_events_shutdown_flush_timeout_ms": "3000",
    }
    args = build_parser(env).parse_args(["loadgen", "--target", "127.0.0.1:1", "--events", "5"])
    assert (args.batch_interval, args.max_queued_events, args.flush_timeout) == (0.25, 77, 3.0)


def test_an_explicitly_empty_exposable_list_exposes_nothing_as_in_ray() -> None:
    env = {"RAY_DASHBOARD_AGGREGATOR_AGENT_EXPOSABLE_EVENT_TYPES": ""}
    config = _agent_config(["--export-addr", "http://127.0.0.1:9/x"], env)
    assert config.destinations[0].publisher.exposable_event_types == frozenset()
    unset = _agent_config(["--export-addr", "http://127.0.0.1:9/x"], {})
    assert unset.destinations[0].publisher.exposable_event_types == DEFAULT_EXPOSABLE_EVENT_TYPES
