"""The conversion pool: worker processes give in-process bytes; crashes, cancellation, sharing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest
import trio
from google.protobuf.message import DecodeError

from benchmarks.workload import merged_blobs
from trio_events.agent._convert import JsonConverter
from trio_events.agent._convert_pool import ConversionPool, convert_in_worker

# Workers start in a second or two on a quiet machine; far more is allowed on a loaded one.
STARTUP = 60.0

# -- what the workers run in these tests (module level, so a spawned worker can import it) ----


def exit_abruptly(preserving: bool, blobs: list[bytes]) -> bytes:
    os._exit(3)  # a worker dying mid-batch, as when the OOM killer takes it


def block_when_told(preserving: bool, blobs: list[bytes]) -> bytes:
    """Blocks (after touching the file the first blob names) for a batch starting b"block:"."""
    if blobs and blobs[0].startswith(b"block:"):
        Path(blobs[0][len(b"block:") :].decode()).touch()
        time.sleep(600)
    return convert_in_worker(preserving, blobs)


# -- helpers ----------------------------------------------------------------------------------


async def warm(pool: ConversionPool, nursery: trio.Nursery) -> None:
    await nursery.start(pool.run)
    with trio.fail_after(STARTUP):
        await pool.wait_warm()
    assert pool.statistics().warm_workers == pool.workers


def blobs(count: int = 300) -> list[bytes]:
    return merged_blobs(count)[1]


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preserving", [False, True])
async def test_workers_convert_to_the_same_bytes_as_in_process(nursery, preserving) -> None:
    pool = ConversionPool(2)
    await warm(pool, nursery)
    batch = blobs()
    converter = pool.converter(preserving_proto_field_name=preserving)
    body = await converter.dumps_serialized_cooperatively(batch)
    expected = JsonConverter(preserving_proto_field_name=preserving).dumps_serialized(batch)
    # Equal as JSON values (map entries may come in another order from another process).
    assert orjson.loads(body) == orjson.loads(expected)
    stats = pool.statistics()
    assert (stats.in_worker, stats.in_process, stats.worker_failures) == (1, 0, 0)
    assert stats.line() == (
        "1 batches in 2 worker processes, 0 in-process, 0 shared between destinations, "
        "0 redone after a worker died"
    )
    # A batch the converter refuses raises what it raises in-process, for the publisher to
    # find the culprit event by event.
    with pytest.raises(DecodeError, match="RayEvent"):
        await converter.dumps_serialized_cooperatively([batch[0], b"\xff\xff\xff"])
    assert pool.statistics().worker_failures == 0


async def test_one_worker_converts_in_process_without_run() -> None:
    pool = ConversionPool(1)
    batch = blobs(50)
    body = await pool.converter().dumps_serialized_cooperatively(batch, chunk_size=7)
    assert body == JsonConverter().dumps_serialized(batch)
    stats = pool.statistics()
    assert (stats.workers, stats.in_worker, stats.in_process) == (1, 0, 1)


async def test_a_dead_worker_does_not_lose_the_batch(nursery, caplog) -> None:
    pool = ConversionPool(2, worker_function=exit_abruptly)
    await warm(pool, nursery)
    batch = blobs(50)
    body = await pool.converter().dumps_serialized_cooperatively(batch)
    assert orjson.loads(body) == orjson.loads(JsonConverter().dumps_serialized(batch))
    stats = pool.statistics()
    # Tried in a worker, again in another worker, then converted here.
    assert (stats.worker_failures, stats.in_worker, stats.in_process) == (2, 0, 1)
    assert "converting it again in another worker" in caplog.text
    assert "converting it again in the agent's process" in caplog.text


async def test_cancelling_kills_the_busy_worker_and_the_pool_goes_on(nursery, tmp_path) -> None:
    pool = ConversionPool(2, worker_function=block_when_told)
    await warm(pool, nursery)
    converter = pool.converter()
    started = tmp_path / "started"
    outcome: list[str] = []

    async def convert_blocking() -> None:
        try:
            await converter.dumps_serialized_cooperatively([f"block:{started}".encode()])
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        outcome.append("returned")

    with trio.fail_after(STARTUP):
        async with trio.open_nursery() as inner:
            inner.start_soon(convert_blocking)
            # The worker (another process) touches the file once it has the batch.
            while not started.exists():  # noqa: ASYNC110
                await trio.sleep(0.01)
            inner.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    # The killed worker is replaced on demand; the pool still converts.
    batch = blobs(20)
    with trio.fail_after(STARTUP):
        body = await converter.dumps_serialized_cooperatively(batch)
    assert orjson.loads(body) == orjson.loads(JsonConverter().dumps_serialized(batch))
    assert pool.statistics().worker_failures == 0


async def test_destinations_with_the_same_settings_share_one_conversion() -> None:
    pool = ConversionPool(1)
    first, second = pool.converter(), pool.converter()
    other = pool.converter(preserving_proto_field_name=True)
    batch = blobs(250)
    copy_of_batch = list(batch)  # another list holding the same events: the same batch
    bodies: dict[str, bytes] = {}

    async def convert(name: str, converter, events) -> None:
        bodies[name] = await converter.dumps_serialized_cooperatively(events, chunk_size=10)

    async with trio.open_nursery() as nursery:  # concurrently: the second waits for the first
        nursery.start_soon(convert, "first", first, batch)
        nursery.start_soon(convert, "second", second, copy_of_batch)
        nursery.start_soon(convert, "other", other, batch)
    assert bodies["first"] == bodies["second"] == JsonConverter().dumps_serialized(batch)
    assert bodies["other"] == JsonConverter(preserving_proto_field_name=True).dumps_serialized(
        batch
    )
    stats = pool.statistics()
    assert (stats.in_process, stats.shared) == (2, 1)
    # Taken by every other destination: forgotten. A later read converts again.
    await second.dumps_serialized_cooperatively(batch)
    assert (pool.statistics().in_process, pool.statistics().shared) == (3, 1)


async def test_a_batch_with_other_events_is_never_served_another_body() -> None:
    pool = ConversionPool(1)
    first, second = pool.converter(), pool.converter()
    batch = blobs(30)
    await first.dumps_serialized_cooperatively(batch)
    changed = list(batch)  # same length, same first and last object...
    changed[1] = bytes(bytearray(batch[2]))  # ...another event in between
    body = await second.dumps_serialized_cooperatively(changed)
    assert (
        body == JsonConverter().dumps_serialized(changed) != JsonConverter().dumps_serialized(batch)
    )
    assert pool.statistics().shared == 0


async def test_waiters_convert_themselves_when_the_converter_is_cancelled(nursery) -> None:
    pool = ConversionPool(1)
    first, second = pool.converter(), pool.converter()
    batch = blobs(300)
    got: list[bytes] = []
    first_scope = trio.CancelScope()

    async def first_reader() -> None:
        with first_scope:
            await first.dumps_serialized_cooperatively(batch, chunk_size=1)

    async def second_reader() -> None:
        got.append(await second.dumps_serialized_cooperatively(batch, chunk_size=10))

    async with trio.open_nursery() as inner:
        inner.start_soon(first_reader)
        while not pool._shared:  # the first reader is converting
            await trio.lowlevel.checkpoint()
        [entry] = pool._shared.values()
        inner.start_soon(second_reader)
        while not entry.done.statistics().tasks_waiting:  # the second waits for the first
            await trio.lowlevel.checkpoint()
        first_scope.cancel()
    assert first_scope.cancelled_caught
    assert got == [JsonConverter().dumps_serialized(batch)]
    assert pool.statistics().shared == 0


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_workers_must_be_a_positive_integer(workers) -> None:
    with pytest.raises(
        ValueError,
        match=r"^The number of conversion workers must be an integer >= 1 \(1 converts in the "
        r"agent's process\), got .*\.$",
    ):
        ConversionPool(workers)
