"""JSON conversion on every core: worker processes through trio-parallel, shared by destinations.

A :class:`ConversionPool` owns ``workers`` worker processes (``trio_parallel``'s worker context;
``workers=1`` converts in this process instead). Each publisher gets a converter handle from
:meth:`ConversionPool.converter` for its JSON settings; the handle has the method publishers
call, ``await dumps_serialized_cooperatively(blobs) -> bytes``: one batch of serialized
``RayEvent`` in, the JSON array out, one ``run_sync`` call per batch. The hand-off is a pickled
list of bytes in and one bytes object out, a few percent of the conversion it moves
(``benchmarks/micro.py handoff`` measures it).

Workers start with the generated converters compiled (``_warm_worker`` runs in each one before
its first job). :meth:`ConversionPool.run` starts them after signalling ``started()``, so the
agent is ready at once; until they are warm, batches are converted in this process.

**Shared conversion.** Destinations with the same JSON settings that read the same batch (the
same serialized events, in the same order: the buffer hands every consumer the same bytes
objects) share one conversion. A batch is identified by its settings, its length and the
identity of its first and last event, and confirmed by comparing every event's identity, so a
different batch is never served another's body. The first handle to ask converts; the others
wait for its result, or take it from a small table of recent results that each of them takes
once (bounded by :data:`SHARED_RESULTS`, oldest forgotten first). If the converting handle is
cancelled or its conversion fails, the waiters convert for themselves. With one handle per
settings nothing is kept. The durable spool reads each consumer's batch from its file, so its
consumers never hold the same objects and convert separately: correct, only not shared.

Workers are spawned processes (trio-parallel's default, the only start method safe with threads),
which import the main module: a program that runs a pool must guard its entry point with
``if __name__ == "__main__":``, as with :mod:`multiprocessing` (``python -m trio_events`` does).

**A worker that dies** (killed, out of memory) does not lose the batch: it is converted again
in another worker, then, if that one dies too, in this process; each such batch is counted in
:attr:`ConversionPoolStatistics.worker_failures`. Cancelling a conversion kills its worker
(``kill_on_cancel``) and the batch stays with the caller, which accounts for it.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio
import trio_parallel

from trio_events.agent._convert import DEFAULT_CHUNK_SIZE, JsonConverter

if TYPE_CHECKING:
    from collections.abc import Iterable

    from google.protobuf.message import Message

__all__ = ["SHARED_RESULTS", "ConversionPool", "ConversionPoolStatistics", "PooledConverter"]

logger = logging.getLogger("trio_events.agent.convert_pool")

#: Recent conversions kept for other destinations with the same settings to take.
SHARED_RESULTS: Final = 16
# How long closing the pool waits for idle workers to exit before killing them.
_WORKER_EXIT_GRACE: Final = 5.0

WorkerFunction = Callable[[bool, list[bytes]], bytes]

# -- in the worker processes ------------------------------------------------------------------

# One converter per key style, per worker process (trio-parallel keeps a worker's globals from
# one job to the next).
_worker_converters: dict[bool, JsonConverter] = {}


def _worker_converter(preserving_proto_field_name: bool) -> JsonConverter:
    converter = _worker_converters.get(preserving_proto_field_name)
    if converter is None:
        converter = JsonConverter(preserving_proto_field_name=preserving_proto_field_name)
        converter.dumps_serialized([])  # generates and compiles every RayEvent converter
        _worker_converters[preserving_proto_field_name] = converter
    return converter


def _warm_worker() -> None:
    """A worker's first act: compile the converters of both key styles."""
    _worker_converter(False)
    _worker_converter(True)


def _ready() -> None:
    """A job that only makes the pool start (and warm) one more worker."""


def convert_in_worker(preserving_proto_field_name: bool, blobs: list[bytes]) -> bytes:
    """What a worker runs for one batch: :meth:`JsonConverter.dumps_serialized`."""
    return _worker_converter(preserving_proto_field_name).dumps_serialized(blobs)


# -- in the agent -----------------------------------------------------------------------------


