"""Processes for the interop suite: collector, agent, a single-node Ray cluster, the workload.

Nothing here imports ``ray``: Ray's generated protobuf modules register the same message names
(``ray.rpc.events.RayEvent`` ...) in protobuf's default pool as ours, so Ray only ever runs in
subprocesses. Every wait polls a condition under a deadline, and every process started here is
stopped by its own id (a Ray cluster by its process group and session, never with
``ray stop``, which kills every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
POLL = 0.25  # seconds between checks of a condition (never a synchronisation by itself)
_T = TypeVar("_T")

# Settings the CLI or Ray would read from the environment; the suite sets its own.
_ENV_PREFIXES = ("RAY_", "TRIO_EVENTS_", "AGENT_GRPC_")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Ray or trio-events settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_until(
    what: str,
    check: Callable[[], _T | None],
    *,
    timeout: float,
    details: Callable[[], str] | None = None,
) -> _T:
    """Poll ``check`` until it returns something other than None; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}.{extra}")
        time.sleep(POLL)


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (Linux /proc), excluding zombies."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may contain spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


@attrs.define
class Process:
    """A subprocess whose stdout and stderr go to one log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    new_session: bool

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str],
        new_session: bool = False,
    ) -> Self:
        log = log_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=log_dir,
                start_new_session=new_session,
            )
        return cls(name, popen, log, new_session)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def describe(self, chars: int = 4000) -> str:
        return (
            f"--- {self.name} (pid {self.pid}, exit {self.returncode}), {self.log}:\n"
            + (self.output()[-chars:])
        )

    def wait_for_output(self, pattern: str, *, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the output; fails if the process exits first."""
        regex = re.compile(pattern, re.MULTILINE)

        def check() -> re.Match[str] | None:
            found = regex.search(self.output())
            if found is None and self.returncode is not None:
                found = regex.search(self.output())  # written just before it exited
                if found is None:
                    raise AssertionError(f"{pattern!r} never appeared.\n{self.describe()}")
            return found

        return wait_until(
            f"{pattern!r} from {self.name}", check, timeout=timeout, details=self.describe
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f} s.\n{self.describe()}"
            ) from None

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; in a new session, its leftovers too.

        Returns the exit status of a graceful stop, None if it had to be killed.
        """
        code: int | None = self.returncode
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                code = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait()
        if self.new_session:
            self._kill_session()
        return code

    def _kill_session(self) -> None:
        # Children left behind in our process group or session (by id, never by name).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in _session_members(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        wait_until(
            f"the processes of {self.name}'s session to exit",
            lambda: True if not _session_members(self.pid) else None,
            timeout=30,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- trio-events processes --------------------------------------------------------------------


def trio_events(*args: str) -> list[str]:
    return [PYTHON, "-m", "trio_events", *args]


@attrs.frozen
class Collector:
    process: Process
    port: int
    db: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/events"


def start_collector(log_dir: Path, *, timeout: float = 30.0) -> Collector:
    db = log_dir / "events.db"
    argv = trio_events("collect", "--listen", "127.0.0.1:0", "--db", str(db))
    process = Process.start("collector", argv, log_dir=log_dir, env=clean_env())
    try:
        found = process.wait_for_output(r"Listening on http://127\.0\.0\.1:(\d+)/", timeout=timeout)
    except BaseException:
        process.stop()
        raise
    return Collector(process, int(found.group(1)), db)


@attrs.frozen
class Agent:
    process: Process
    grpc_port: int
    metrics_port: int

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` from the agent's metrics endpoint: (status, body)."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()


def start_agent(log_dir: Path, export_url: str, *, timeout: float = 30.0) -> Agent:
    """``trio-events agent`` on 127.0.0.1 (any port) publishing every event type to ``export_url``."""
    argv = trio_events(
        "agent",
        "--listen", "127.0.0.1:0",
        "--export-addr", export_url,
        "--exposable-event-types", "ALL",
        "--metrics-listen", "127.0.0.1:0",
        "--linger", "0.05",
    )  # fmt: skip
    process = Process.start("agent", argv, log_dir=log_dir, env=clean_env())
    try:
        grpc = process.wait_for_output(r"gRPC AddEvents on 127\.0\.0\.1:(\d+)", timeout=timeout)
        metrics = process.wait_for_output(
            r"metrics on http://127\.0\.0\.1:(\d+)/metrics", timeout=timeout
        )
    except BaseException:
        process.stop()
        raise
    return Agent(process, int(grpc.group(1)), int(metrics.group(1)))


# --- Ray ---------------------------------------------------------------------------------------

# Without this, Ray resolves 127.0.0.1 to the machine's outward address; with it, a
# single-node cluster keeps every socket on the loopback interface.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@attrs.frozen
class EventSwitches:
    """How a cluster is told to emit Ray events (all off by default in 2.60).

    ``env`` goes to every Ray process, the driver included (a driver without it records no
    owner-side task events); ``system_config`` goes to ``ray start --head --system-config``,
    which Ray hands to every process of the cluster, drivers included.
    """

    env: dict[str, str] = attrs.field(factory=dict)
    system_config: dict[str, object] | None = None


# GCS (and Python) events need enable_ray_event; task events come from one of two core-worker
# paths: the 2.60 RayTaskEventRecorder, or the older TaskEventBuffer path.
EVENT_SWITCHES = {
    "env-task-event-recorder": EventSwitches(
        env={"RAY_enable_ray_event": "1", "RAY_enable_ray_task_event_recorder": "1"}
    ),
    "env-task-event-buffer": EventSwitches(
        env={"RAY_enable_ray_event": "1", "RAY_enable_core_worker_ray_event_to_aggregator": "1"}
    ),
    "system-config": EventSwitches(
        system_config={"enable_ray_event": True, "enable_ray_task_event_recorder": True}
    ),
}


def ray_env(**settings: str) -> dict[str, str]:
    return clean_env(**LOOPBACK_ONLY, RAY_USAGE_STATS_ENABLED="0", **settings)


def ray_executable() -> str:
    return str(Path(PYTHON).parent / "ray")


def ray_start_command(agent_grpc_served_by: Literal["ray", "trio-events"]) -> list[str]:
    """``ray start``; for "trio-events", with Ray's dashboard agent kept off the gRPC port.

    With plain ``ray`` the agent is minimal anyway; with ``ray[default]`` the launcher makes
    only the agent minimal (ray_start_without_agent_grpc.py), the dashboard head stays whole.
    """
    if agent_grpc_served_by == "ray":
        return [ray_executable(), "start"]
    return [PYTHON, str(HERE / "ray_start_without_agent_grpc.py"), "start"]


def ray_command(args: Sequence[str], *, env: Mapping[str, str], timeout: float = 180.0) -> str:
    """Run one ``ray`` CLI command (``list tasks`` ...); its stdout, or an error with its output."""
    result = subprocess.run(
        [ray_executable(), *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"`ray {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n"
            f"{result.stderr[-4000:]}"
        )
    return result.stdout


@attrs.define
class RayCluster:
    """``ray start --head --block`` in its own session; :meth:`stop` ends all of it."""

    process: Process
    temp_dir: Path
    gcs_address: str
    agent_grpc_port: int
    stopped: bool = False

    @classmethod
    def start(
        cls,
        *,
        log_dir: Path,
        temp_dir: Path,
        env: Mapping[str, str],
        agent_grpc_port: int,
        agent_grpc_served_by: Literal["ray", "trio-events"],
        system_config: Mapping[str, object] | None = None,
        gcs_port: int | None = None,
        dashboard: bool = False,
        timeout: float = 120.0,
    ) -> Self:
        """``agent_grpc_served_by``: who listens on ``agent_grpc_port`` (events, metrics).

        ``dashboard`` starts the dashboard head (``ray list tasks`` needs it; ray[default]).
        """
        gcs, client, agent_http, metrics, runtime_env, dashboard_port = free_ports(6)
        gcs = gcs_port if gcs_port is not None else gcs
        argv = [
            *ray_start_command(agent_grpc_served_by), "--head", "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--num-cpus=1", "--num-gpus=0",
            "--object-store-memory=100000000",
            f"--dashboard-agent-grpc-port={agent_grpc_port}",  # = metrics_agent_port
            f"--dashboard-agent-listen-port={agent_http}",
            f"--metrics-export-port={metrics}",
            f"--ray-client-server-port={client}",
            f"--runtime-env-agent-port={runtime_env}",
            *(
                ["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                 f"--dashboard-port={dashboard_port}"]
                if dashboard
                else ["--include-dashboard=false"]
            ),
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            "--log-style=record",
        ]  # fmt: skip
        if system_config is not None:
            argv.append(f"--system-config={json.dumps(system_config)}")
        process = Process.start("ray", argv, log_dir=log_dir, env=env, new_session=True)
        cluster = cls(process, temp_dir, f"127.0.0.1:{gcs}", agent_grpc_port)
        try:
            process.wait_for_output(r"Ray runtime started", timeout=timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def logs_dir(self) -> Path:
        return self.temp_dir / "session_latest" / "logs"

    @property
    def session_name(self) -> str:
        return (self.temp_dir / "session_latest").resolve().name

    def log_lines(self, pattern: str) -> list[str]:
        """Lines matching ``pattern`` in the cluster's log files (GCS, raylet, workers...)."""
        regex = re.compile(pattern)
        found = []
        for path in sorted(self.logs_dir.glob("*")):
            if path.is_file() and path.suffix in (".log", ".out", ".err"):
                for line in path.read_text(errors="replace").splitlines():
                    if regex.search(line):
                        found.append(f"{path.name}: {line}")
        return found

    def stop(self, *, timeout: float = 60.0) -> None:
        """SIGTERM to ``ray start --block`` (Ray drains the node and stops its processes),
        then SIGKILL to whatever of its session is left. Idempotent."""
        if not self.stopped:
            self.stopped = True
            self.process.stop(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@attrs.define
class Workload:
    """``ray_workload.py`` running as a Ray driver, in two phases.

    It runs its tasks and prints its summary (:meth:`summary`), then keeps the job open until
    :meth:`release`: Ray kills a job's workers at once when the job ends, and what their core
    workers had not exported by then (RUNNING transitions, profile events) is lost, so the
    suite releases the driver only once the workers' events have arrived.
    """

    process: Process
    release_file: Path

    @classmethod
    def start(cls, gcs_address: str, *, log_dir: Path, env: Mapping[str, str]) -> Self:
        release_file = log_dir / "release-workload"
        argv = [PYTHON, str(HERE / "ray_workload.py"), gcs_address, str(release_file)]
        return cls(
            Process.start("workload", argv, log_dir=log_dir, env=env, new_session=True),
            release_file,
        )

    def summary(self, *, timeout: float = 180.0) -> dict[str, Any]:
        """The JSON the driver prints once its tasks are done: the IDs to look for."""
        found = self.process.wait_for_output(r"^WORKLOAD (\{.*\})$", timeout=timeout)
        result: dict[str, Any] = json.loads(found.group(1))
        return result

    def release(self, *, timeout: float = 60.0) -> None:
        """Let the driver shut down (ending the job); wait for it to exit successfully."""
        self.release_file.touch()
        code = self.process.wait(timeout)
        if code != 0:
            raise AssertionError(f"The Ray workload failed.\n{self.process.describe()}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release_file.touch()
        self.process.stop()
