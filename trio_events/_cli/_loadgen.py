"""``trio-events loadgen``: drive an aggregator with realistic events through a real recorder.

Two modes. Without ``--rate`` the generator is closed-loop: it adds events as fast as the
recorder can export them, waiting whenever the ring has no room, so the result is the
sustainable throughput and nothing is dropped for lack of space. With ``--rate R`` it is
open-loop: R events per second whatever happens downstream, so an aggregator that cannot keep
up shows as drops. Either way the last line on stdout is one summary::

    loadgen: events=N exported=N dropped=N failures=N elapsed_s=X events_per_sec=Y
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, final

import trio
import trio.lowlevel

from trio_events._cli._workload import KINDS, realistic_events
from trio_events.producer._client import EventAggregatorClient
from trio_events.producer._recorder import RayEventRecorder, RecorderConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio_events import pb
    from trio_events.producer._client import AddEventsClient
    from trio_events.producer._event_base import RayEventBase

__all__ = ["add_loadgen_arguments", "realistic_events", "run_loadgen"]

_CHUNK = 1_000  # events added per lock acquisition and per scheduling step
_PROGRESS_EVERY = 0.5  # seconds between refreshes of the progress line


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):  # inf would overflow the rate's arithmetic
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def add_loadgen_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``loadgen`` options to ``parser`` (the CLI's subcommand parser)."""
    parser.add_argument("--target", required=True, help="aggregator address, HOST:PORT")
    parser.add_argument("--events", type=_positive_int, required=True, help="events to generate")
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="events per second, open loop (default: as fast as exports keep up, no drops)",
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="mixed",
        help="mixed: a whole cluster's events; lifecycle: task lifecycle events only",
    )
    parser.add_argument(
        "--batch-interval",
        type=_positive_float,
        default=1.0,
        help="seconds between exports (Ray's ray_events_report_interval_ms; default 1.0)",
    )
    parser.add_argument(
        "--max-queued-events",
        type=_positive_int,
        default=10_000,
        help="the recorder's ring capacity (Ray's ray_event_recorder_max_queued_events)",
    )
    parser.add_argument(
        "--export-timeout", type=_positive_float, default=5.0, help="deadline of each export"
    )
    parser.add_argument(
        "--flush-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds allowed at the end to export what is still buffered",
    )
    parser.add_argument("--seed", type=int, default=None, help="make the events reproducible")
    parser.add_argument(
        "--ids-out",
        type=Path,
        default=None,
        help="write the ids of the events the aggregator acknowledged (hex, one per line); a "
        "merged event carries the id of the first event of its group",
    )
    parser.add_argument(
        "--token-file", type=Path, default=None, help="file holding a bearer token to send"
    )


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
        token = None if args.token_file is None else args.token_file.read_text().strip()
        client = EventAggregatorClient(args.target, token=token)
        config = RecorderConfig(
            max_queued_events=args.max_queued_events,
            report_interval=args.batch_interval,
            export_timeout=args.export_timeout,
            shutdown_flush_timeout=args.flush_timeout,
            source="loadgen",
        )
    except (OSError, ValueError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    acked = _AckedIds(client) if args.ids_out is not None else None
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
        args.ids_out.write_text("".join(f"{event_id.hex()}\n" for event_id in acked.ids))
    print(
        f"loadgen: events={stats.added} exported={stats.exported} dropped={stats.dropped} "
        f"failures={stats.export_failures} elapsed_s={elapsed:.3f} "
        f"events_per_sec={stats.added / max(elapsed, 1e-9):.0f}",
        flush=True,
    )
    return 0 if stats.dropped == 0 else 1