@final
@attrs.frozen
class ConversionPoolStatistics:
    """What a :class:`ConversionPool` has done since it was created."""

    workers: int  #: worker processes configured (1: conversion in this process)
    warm_workers: int  #: worker processes started and warm
    in_worker: int  #: batches converted by a worker process
    in_process: int  #: batches converted in this process
    shared: int  #: batches served from another destination's conversion of the same events
    worker_failures: int  #: batches whose worker died; each was converted again

    def line(self) -> str:
        """For the agent's log at shutdown."""
        return (
            f"{self.in_worker} batches in {self.workers if self.workers > 1 else 'no'} worker "
            f"processes, {self.in_process} in-process, {self.shared} shared between "
            f"destinations, {self.worker_failures} redone after a worker died"
        )


class _Shared:
    """One conversion that other handles with the same settings may take."""

    __slots__ = ("blobs", "body", "done", "takers")

    def __init__(self, blobs: list[bytes], takers: int) -> None:
        self.blobs = blobs
        self.takers = takers  # handles other than the converting one that may still take it
        self.body: bytes | None = None
        self.done = trio.Event()

    def matches(self, blobs: list[bytes]) -> bool:
        mine = self.blobs
        return mine is blobs or (
            len(mine) == len(blobs) and all(a is b for a, b in zip(mine, blobs, strict=True))
        )


