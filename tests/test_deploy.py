"""docs/deploy.md's recipes parse and name only flags, variables and file keys that exist."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from trio_events._cli._agent import service_config_from_args
from trio_events._cli._main import main, parse
from trio_events._cli._tables import COMMANDS, GLOBAL_SETTINGS

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
KNOWN_ENV = {s.env for s in GLOBAL_SETTINGS if s.env} | {
    s.env for c in COMMANDS for s in c.settings if s.env
}
RAY_SWITCHES = {"RAY_enable_ray_event", "RAY_enable_ray_task_event_recorder"}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", DEPLOY.read_text(), re.MULTILINE | re.DOTALL)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (toml,) = _blocks("toml")
    path = tmp_path / "trio-events.toml"
    path.write_text(toml)
    return path


def test_the_config_file_passes_config_check(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert 'url = "http://127.0.0.1:8084/v1/events"' in out
    assert f'spool = "/var/lib/trio-events/spool.db"  # file {config_file} [agent]' in out


def test_the_systemd_unit_runs_an_agent_with_flags_that_exist(config_file: Path) -> None:
    (ini,) = _blocks("ini")
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(ini)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/trio-events")
    assert argv[1] == "agent"
    argv = [str(config_file) if a == "/etc/trio-events/trio-events.toml" else a for a in argv]
    name, _, value = service["Environment"].partition("=")
    assert name in KNOWN_ENV
    environ = {name: value}
    args = parse(argv[1:], environ)
    config = service_config_from_args(args, environ)
    assert (config.agent.host, config.agent.port) == ("127.0.0.1", 50051)
    assert config.spool is not None
    assert [d.publisher.name for d in config.destinations] == ["history"]
    assert int(service["TimeoutStopSec"]) > config.grace_period + config.agent.shutdown_timeout


def _pod_specs(cluster: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    spec = cluster["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [(g["rayStartParams"], g["template"]["spec"]) for g in groups]


def test_the_raycluster_runs_an_agent_beside_ray_on_every_node() -> None:
    (manifest,) = _blocks("yaml")
    cluster = yaml.safe_load(manifest)
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    pods = _pod_specs(cluster)
    assert len(pods) == 2  # the head and the worker group: every node
    for ray_params, pod in pods:
        (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "trio-events"]
        assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before Ray
        argv = sidecar["command"][1:] + sidecar["args"]
        environ = {}
        for variable in sidecar["env"]:
            assert variable["name"] in KNOWN_ENV, variable["name"]
            environ[variable["name"]] = variable.get("value", "10.1.2.3")  # valueFrom: any IP
        args = parse(argv, environ)  # unknown flags or bad values raise here
        config = service_config_from_args(args, environ)
        assert config.agent.host == "127.0.0.1"
        assert str(config.agent.port) == ray_params["dashboard-agent-grpc-port"]
        assert config.metrics_listen is not None
        assert sidecar["startupProbe"]["httpGet"] == {
            "path": "/healthz",
            "port": config.metrics_listen[1],
        }
        assert config.destinations
        (ray,) = pod["containers"]
        assert {v["name"] for v in ray["env"]} == RAY_SWITCHES
