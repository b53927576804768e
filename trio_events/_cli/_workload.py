"""Realistic Ray event streams for load generation, benchmarks and tests.

A small simulated cluster (nodes, workers, one driver job, actors) followed by an endless,
interleaved stream of task attempts. As in a real core worker, each attempt's lifecycle arrives
as several partial events (one per state change) that the recorder merges before export; some
attempts fail with error info and are retried as attempt 1. Ids have Ray's sizes: 4-byte job
ids, 16-byte actor ids, 24-byte task ids, 28-byte node, worker and event ids.

Task events are the hot path and are built as payload messages wrapped with ``from_payload``
(several times faster than the keyword constructors); the few cluster events use the keyword
constructors for readability.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import TYPE_CHECKING, final

from trio_events import pb
from trio_events._proto.src.ray.protobuf import common_pb2
from trio_events.producer._events import (
    RayActorDefinitionEvent,
    RayActorLifecycleEvent,
    RayActorTaskDefinitionEvent,
    RayDriverJobDefinitionEvent,
    RayDriverJobLifecycleEvent,
    RayNodeDefinitionEvent,
    RayNodeLifecycleEvent,
    RayTaskDefinitionEvent,
    RayTaskLifecycleEvent,
    RayWorkerDefinitionEvent,
    RayWorkerLifecycleEvent,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trio_events.producer._event_base import RayEventBase

#: The kinds :func:`realistic_events` understands.
KINDS = ("mixed", "lifecycle")

# TaskStatus and ErrorType are ray.rpc enums that pb does not re-export; the generated module's
# constants carry the enum types mypy expects.
_PENDING_ARGS_AVAIL = common_pb2.PENDING_ARGS_AVAIL
_PENDING_NODE_ASSIGNMENT = common_pb2.PENDING_NODE_ASSIGNMENT
_SUBMITTED_TO_WORKER = common_pb2.SUBMITTED_TO_WORKER
_RUNNING = common_pb2.RUNNING
_FINISHED = common_pb2.FINISHED
_FAILED = common_pb2.FAILED
_NORMAL_TASK_STATES = (
    _PENDING_ARGS_AVAIL,
    _PENDING_NODE_ASSIGNMENT,
    _SUBMITTED_TO_WORKER,
    _RUNNING,
)
_ACTOR_TASK_STATES = (_PENDING_ARGS_AVAIL, _SUBMITTED_TO_WORKER, _RUNNING)

_TaskLifecycle = pb.TaskLifecycleEvent
_from_lifecycle = RayTaskLifecycleEvent.from_payload

_NODES = 3
_WORKERS_PER_NODE = 4
_ACTORS = 2
_WINDOW = 64  # task attempts in progress at once: partial events of different tasks interleave
_ACTOR_TASK_SHARE = 0.2
_FAILURE_RATE = 0.05
_RETRY_RATE = 0.8
_CHURN_EVERY = 2_000  # task events between a new worker and a new actor appearing
_NS = 1_000_000_000
_ERROR_TEXT = (
    "ray::process_batch() (pid=48213, ip=10.0.1.7)\n"
    '  File "/app/pipeline/stages.py", line 118, in process_batch\n'
    "    raise ValueError(f'batch {batch_id} has {n} malformed rows')\n"
    "ValueError: batch 8812 has 3 malformed rows"
)


@final
class _Attempt:
    __slots__ = ("actor_id", "attempt", "fails", "states", "step", "task_id")

    def __init__(self, task_id: bytes, attempt: int, actor_id: bytes | None, fails: bool) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.actor_id = actor_id
        self.fails = fails
        self.states = _NORMAL_TASK_STATES if actor_id is None else _ACTOR_TASK_STATES
        self.step = 0


@final
class _Cluster:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.random = rng.random
        self.now_ns = time.time_ns()
        self.id_prefix = rng.randbytes(20)
        self.id_counter = itertools.count()
        self.session = time.strftime("session_%Y-%m-%d_%H-%M-%S_000000_1", time.gmtime())
        self.job_id = rng.randbytes(4)
        self.driver_task_id = rng.randbytes(8) + b"\xff" * 12 + self.job_id
        self.nodes = [rng.randbytes(28) for _ in range(_NODES)]
        self.workers: list[tuple[bytes, bytes, int]] = []  # (node id, worker id, pid)
        self.actors: list[bytes] = []
        self.error = pb.RayErrorInfo(
            error_message=_ERROR_TEXT, error_type=common_pb2.TASK_EXECUTION_EXCEPTION
        )
        self.functions = [self._task_template(name) for name in ("process_batch", "load_shard")]
        self.methods = [self._actor_task_template(name) for name in ("step", "get_weights")]

    def tick(self) -> int:
        # random() scaled rather than randrange(): a third of the cost, and this runs per event.
        self.now_ns += 20_000 + int(self.random() * 380_000)
        return self.now_ns

    def event_id(self) -> bytes:
        """A unique 28-byte id: a random per-stream prefix and a counter (cheaper than 28
        random bytes per event, and still unique, which is all a sink relies on)."""
        return self.id_prefix + next(self.id_counter).to_bytes(8, "big")

    def _task_template(self, name: str) -> pb.TaskDefinitionEvent:
        p = pb.TaskDefinitionEvent(
            task_name=name,  # task_type NORMAL_TASK and language PYTHON are the zero defaults
            job_id=self.job_id,
            parent_task_id=self.driver_task_id,
            serialized_runtime_env='{"pip": ["numpy==2.1.0", "pyarrow"], "env_vars": {"OMP": "1"}}',
        )
        fd = p.task_func.python_function_descriptor
        fd.module_name, fd.function_name = "pipeline.stages", name
        fd.function_hash = self.rng.randbytes(16).hex()
        p.required_resources.update({"CPU": 1.0, "memory": 2.0 * 1024**3})
        return p

    def _actor_task_template(self, name: str) -> pb.ActorTaskDefinitionEvent:
        p = pb.ActorTaskDefinitionEvent(
            actor_task_name=f"Trainer.{name}",
            job_id=self.job_id,
            parent_task_id=self.driver_task_id,
        )
        fd = p.actor_func.python_function_descriptor
        fd.module_name, fd.class_name, fd.function_name = "pipeline.train", "Trainer", name
        fd.function_hash = self.rng.randbytes(16).hex()
        p.required_resources["CPU"] = 1.0
        return p

    # --- cluster events (few; keyword constructors) ------------------------------------------

    def setup(self) -> Iterator[RayEventBase]:
        for i, node_id in enumerate(self.nodes):
            yield RayNodeDefinitionEvent(
                node_id=node_id,
                node_ip_address=f"10.0.1.{7 + i}",
                hostname=f"ray-worker-{i}",
                node_name=f"ray-worker-{i}",
                instance_id=f"i-0{self.rng.randbytes(8).hex()}",
                instance_type_name="m5.4xlarge",
                labels={"ray.io/node-group": "cpu-workers", "ray.io/market-type": "on-demand"},
                start_timestamp=self.tick(),
                timestamp=self.now_ns,
                session_name=self.session,
            )
            yield RayNodeLifecycleEvent(
                node_id=node_id,
                state="ALIVE",
                resources={"CPU": 16.0, "memory": 64.0 * 1024**3, "object_store_memory": 19.0e9},
                timestamp=self.tick(),
                session_name=self.session,
            )
        yield RayDriverJobDefinitionEvent(
            job_id=self.job_id,
            driver_pid=4242,
            driver_node_id=self.nodes[0],
            entrypoint="python -m pipeline.main --input s3://bucket/data",
            config={
                "serialized_runtime_env": "{}",
                "metadata": {"job_submission_id": "raysubmit_1"},
            },
            timestamp=self.tick(),
            session_name=self.session,
        )
        yield RayDriverJobLifecycleEvent(
            job_id=self.job_id, state="CREATED", timestamp=self.tick(), session_name=self.session
        )
        for node_id in self.nodes:
            for _ in range(_WORKERS_PER_NODE):
                yield from self.new_worker(node_id)
        for _ in range(_ACTORS):
            yield from self.new_actor()

    def new_worker(self, node_id: bytes) -> Iterator[RayEventBase]:
        worker_id, pid = self.rng.randbytes(28), self.rng.randrange(1000, 99999)
        self.workers.append((node_id, worker_id, pid))
        ms = self.tick() // 1_000_000
        yield RayWorkerDefinitionEvent(
            worker_id=worker_id,
            node_id=node_id,
            worker_type="WORKER",
            pid=pid,
            timestamp=self.now_ns,
            session_name=self.session,
        )
        yield RayWorkerLifecycleEvent(
            worker_id=worker_id,
            job_id=self.job_id,
            state="ALIVE",
            worker_launch_time_ms=ms - 900,
            worker_launched_time_ms=ms - 400,
            start_time_ms=ms,
            timestamp=self.tick(),
            session_name=self.session,
        )

    def new_actor(self) -> Iterator[RayEventBase]:
        actor_id = self.rng.randbytes(12) + self.job_id
        node_id, worker_id, pid = self.rng.choice(self.workers)
        self.actors.append(actor_id)
        yield RayActorDefinitionEvent(
            actor_id=actor_id,
            job_id=self.job_id,
            name=f"trainer-{len(self.actors)}",
            ray_namespace="pipeline",
            class_name="Trainer",
            required_resources={"CPU": 1.0},
            serialized_runtime_env="{}",
            timestamp=self.tick(),
            session_name=self.session,
        )
        for state in ("DEPENDENCIES_UNREADY", "PENDING_CREATION"):
            yield RayActorLifecycleEvent(
                actor_id=actor_id, state=state, timestamp=self.tick(), session_name=self.session
            )
        yield RayActorLifecycleEvent(
            actor_id=actor_id,
            state="ALIVE",
            node_id=node_id,
            worker_id=worker_id,
            pid=pid,
            port=self.rng.randrange(10002, 19999),
            repr_name=f"Trainer(rank={len(self.actors) - 1})",
            timestamp=self.tick(),
            session_name=self.session,
        )

    # --- task events (the hot path; payloads built directly) -----------------------------

    def new_attempt(self, with_actors: bool) -> _Attempt:
        rng = self.rng
        actor_id = None
        if with_actors and self.actors and rng.random() < _ACTOR_TASK_SHARE:
            actor_id = rng.choice(self.actors)
        suffix = actor_id if actor_id is not None else b"\xff" * 12 + self.job_id
        return _Attempt(rng.randbytes(8) + suffix, 0, actor_id, rng.random() < _FAILURE_RATE)

    def definition(self, a: _Attempt) -> RayEventBase:
        ts = self.tick()
        if a.actor_id is None:
            p = pb.TaskDefinitionEvent()
            p.CopyFrom(self.rng.choice(self.functions))
            p.task_id, p.task_attempt = a.task_id, a.attempt
            return RayTaskDefinitionEvent.from_payload(
                p, timestamp_ns=ts, session_name=self.session, event_id=self.event_id()
            )
        q = pb.ActorTaskDefinitionEvent()
        q.CopyFrom(self.rng.choice(self.methods))
        q.task_id, q.task_attempt, q.actor_id = a.task_id, a.attempt, a.actor_id
        return RayActorTaskDefinitionEvent.from_payload(
            q, timestamp_ns=ts, session_name=self.session, event_id=self.event_id()
        )

    def lifecycle(self, a: _Attempt, state: common_pb2.TaskStatus.ValueType) -> RayEventBase:
        ts = self.tick()
        p = _TaskLifecycle(task_id=a.task_id, task_attempt=a.attempt, job_id=self.job_id)
        t = p.state_transitions.add()
        t.state = state
        stamp = t.timestamp  # one wrapper object instead of two
        stamp.seconds, stamp.nanos = divmod(ts, _NS)
        if state == _SUBMITTED_TO_WORKER:
            p.node_id, p.worker_id, p.worker_pid = self.rng.choice(self.workers)
        elif state == _FAILED:
            p.ray_error_info.CopyFrom(self.error)
        return _from_lifecycle(
            p, timestamp_ns=ts, session_name=self.session, event_id=self.event_id()
        )

    def tasks(self, *, definitions: bool) -> Iterator[RayEventBase]:
        rng = self.rng
        random = self.random
        active: list[_Attempt] = []
        for n in itertools.count(1):
            if definitions and n % _CHURN_EVERY == 0:
                yield from self.new_worker(rng.choice(self.nodes))
                yield from self.new_actor()
            if len(active) < _WINDOW:
                a = self.new_attempt(definitions)
                active.append(a)
                if definitions:
                    yield self.definition(a)
                    continue
            i = int(random() * len(active))
            a = active[i]
            if a.step < len(a.states):
                a.step += 1
                yield self.lifecycle(a, a.states[a.step - 1])
                continue
            active[i] = active[-1]
            active.pop()
            yield self.lifecycle(a, _FAILED if a.fails else _FINISHED)
            if a.fails and a.attempt == 0 and rng.random() < _RETRY_RATE:
                retry = _Attempt(a.task_id, 1, a.actor_id, fails=False)
                active.append(retry)
                if definitions:
                    yield self.definition(retry)


def realistic_events(kind: str, count: int, *, seed: int | None = None) -> Iterator[RayEventBase]:
    """``count`` events of a simulated cluster (``kind`` is ``"mixed"`` or ``"lifecycle"``).

    ``mixed``: node, worker, driver job and actor definitions and lifecycles, then task and
    actor-task definitions with their lifecycles as several partial events per attempt.
    ``lifecycle``: task lifecycle events only. The same ``seed`` gives the same events and ids
    (timestamps start at the current time); ``None`` draws a fresh seed.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    cluster = _Cluster(random.Random(seed))
    stream: Iterator[RayEventBase]
    if kind == "mixed":
        stream = itertools.chain(cluster.setup(), cluster.tasks(definitions=True))
    else:
        cluster.workers = [(cluster.nodes[0], cluster.rng.randbytes(28), 4321)]
        stream = cluster.tasks(definitions=False)
    return itertools.islice(stream, count)
