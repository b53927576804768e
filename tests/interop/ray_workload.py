"""The interop suite's Ray driver: ``python ray_workload.py GCS_ADDRESS RELEASE_FILE``.

Run by the test process as a subprocess with a Ray-enabled Python; it must never import
trio_events (nor be imported by pytest): Ray's generated protobuf modules and ours register the
same message names in protobuf's default pool.

It runs three tasks, an actor with one method call and a task that fails, and prints one line
``WORKLOAD {json}`` with the IDs (hex) the tests look for in the event store. Then it waits
until RELEASE_FILE exists (the tests create it once the workers' own events have arrived: Ray
kills a job's workers as soon as the job ends, losing what they had not exported yet) and shuts
down, which finishes the job and, with its owner gone, kills the actor.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FAILURE_MESSAGE = "trio-events interop: this task fails on purpose"
RELEASE_TIMEOUT = 300.0  # seconds; shut down anyway after that

# Imported by name so that type checkers (which run without Ray installed) leave it alone.
ray: Any = importlib.import_module("ray")


def square(x: int) -> tuple[int, str]:
    return x * x, ray.get_runtime_context().get_worker_id()


def fail() -> None:
    raise ValueError(FAILURE_MESSAGE)


class Counter:
    def __init__(self) -> None:
        self.total = 0

    def add(self, amount: int) -> tuple[int, str, int]:
        self.total += amount
        return self.total, ray.get_runtime_context().get_worker_id(), os.getpid()


# Ray names tasks and actors after these functions and classes: square, fail, Counter.add.
remote_square = ray.remote(square)
remote_fail = ray.remote(max_retries=0)(fail)
RemoteCounter = ray.remote(Counter)


def run(address: str) -> tuple[dict[str, Any], Any]:
    """Run the workload; its summary, and the actor handle (the actor lives while it is held)."""
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    context = ray.get_runtime_context()

    square_refs = [remote_square.remote(i) for i in range(3)]
    squares = ray.get(square_refs)
    assert [value for value, _ in squares] == [0, 1, 4], squares

    counter = RemoteCounter.remote()
    add_ref = counter.add.remote(5)
    total, actor_worker_id, actor_pid = ray.get(add_ref)
    assert total == 5, total

    fail_ref = remote_fail.remote()
    try:
        ray.get(fail_ref)
    except ray.exceptions.RayTaskError as exc:
        error = str(exc)
    else:
        raise AssertionError("the failing task did not fail")
    assert FAILURE_MESSAGE in error, error

    summary = {
        "job_id": context.get_job_id(),
        "node_id": context.get_node_id(),
        "driver_pid": os.getpid(),
        "square_task_ids": [ref.task_id().hex() for ref in square_refs],
        "square_worker_ids": sorted({worker_id for _, worker_id in squares}),
        "actor_id": counter._actor_id.hex(),
        "actor_task_id": add_ref.task_id().hex(),
        "actor_worker_id": actor_worker_id,
        "actor_pid": actor_pid,
        "failed_task_id": fail_ref.task_id().hex(),
        "failure_message": FAILURE_MESSAGE,
        "ray_version": ray.__version__,
    }
    return summary, counter


def main(address: str, release_file: Path) -> None:
    summary, actor = run(address)
    print("WORKLOAD " + json.dumps(summary), flush=True)
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while not release_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    ray.shutdown()  # ends the job; the actor dies with its owner
    del actor


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
