"""``trio-events loadgen``: drive an aggregator with realistic events through a real recorder.

Two modes. Without ``--rate`` the generator is closed-loop: it adds events as fast as the
recorder can export them, waiting whenever the ring has no room, so the result is the
sustainable throughput and nothing is dropped for lack of space. With ``--rate R`` it is
open-loop: R events per second whatever happens downstream, so an aggregator that cannot keep
up shows as drops. Either way the last line on stdout is one summary::

    loadgen: events=N exported=N dropped=N failures=N elapsed_s=X events_per_sec=Y
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO, final

import trio
import trio.lowlevel

from trio_events._cli._settings import read_secret
from trio_events._cli._workload import realistic_events
from trio_events.producer._client import EventAggregatorClient
from trio_events.producer._recorder import RayEventRecorder, RecorderConfig

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Mapping

    from trio_events import pb
    from trio_events.producer._client import AddEventsClient
    from trio_events.producer._event_base import RayEventBase

__all__ = ["realistic_events", "run", "run_loadgen"]

_CHUNK = 1_000  # events added per lock acquisition and per scheduling step
_PROGRESS_EVERY = 0.5  # seconds between refreshes of the progress line


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if not args.target:
        raise ValueError("--target is required (HOST:PORT of the aggregator)")
    if not args.events:
        raise ValueError("--events is required (how many events to generate)")
    return trio.run(run_loadgen, args)


@final
class _AckedIds:
    """Wraps a client and remembers the event ids of every acknowledged request."""

    def __init__(self, inner: AddEventsClient) -> None:
        self._inner = inner
        self.ids: list[bytes] = []

    async def add_events(self, request: pb.AddEventsRequest, *, timeout: float) -> None:  # noqa: ASYNC109
        await self._inner.add_events(request, timeout=timeout)
        self.ids.extend(event.event_id for event in request.events_data.events)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _feed(
    recorder: RayEventRecorder,
    events: Iterator[RayEventBase],
    *,
    rate: float | None,
    capacity: int,
    poll: float,
) -> None:
    start = trio.current_time()
    # Closed loop: a chunk must fit in the ring, or the wait for room below never ends.
    chunk_size = min(_CHUNK, capacity) if rate is None else max(1, min(_CHUNK, int(rate / 100)))
    sent = 0
    while chunk := list(itertools.islice(events, chunk_size)):
        if rate is None:
            # Closed loop: wait until the ring (and a possibly failing export) has room.
            while True:
                stats = recorder.statistics()
                if stats.buffered + stats.in_flight + len(chunk) <= capacity:
                    break
                await trio.sleep(poll)
        recorder.add_many(chunk)
        sent += len(chunk)
        if rate is None:
            await trio.lowlevel.checkpoint()  # let the exporter run between chunks
        else:
            await trio.sleep_until(start + sent / rate)


async def _show_progress(recorder: RayEventRecorder, out: TextIO) -> None:
    start = time.perf_counter()
    try:
        while True:
            await trio.sleep(_PROGRESS_EVERY)
            stats = recorder.statistics()
            rate = stats.added / max(time.perf_counter() - start, 1e-9)
            out.write(
                f"\rloadgen: added={stats.added} exported={stats.exported} "
                f"rate={rate:,.0f}/s dropped={stats.dropped} failures={stats.export_failures} "
            )
            out.flush()
    finally:
        out.write("\n")
        out.flush()


async def run_loadgen(args: argparse.Namespace) -> int:
    """Run the load generator; 0 when every event was exported, 1 when any was dropped."""
    try:
        token = read_secret(args.token_file, what="--token-file") if args.token_file else None
        client = EventAggregatorClient(args.target, token=token)
        config = RecorderConfig(
            max_queued_events=args.max_queued_events,
            report_interval=args.batch_interval,
            export_timeout=args.export_timeout,
            shutdown_flush_timeout=args.flush_timeout,
            source="loadgen",
        )
    except OSError as exc:
        raise ValueError(str(exc)) from None
    acked = _AckedIds(client) if args.ids_out else None
    recorder = RayEventRecorder(config, acked or client, node_id=os.urandom(28))
    events = realistic_events(args.kind, args.events, seed=args.seed)

    started = time.perf_counter()
    # The client is opened here, not only by the recorder, because _AckedIds may wrap it.
    async with client, trio.open_nursery() as nursery:
        if sys.stderr.isatty():
            nursery.start_soon(_show_progress, recorder, sys.stderr)
        async with recorder:
            await _feed(
                recorder,
                events,
                rate=args.rate,
                capacity=config.max_queued_events,
                poll=config.report_interval / 20,
            )
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - started

    stats = recorder.statistics()
    if acked is not None:
        ids = "".join(f"{event_id.hex()}\n" for event_id in acked.ids)
        await trio.Path(args.ids_out).write_text(ids)
    print(
        f"loadgen: events={stats.added} exported={stats.exported} dropped={stats.dropped} "
        f"failures={stats.export_failures} elapsed_s={elapsed:.3f} "
        f"events_per_sec={stats.added / max(elapsed, 1e-9):.0f}",
        flush=True,
    )
    return 0 if stats.dropped == 0 else 1
