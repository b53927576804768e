"""The spool says when it cannot keep its promise: full, replaced, stalled; off the event loop."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.test_buffer import blob, take
from tests.test_spool import TASK, ids, open_spool
from trio_events.agent._spool import SpoolEventBuffer, SpoolFullError, SpoolStalledError

DEADLINE = 20


async def add_async(spool: SpoolEventBuffer, start: int, stop: int, size: int = 0) -> None:
    blobs = [blob(i) + b"-" + b"x" * size for i in range(start, stop)]
    await spool.add_many([TASK] * (stop - start), blobs)


async def test_add_many_writes_in_a_thread_and_takes_see_it(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE), open_spool(tmp_path / "s.spool") as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        loop_thread = threading.get_ident()
        threads: list[int] = []
        write = spool._file.write

        def spy(**kwargs: Any) -> None:
            threads.append(threading.get_ident())
            write(**kwargs)

        spool._file.write = spy  # type: ignore[method-assign]
        await add_async(spool, 0, 5)
        assert threads
        assert loop_thread not in threads
        assert ids(take(pub, 10)) == [0, 1, 2, 3, 4]


async def test_a_full_file_bound_refuses_then_recovers_when_deliveries_free_space(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE):
        spool = open_spool(tmp_path / "s.spool", max_file_bytes=600_000, min_free_bytes=0)
        with spool:
            pub = spool.open_consumer("pub", max_batch_size=1000)
            async with trio.open_nursery() as nursery:
                await nursery.start(spool.run)
                added = 0
                refusal = None
                while added < 1000 and refusal is None:
                    try:
                        await add_async(spool, added, added + 10, size=5000)
                        added += 10
                    except SpoolFullError as exc:
                        refusal = str(exc)
                assert refusal is not None
                assert re.match(r"^The spool .* would pass its bound", refusal)
                assert 0 < added < 1000
                problem = spool.problem()
                assert problem is not None
                assert "--spool-max-file-bytes" in problem
                assert spool.statistics().added == added  # nothing of the refused request
                # Deliveries settle what was stored: the persister deletes it and the WAL is
                # truncated, so the same request fits again.
                while batch := take(pub, 10):
                    pub.commit(batch)
                with trio.fail_after(10):
                    while True:
                        try:
                            await add_async(spool, added, added + 10, size=5000)
                            break
                        except SpoolFullError:
                            await trio.sleep(0.05)
                assert spool.problem() is None
                assert ids(take(pub, 10)) == list(range(added, added + 10))
                nursery.cancel_scope.cancel()


async def test_a_deleted_spool_file_stops_acknowledging_for_good(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE), open_spool(tmp_path / "s.spool") as spool:
        spool.open_consumer("pub", max_batch_size=1000)
        await add_async(spool, 0, 3)
        os.unlink(tmp_path / "s.spool")
        with pytest.raises(trio.BrokenResourceError, match=r"was deleted while the agent"):
            await add_async(spool, 3, 6)
        assert spool.statistics().added == 3
        problem = spool.problem()
        assert problem is not None
        assert "deleted" in problem
        # Even once a new file is there, a restart is what opens it.
        (tmp_path / "s.spool").write_bytes(b"")
        with pytest.raises(trio.BrokenResourceError):
            await add_async(spool, 3, 6)


async def test_deliveries_are_still_recorded_after_the_file_was_deleted(tmp_path: Path) -> None:
    """The persister goes on (in the open, deleted file) instead of failing the service."""
    with trio.fail_after(DEADLINE), open_spool(tmp_path / "s.spool") as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        async with trio.open_nursery() as nursery:
            await nursery.start(spool.run)
            await add_async(spool, 0, 3)
            os.unlink(tmp_path / "s.spool")
            pub.commit(take(pub, 10))
            while spool._consumers["pub"].saved != 3:  # noqa: ASYNC110 (written by a thread)
                await trio.sleep(0.01)
            with pytest.raises(trio.BrokenResourceError):
                await add_async(spool, 3, 6)
            nursery.cancel_scope.cancel()


async def test_a_replaced_spool_file_is_detected(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE), open_spool(tmp_path / "s.spool") as spool:
        spool.open_consumer("pub", max_batch_size=1000)
        (tmp_path / "other").write_bytes(b"not the spool")
        os.replace(tmp_path / "other", tmp_path / "s.spool")
        with pytest.raises(trio.BrokenResourceError, match=r"was replaced by another file"):
            await add_async(spool, 0, 3)


async def test_a_stalled_write_refuses_other_requests_and_the_loop_keeps_running(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE), open_spool(tmp_path / "s.spool", write_timeout=0.2) as spool:
        pub = spool.open_consumer("pub", max_batch_size=1000)
        release = threading.Event()
        write = spool._file.write

        def frozen(**kwargs: Any) -> None:
            release.wait(DEADLINE)  # a frozen file system: the write does not return
            write(**kwargs)

        spool._file.write = frozen  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_async, spool, 0, 3)
            await trio.testing.wait_all_tasks_blocked()
            # The event loop runs: this test is running. Another request waits write_timeout
            # for the writer, then is refused; the spool reports the stall.
            with pytest.raises(SpoolStalledError, match=r"has not finished a write for"):
                await add_async(spool, 3, 6)
            assert "stalled disk" in (spool.problem() or "")
            # Once past write_timeout, a request is refused without waiting at all.
            with trio.fail_after(0.1), pytest.raises(SpoolStalledError):
                await add_async(spool, 3, 6)
            release.set()
        assert spool.problem() is None
        assert ids(take(pub, 10)) == [0, 1, 2]