@final
class ConversionPool:
    """JSON conversion in ``workers`` processes: ``await nursery.start(pool.run)``.

    Start it before the publishers that use it and stop it after them (the agent's supervisor
    does). ``worker_function`` is what a worker runs per batch (tests replace it).
    """

    def __init__(
        self, workers: int, *, worker_function: WorkerFunction = convert_in_worker
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(
                f"The number of conversion workers must be an integer >= 1 (1 converts in the "
                f"agent's process), got {workers!r}."
            )
        self._workers = workers
        self._worker_function = worker_function
        self._context: trio_parallel.WorkerContext | None = None
        self._limiter = trio.CapacityLimiter(workers)
        self._warm = 0
        self._all_warm = trio.Event()
        self._in_process: dict[bool, JsonConverter] = {}
        self._handles: dict[bool, int] = {}
        self._shared: OrderedDict[tuple[bool, int, int, int], _Shared] = OrderedDict()
        self._in_worker_count = self._in_process_count = self._shared_count = 0
        self._worker_failures = 0

    @property
    def workers(self) -> int:
        return self._workers

    def statistics(self) -> ConversionPoolStatistics:
        return ConversionPoolStatistics(
            workers=self._workers,
            warm_workers=self._warm,
            in_worker=self._in_worker_count,
            in_process=self._in_process_count,
            shared=self._shared_count,
            worker_failures=self._worker_failures,
        )

    def converter(self, *, preserving_proto_field_name: bool = False) -> PooledConverter:
        """A converter handle for one destination with these JSON settings."""
        self._handles[preserving_proto_field_name] = (
            self._handles.get(preserving_proto_field_name, 0) + 1
        )
        return PooledConverter(self, preserving_proto_field_name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Signal ``started()`` at once, start and warm the workers, then serve until cancelled.

        On the way out, conversions still running are cancelled by their callers' scopes (the
        same cancellation), and idle workers are told to exit, then killed after a few seconds.
        """
        if self._workers == 1:
            task_status.started()
            await trio.sleep_forever()
        else:
            await self._run_workers(task_status)

    async def _run_workers(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio_parallel.open_worker_context(
            idle_timeout=math.inf, init=_warm_worker, grace_period=_WORKER_EXIT_GRACE
        ) as context:
            try:
                task_status.started()
                async with trio.open_nursery() as nursery:
                    for _ in range(self._workers):
                        nursery.start_soon(self._start_worker, context)
                self._context = context
                self._all_warm.set()
                logger.info("%d JSON conversion workers are ready.", self._workers)
                await trio.sleep_forever()
            finally:
                self._context = None
                self._warm = 0

    async def wait_warm(self) -> None:
        """Return once :meth:`run` has started the workers (at once with ``workers=1``)."""
        if self._workers == 1:
            await trio.lowlevel.checkpoint()
        else:
            await self._all_warm.wait()

    async def _start_worker(self, context: trio_parallel.WorkerContext) -> None:
        # Concurrent jobs each take a worker of their own, so every worker gets started.
        try:
            await context.run_sync(_ready, limiter=self._limiter, kill_on_cancel=True)
        except trio_parallel.BrokenWorkerError as exc:
            # Not fatal: the first batch that finds no idle worker starts one.
            logger.warning("A JSON conversion worker failed to start (%s).", exc)
            return
        self._warm += 1

    # -- one batch ----------------------------------------------------------------------------

    async def dumps(
        self, blobs: list[bytes], preserving_proto_field_name: bool, chunk_size: int
    ) -> bytes:
        takers = self._handles.get(preserving_proto_field_name, 1) - 1
        if not takers or not blobs:
            return await self._convert(blobs, preserving_proto_field_name, chunk_size)
        key = (preserving_proto_field_name, len(blobs), id(blobs[0]), id(blobs[-1]))
        while (entry := self._shared.get(key)) is not None and entry.matches(blobs):
            await entry.done.wait()
            if entry.body is not None:
                self._shared_count += 1
                entry.takers -= 1
                if entry.takers <= 0 and self._shared.get(key) is entry:
                    del self._shared[key]
                return entry.body
            # Its converter was cancelled or failed: convert (or wait for another) afresh.
        entry = self._shared[key] = _Shared(blobs, takers)
        while len(self._shared) > SHARED_RESULTS:
            self._shared.popitem(last=False)
        try:
            entry.body = await self._convert(blobs, preserving_proto_field_name, chunk_size)
            return entry.body
        finally:
            if entry.body is None and self._shared.get(key) is entry:
                del self._shared[key]
            entry.done.set()

    async def _convert(
        self, blobs: list[bytes], preserving_proto_field_name: bool, chunk_size: int
    ) -> bytes:
        context = self._context
        if context is not None:
            for attempt in (1, 2):
                try:
                    body = await context.run_sync(
                        self._worker_function,
                        preserving_proto_field_name,
                        blobs,
                        limiter=self._limiter,
                        kill_on_cancel=True,
                    )
                except trio_parallel.BrokenWorkerError as exc:
                    self._worker_failures += 1
                    logger.warning(
                        "A JSON conversion worker died converting a batch of %d events (%s); "
                        "converting it again %s.",
                        len(blobs),
                        exc.args[0] if exc.args else exc,
                        "in another worker" if attempt == 1 else "in the agent's process",
                    )
                    continue
                self._in_worker_count += 1
                result: bytes = body
                return result
        self._in_process_count += 1
        return await self.in_process(preserving_proto_field_name).dumps_serialized_cooperatively(
            blobs, chunk_size=chunk_size
        )

    def in_process(self, preserving_proto_field_name: bool) -> JsonConverter:
        converter = self._in_process.get(preserving_proto_field_name)
        if converter is None:
            converter = JsonConverter(preserving_proto_field_name=preserving_proto_field_name)
            self._in_process[preserving_proto_field_name] = converter
        return converter


@final
class PooledConverter:
    """One destination's view of a :class:`ConversionPool` (from :meth:`~ConversionPool.converter`).

    Has the converter methods a publisher uses: :meth:`dumps_serialized_cooperatively` for
    batches and :meth:`to_value` for single messages (in this process, for the publisher's
    event-by-event retry of a batch that failed to convert).
    """

    def __init__(self, pool: ConversionPool, preserving_proto_field_name: bool) -> None:
        self._pool = pool
        self._preserving_proto_field_name = preserving_proto_field_name

    @property
    def preserving_proto_field_name(self) -> bool:
        return self._preserving_proto_field_name

    def to_value(self, message: Message) -> Any:
        return self._pool.in_process(self._preserving_proto_field_name).to_value(message)

    async def dumps_serialized_cooperatively(
        self, blobs: Iterable[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> bytes:
        """The JSON array of serialized ``RayEvent`` messages, converted by the pool.

        Raises what :meth:`JsonConverter.dumps_serialized` raises for a batch it refuses
        (``DecodeError`` for a blob that is not a ``RayEvent``).
        """
        batch = blobs if isinstance(blobs, list) else list(blobs)
        return await self._pool.dumps(batch, self._preserving_proto_field_name, chunk_size)
