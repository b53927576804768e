"""The config file: precedence, per-destination settings, errors that name the key, config check."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from trio_events import pb
from trio_events._cli._agent import service_config_from_args
from trio_events._cli._docs import EXAMPLE_CONFIG
from trio_events._cli._main import main, parse

BUFFER_ENV = "RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE"
LINGER_ENV = "RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_MAX_BUFFER_SEND_INTERVAL_SECONDS"


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trio-events.toml"
    path.write_text(text)
    return str(path)


def _config(argv: list[str], environ: dict[str, str]):
    return service_config_from_args(parse(["agent", *argv], environ), environ)


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[agent]\nbuffer_size = 300\nmax_batch_size = 50\non_full = 'reject'\ngrace_period = 2.5\n",
    )
    file_only = _config(["--config", path], {})
    assert file_only.agent.buffer_size == 300
    assert file_only.agent.max_batch_size == 50
    assert file_only.agent.on_full == "reject"
    assert file_only.grace_period == 2.5
    assert file_only.unhealthy_after == 60.0  # nowhere: the default
    env_wins = _config(["--config", path], {BUFFER_ENV: "200"})
    assert env_wins.agent.buffer_size == 200
    flag_wins = _config(["--config", path, "--buffer-size", "100"], {BUFFER_ENV: "200"})
    assert flag_wins.agent.buffer_size == 100
    # The file may also be named by TRIO_EVENTS_CONFIG.
    assert _config([], {"TRIO_EVENTS_CONFIG": path}).agent.buffer_size == 300


def test_destinations_carry_their_own_settings(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    path = _write(
        tmp_path,
        f"""
[agent]
linger = 0.5
compression = "gzip"

[[agent.destination]]
name = "history"
url = "http://127.0.0.1:8084/v1/events"
exposable_event_types = "ALL"

