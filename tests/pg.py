"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries on a temporary directory.

``initdb`` and ``pg_ctl`` come from ``/usr/lib/postgresql/*/bin`` (or PATH). When they are missing
and we are root, ``apt-get install -y postgresql`` installs them; otherwise the session fails with
one sentence saying what to run. PostgreSQL refuses to run as root, so as root the cluster runs
as the ``postgres`` user (created by the package) through ``runuser``, on a directory given to it.
The server listens on 127.0.0.1 and a free port, with fsync off unless asked (a test cluster is disposable).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import psycopg

_USER: Final = "trio"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def server_binaries() -> Path:
    """The directory holding initdb and pg_ctl, installing them if we can."""
    found = _bin_dir()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=False)
        found = _bin_dir()
    if found is None:
        raise RuntimeError(
            "The PostgreSQL tests need the server binaries (initdb, pg_ctl): run "
            "`sudo apt-get install -y postgresql` (Debian/Ubuntu) and run the tests again."
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One PostgreSQL server; :meth:`new_database` gives each test a database of its own."""

    def __init__(self, *, crash_safe: bool = False, fsync: bool = False) -> None:
        # crash_safe: commits reach the WAL before they return, so a killed server keeps them
        # (with fsync off the operating system still has the data; the benchmark turns it on).
        self._synchronous_commit = "on" if crash_safe else "off"
        self._fsync = "on" if fsync else "off"
        self.bin = server_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="trio-events-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._names = itertools.count()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", _USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync={self._fsync} "
            f"-c synchronous_commit={self._synchronous_commit} "
            f"-c full_page_writes={self._fsync} -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop as a crash would (immediate mode: no checkpoint, processes killed)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY".encode())
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
