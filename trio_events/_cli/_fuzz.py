"""``trio-events fuzz-sink URL`` and ``trio-events fuzz-agent HOST:PORT``.

Property-based fuzzing of a user's receiver: hypothesis generates batches exactly as Ray's
publisher POSTs them (or AddEvents requests exactly as Ray's core workers and GCS send them),
sends each to the one address given, and reports every kind of bad answer (see
``_fuzz_targets``) with the minimal input hypothesis shrank it to, saved to a file that
``--replay`` sends again. Bounded by ``--examples`` and ``--max-time``: shrinking a failure found
may go on up to twice ``--max-time``, then the smallest failing inputs so far are reported.
Each request is bounded by ``--timeout``; ``--seed`` repeats a run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from trio_events._cli._fuzz_targets import (
    KINDS,
    Finding,
    GrpcTarget,
    HttpTarget,
    check_reachable,
    describe_request,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

    from hypothesis import strategies as st

DEFAULT_SAVE: Final = "trio-events-fuzz-failures.json"


class _OutOfTime(BaseException):  # not an Exception: hypothesis re-raises it unshrunk
    """Raised to stop a shrink that runs past twice ``--max-time``."""


# One exception type per kind, so that hypothesis shrinks each kind as a distinct bug.
_KIND_ERRORS: Final = {kind: type(f"Finding_{kind}", (Finding,), {}) for kind in KINDS}


def add_sink_target(p: argparse.ArgumentParser) -> None:
    """The positional argument of ``fuzz-sink`` (flags come from the settings table)."""
    p.add_argument("url", help="the receiver's URL, e.g. http://127.0.0.1:8084/v1/events")


def add_agent_target(p: argparse.ArgumentParser) -> None:
    """The positional argument of ``fuzz-agent`` (flags come from the settings table)."""
    p.add_argument("target", help="the aggregator's gRPC address HOST:PORT")


def _strategies() -> Any:
    try:
        from trio_events.testing import strategies
    except ImportError as exc:  # hypothesis is in the `testing` extra
        raise ValueError(str(exc)) from None
    return strategies


def run_fuzz_sink(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    publisher_posts = _strategies().publisher_posts
    target = HttpTarget(args.url, timeout=args.timeout)
    names = {"both": None, "yes": True, "no": False}[args.proto_names]
    try:
        return _run(
            args,
            "fuzz-sink",
            args.url,
            target,
            publisher_posts(max_events=args.max_events, proto_names=names),
            send=target.post,
            describe=lambda post: post.describe(),
        )
    finally:
        target.close()


def run_fuzz_agent(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    add_events_requests = _strategies().add_events_requests
    target = GrpcTarget(args.target, timeout=args.timeout)
    try:
        return _run(
            args,
            "fuzz-agent",
            args.target,
            target,
            add_events_requests(max_events=args.max_events),
            send=target.send,
            describe=describe_request,
        )
    finally:
        target.close()


def _run(
    args: argparse.Namespace,
    command: str,
    address: str,
    target: HttpTarget | GrpcTarget,
    strategy: st.SearchStrategy[Any],
    *,
    send: Callable[[Any], None],
    describe: Callable[[Any], str],
) -> int:
    check_reachable(target.host, target.port, args.timeout)
    if args.replay:
        return _replay(Path(args.replay), command, address, target)
    started = time.monotonic()
    found, tried, seed = _search(args, strategy, send)
    elapsed = time.monotonic() - started
    print(f"{command}: {tried} inputs sent to {address} in {elapsed:.1f} s (seed {seed})")
    if not found:
        print("PASS: every answer was a success or backpressure.")
        return 0
    failures = []
    for kind in KINDS:
        if kind not in found:
            continue
        example, finding = found[kind]
        print(f"FAIL {kind}: {finding.detail}")
        print(f"  minimal input: {describe(example)}")
        failures.append(
            {"kind": kind, "detail": finding.detail, "input": describe(example)}
            | target.saved(example)
        )
    record = {"command": command, "address": address, "seed": seed, "failures": failures}
    Path(args.save).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"Minimal failing inputs saved to {args.save}; replay with --replay {args.save}")
    return 1


def _search(
    args: argparse.Namespace, strategy: st.SearchStrategy[Any], send: Callable[[Any], None]
) -> tuple[dict[str, tuple[Any, Finding]], int, int]:
    import random

    import hypothesis
    from hypothesis import strategies as st

    found: dict[str, tuple[Any, Finding]] = {}
    tried = 0
    deadline = time.monotonic() + args.max_time
    hard_deadline = deadline + args.max_time
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=args.examples,
        deadline=None,
        database=None,  # nothing written to the current directory
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
        suppress_health_check=list(hypothesis.HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
        print_blob=False,
    )
    @hypothesis.given(st.data())
    def probe(data: st.DataObject) -> None:
        nonlocal tried
        now = time.monotonic()
        if not found and now > deadline:
            return  # out of time: draws nothing, so hypothesis soon runs out of new inputs
        if found and now > hard_deadline:
            raise _OutOfTime  # keep the smallest failing inputs found so far
        example = data.draw(strategy)
        tried += 1
        try:
            send(example)
        except Finding as finding:
            # The last failing call of a kind is hypothesis's final replay of its minimal input.
            found[finding.kind] = (example, finding)
            raise _KIND_ERRORS[finding.kind](finding.kind, finding.detail) from None

    try:
        probe()
    except (Finding, hypothesis.errors.Flaky, _OutOfTime):
        pass
    except BaseExceptionGroup as group:  # several kinds: one exception each
        _, rest = group.split((Finding, hypothesis.errors.Flaky))
        if rest is not None:
            raise rest from None
    return found, tried, seed


def _replay(path: Path, command: str, address: str, target: HttpTarget | GrpcTarget) -> int:
    try:
        record = json.loads(path.read_text())
        failures = record["failures"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Cannot read saved failures from {path} ({exc}).") from None
    if record.get("command") != command:
        raise ValueError(f"{path} holds inputs of {record.get('command')!r}, not of {command}.")
    still = 0
    for saved in failures:
        try:
            target.replay(saved)
        except Finding as finding:
            still += 1
            print(f"FAIL {finding.kind}: {finding.detail}\n  input: {saved['input']}")
        else:
            print(f"PASS now (was {saved['kind']}): {saved['input']}")
    print(f"{command}: replayed {len(failures)} input(s) to {address}; {still} still fail.")
    return 1 if still else 0
