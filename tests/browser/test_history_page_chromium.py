"""The history page in a real headless Chromium (``nox -s browser``; kept out of the default run).

Debian's ``chromium`` package is installed when it is missing and we are root; otherwise the test
fails with the command to run. The page is loaded for a store written by the demo's workload
generator; the failing task's error must be in the rendered page, outside any collapsed element,
and screenshots are kept (in ``TRIO_EVENTS_SCREENSHOT_DIR`` when set; docs/ holds the ones shown
in docs/history.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from trio_events._cli._workload import realistic_events
from trio_events.agent._convert import JsonConverter
from trio_events.store._history_index import HistoryIndex
from trio_events.store._history_server import HistoryConfig, HistoryServer
from trio_events.store._sqlite import EventStore

pytestmark = pytest.mark.slow

INSTALL = "apt-get update && apt-get install -y chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["sh", "-c", INSTALL],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            timeout=1800,
            check=False,
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.fail(f"Chromium is not installed; run `{INSTALL}` as root.")
    return found


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "demo-events.db"
    converter = JsonConverter()
    events = [converter.to_dict(e.serialize()) for e in realistic_events("mixed", 4000, seed=15)]
    with EventStore(path) as store:
        store.insert_batch_sync(events)
    return path


async def browse(chromium: str, profile: Path, *args: str) -> bytes:
    await trio.Path(profile).mkdir(parents=True, exist_ok=True)
    with trio.fail_after(120):
        done = await trio.run_process(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


async def test_failing_task_error_is_on_the_page(chromium, demo_store, tmp_path, nursery) -> None:
    index = HistoryIndex(demo_store)
    index.refresh()
    failed = sorted(
        (a for a in index.history.tasks.values() if a.state == "FAILED"),
        key=lambda a: a.end_ns or 0,
    )
    index.close()
    assert failed, "the workload should have produced a failed task"
    newest = failed[-1]
    error_line = newest.error_message.strip().splitlines()[-1]

    server = HistoryServer(HistoryConfig(str(demo_store), "127.0.0.1", 0))
    port = await nursery.start(server.run)
    base = f"http://127.0.0.1:{port}"
    job_page = f"{base}/session/{newest.session}/job/{newest.job_id}"

    home = (await browse(chromium, tmp_path / "p1", "--dump-dom", f"{base}/")).decode()
    # The error's last line is shown in the failure's heading, not only inside <details>.
    assert f'<div class="error-type">{newest.error_type}: {error_line}</div>' in home
    assert newest.task_id in home
    job = (
        await browse(chromium, tmp_path / "p2", "--dump-dom", f"{job_page}?state=FAILED")
    ).decode()
    assert f"{newest.error_type}: {error_line}" in job
    assert 'class="bar bad"' in job  # failed attempts drawn on the timeline

    shots = Path(os.environ.get("TRIO_EVENTS_SCREENSHOT_DIR") or tmp_path)
    await trio.Path(shots).mkdir(parents=True, exist_ok=True)
    for name, url, height in [
        ("history-home.png", f"{base}/", 760),
        ("history-job.png", job_page, 1500),
        ("history-session.png", f"{base}/session/{newest.session}/", 900),
    ]:
        target = shots / name
        await browse(
            chromium,
            tmp_path / f"profile-{name}",  # not the screenshot's own path
            f"--screenshot={target}",
            f"--window-size=1400,{height}",
            url,
        )
        data = await trio.Path(target).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 20_000  # a rendered page, not a blank one
    nursery.cancel_scope.cancel()