[[agent.destination]]
url = "https://127.0.0.1:9/ingest"
header = {{ "X-Team" = "infra" }}
bearer_token_file = "{token}"
publisher_timeout = 9
compression = "zstd"
exposable_event_types = ["TASK_DEFINITION_EVENT", "TASK_LIFECYCLE_EVENT"]
preserve_proto_field_name = true
max_retries = 4
give_up_after = 60
""",
    )
    config = _config(["--config", path], {})
    first, second = config.destinations
    assert (first.publisher.name, second.publisher.name) == ("history", "http_service_2")
    assert first.http.url == "http://127.0.0.1:8084/v1/events"
    assert first.publisher.exposable_event_types is None
    assert first.http.compression == "gzip"  # from [agent]
    assert first.publisher.linger == second.publisher.linger == 0.5
    assert second.http.compression == "zstd"
    assert second.http.headers == (("X-Team", "infra"),)
    assert second.http.bearer_token == "t0ken"
    assert second.http.timeout == second.publisher.attempt_timeout == 9.0
    assert second.publisher.exposable_event_types == frozenset(
        {pb.RayEvent.TASK_DEFINITION_EVENT, pb.RayEvent.TASK_LIFECYCLE_EVENT}
    )
    assert second.publisher.preserve_proto_field_name is True
    assert (second.publisher.max_retries, second.publisher.give_up_after) == (4, 60.0)
    assert config.store_path is None
    # A variable overrides every destination; --export-addr replaces the file's destinations.
    env = {LINGER_ENV: "0.25"}
    assert {d.publisher.linger for d in _config(["--config", path], env).destinations} == {0.25}
    (only,) = _config(["--config", path, "--export-addr", "http://127.0.0.1:7/"], {}).destinations
    assert (only.http.url, only.http.compression) == ("http://127.0.0.1:7/", "gzip")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[agent]\nbufer_size = 5\n",
            "{path}: unknown key 'bufer_size' in [agent]; accepted: auth_token_file, bearer_token_env,",
        ),
        (
            "[agent]\nbuffer_size = 0\n",
            "{path} [agent] buffer_size = 0 is invalid: expected a whole number greater than 0.",
        ),
        (
            "[agent]\non_full = 'drop_newest'\n",
            '{path} [agent] on_full = "drop_newest" is invalid: expected one of drop_oldest, '
            "reject.",
        ),
        (
            "[agent]\nbuffer_size = true\n",
            "{path} [agent] buffer_size = true is invalid: expected a string or a number, not "
            "true or false.",
        ),
        ("[agents]\n", "{path}: unknown key 'agents'; accepted at the top level: log_format,"),
        ("[agent\n", "the config file {path} is not valid TOML: "),
        (
            "[[agent.destination]]\nname = 'x'\n",
            "{path}: [[agent.destination]] #1 needs a url.",
        ),
        (
            "[[agent.destination]]\nurl = 'http://127.0.0.1:9/'\nbuffer_size = 3\n",
            "{path}: unknown key 'buffer_size' in [[agent.destination]] #1; accepted: "
            "bearer_token_env,",
        ),
        (
            "[[agent.destination]]\nurl = 'http://127.0.0.1:9/'\nmax_retries = -5\n",
            "{path} [[agent.destination]] #1 max_retries = -5 is invalid: expected -1 "
            "(unlimited) or a whole number >= 0.",
        ),
        (
            "log_level = 'loud'\n",
            '{path}: log_level = "loud" is invalid: expected one of DEBUG, INFO, WARNING, ERROR.',
        ),
    ],
    ids=[
        "unknown-key",
        "bad-int",
        "bad-choice",
        "bool-for-int",
        "unknown-table",
        "not-toml",
        "no-url",
        "unknown-destination-key",
        "bad-destination-value",
        "log-level",
    ],
)
def test_an_invalid_file_stops_start_up_with_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    assert main(["agent", "--config", path, "--metrics-listen", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-events agent: error: " + message.format(path=path)), err
    assert err.count("\n") == 1
    assert err.endswith(".\n")


def test_config_check_prints_the_effective_configuration_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "warehouse.token"
    token.write_text("very-secret-token\n")
    text = EXAMPLE_CONFIG.replace("/etc/trio-events/warehouse.token", str(token))
    text = text.replace('header = { "X-Team" = "infra" }', 'header = { "X-Api-Key" = "k3y" }')
    path = _write(tmp_path, text)
    monkeypatch.setenv("TRIO_EVENTS_CONFIG", path)
    monkeypatch.setenv(BUFFER_ENV, "1234")
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert f"the effective configuration from {path}" in out
    assert "buffer_size = 1234  # env RAY_DASHBOARD_AGGREGATOR_AGENT_MAX_EVENT_BUFFER_SIZE" in out
    assert f'listen = "0.0.0.0:50051"  # file {path} [agent]' in out
    assert "grace_period = 10.0  # default" not in out
    assert f"grace_period = 20.0  # file {path} [agent]" in out
    assert "on_full = " in out
    assert 'name = "warehouse"' in out
    assert 'header = { "X-Api-Key" = "***" }' in out
    assert "k3y" not in out
    assert "very-secret-token" not in out
    assert '[collect]\nlisten = "127.0.0.1:8084"' in out
    assert "[loadgen]" in out


def test_config_check_refuses_what_start_up_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        "[[agent.destination]]\nurl = 'http://127.0.0.1:9/'\nbearer_token_file = '/nope'\n",
    )
    assert main(["config", "check", "--config", path]) == 2
    assert capsys.readouterr().err == (
        "trio-events config: error: --bearer-token-file file '/nope' cannot be read (No such "
        "file or directory).\n"
    )


def test_the_global_settings_come_from_the_file_too(tmp_path: Path) -> None:
    path = _write(tmp_path, 'log_format = "json"\nlog_level = "warning"\n[collect]\ndb = "c.db"\n')
    args = parse(["collect", "--config", path], {})
    assert (args.log_format, args.log_level, args.db) == ("json", "WARNING", "c.db")
    assert parse(["--config", path, "collect"], {"TRIO_EVENTS_LOG_FORMAT": "text"}).log_format == (
        "text"
    )


def test_each_value_is_defined_once() -> None:
    """The library and the command line run the same pipeline (issue 12, item 5)."""
    from trio_events.agent._http_sink import HttpPublisherConfig
    from trio_events.agent._publisher_config import PublisherConfig
    from trio_events.agent._service import Destination, ServiceConfig

    # The local store keeps every type, from the library as from the command line.
    assert ServiceConfig().store_publisher.exposable_event_types is None
    assert _config([], {}).store_publisher == ServiceConfig().store_publisher
    # A publisher's attempt timeout is its HTTP client's timeout, whatever it was given.
    given = PublisherConfig(attempt_timeout=1.0)
    destination = Destination(HttpPublisherConfig(url="http://127.0.0.1:9/", timeout=7.5), given)
    assert destination.publisher.attempt_timeout == 7.5
    assert (
        Destination(HttpPublisherConfig(url="http://127.0.0.1:9/")).publisher.attempt_timeout == 3.0
    )
    # The table's defaults are the library's.
    library = _config(["--export-addr", "http://127.0.0.1:9/"], {}).destinations[0]
    assert library.publisher == attrs.evolve(
        PublisherConfig(), attempt_timeout=library.http.timeout
    )
