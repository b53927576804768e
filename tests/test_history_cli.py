"""The ``history`` command: serving, the Chrome trace file, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from tests import ray_event_samples as s
from tests.test_history_api import store_events
from trio_events._cli._history import run_history
from trio_events._cli._main import parse
from trio_events.store._sqlite import EventStore

if TYPE_CHECKING:
    from pathlib import Path


def make_store(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    with EventStore(path) as store:
        store.insert_batch_sync(store_events())
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_events", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_chrome_trace_file(tmp_path: Path) -> None:
    db = make_store(tmp_path)
    out = tmp_path / "trace.json"
    result = run_cli(
        "history",
        "--db",
        str(db),
        "--chrome-trace",
        str(out),
        "--session",
        s.SESSION,
        "--job",
        s.JOB_ID.hex(),
    )
    assert result.returncode == 0, result.stderr
    assert f"Wrote 2 spans to {out}" in result.stdout
    trace = json.loads(out.read_text())
    assert sorted(e["args"]["attempt_number"] for e in trace if e["ph"] == "X") == [0, 1]


def test_missing_store_and_unknown_session_are_one_sentence(tmp_path: Path) -> None:
    missing = run_cli("history", "--db", str(tmp_path / "nope.db"), "--chrome-trace", "x.json")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == f"trio-events history: error: There is no event store at {str(tmp_path / 'nope.db')!r}."
    )
    db = make_store(tmp_path)
    unknown = run_cli("history", "--db", str(db), "--chrome-trace", "x.json", "--session", "s1")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        f"trio-events history: error: the store {db} has no session named 's1'."
    )


async def test_history_command_serves_until_cancelled(tmp_path: Path, nursery, capsys) -> None:
    db = make_store(tmp_path)
    args = parse(["history", "--db", str(db), "--listen", "127.0.0.1:0"], {})
    port = await nursery.start(run_history, args)
    with trio.fail_after(10):
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/api/v0/nodes")
    assert response.json()["data"]["result"]["total"] == 0  # the latest session has no nodes
    out = capsys.readouterr().out
    assert f"History of {len(store_events())} events at http://127.0.0.1:{port}/" in out
    assert f"ray list tasks --address http://127.0.0.1:{port}" in out
    nursery.cancel_scope.cancel()


async def test_a_port_in_use_is_one_sentence(tmp_path: Path, capsys) -> None:
    db = make_store(tmp_path)
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = parse(["history", "--db", str(db), "--listen", f"127.0.0.1:{port}"], {})
        assert await run_history(args) == 1
    assert (
        f"trio-events history: error: cannot serve on 127.0.0.1:{port}:" in capsys.readouterr().err
    )
