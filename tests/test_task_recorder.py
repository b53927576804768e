"""TaskEventRecorder: Ray 2.60's task-event policy, one test per scenario of Ray's own tests.

The names follow ``src/ray/observability/tests/ray_task_event_recorder_test.cc`` (ray-reference.md
4.1): TestStatusEventsExported, TestStatusRingOverflowReportsDroppedAttempts,
TestStickyDropForDroppedAttempt, TestAllOrNoneSkipsBufferedEventForDroppedAttempt,
TestMetadataOnlySendForFullyDroppedAttempt, TestProfilePerTaskCap, TestProfileGlobalCap,
TestDisabled. Virtual time, scripted fake client, no sockets.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fake_client import FakeClient
from trio_events import pb
from trio_events._metrics import Metrics
from trio_events.producer import (
    RayDriverJobLifecycleEvent,
    RayTaskDefinitionEvent,
    RayTaskLifecycleEvent,
    RayTaskProfileEvent,
    RecorderConfig,
    TaskEventPolicy,
    TaskEventRecorder,
)
from trio_events.producer._client import ExportError, RetryableExportError
from trio_events.producer._task_ring import TaskEventRing, task_attempt_of

NODE = b"N" * 28
SRC = {"Source": "core_worker"}


def task(i: int) -> bytes:
    return i.to_bytes(24, "big")


def status(i: int, state: str = "RUNNING", attempt: int = 0) -> RayTaskLifecycleEvent:
    return RayTaskLifecycleEvent(task_id=task(i), task_attempt=attempt, state=state)


def profile(i: int, name: str = "task:execute", attempt: int = 0) -> RayTaskProfileEvent:
    return RayTaskProfileEvent(
        task_id=task(i),
        attempt_number=attempt,
        profile_events={"component_type": "worker", "events": [{"event_name": name}]},
    )


def make(
    client: FakeClient, *, enabled: bool = True, **policy: int
) -> tuple[TaskEventRecorder, Metrics]:
    metrics = Metrics()
    recorder = TaskEventRecorder(
        RecorderConfig(backoff_jitter=0.0, enabled=enabled),
        client,
        node_id=NODE,
        policy=TaskEventPolicy(**policy),
        metrics=metrics,
    )
    return recorder, metrics


def dropped_attempts(request: pb.AddEventsRequest) -> list[tuple[bytes, int]]:
    metadata = request.events_data.task_events_metadata
    return [(a.task_id, a.attempt_number) for a in metadata.dropped_task_attempts]


def exported_tasks(client: FakeClient) -> list[bytes]:
    return [
        e.task_lifecycle_event.task_id or e.task_definition_event.task_id
        for r in client.acked
        for e in r.events_data.events
        if e.event_type != pb.RayEvent.TASK_PROFILE_EVENT
    ]


def assert_balanced(recorder: TaskEventRecorder) -> None:
    s = recorder.statistics()
    assert s.added == s.exported + s.dropped + s.buffered + s.in_flight, s


async def test_status_events_exported() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_status_events=10)
    for i in range(3):
        recorder.add(status(i))
    assert await recorder.flush()
    (request,) = client.acked
    assert [e.task_lifecycle_event.task_id for e in request.events_data.events] == [
        task(i) for i in range(3)
    ]
    assert all(e.node_id == NODE for e in request.events_data.events)
    assert dropped_attempts(request) == []
    assert recorder.statistics().dropped == 0
    assert_balanced(recorder)


async def test_status_ring_overflow_reports_dropped_attempts() -> None:
    client = FakeClient()
    recorder, metrics = make(client, max_status_events=3)
    for i in range(5):
        recorder.add(status(i))
    assert await recorder.flush()
    (request,) = client.acked
    assert exported_tasks(client) == [task(2), task(3), task(4)]
    assert dropped_attempts(request) == [(task(0), 0), (task(1), 0)]
    stats = recorder.statistics()
    assert stats.dropped_by_reason == {"buffer_full": 2}
    assert (
        metrics.value("ray_event_recorder_dropped_events_total", {**SRC, "reason": "buffer_full"})
        == 2
    )
    task_stats = recorder.task_statistics()
    assert (task_stats.attempts_marked_dropped, task_stats.attempts_reported) == (2, 2)
    assert task_stats.attempts_pending == 0
    assert_balanced(recorder)


async def test_sticky_drop_for_dropped_attempt() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_status_events=1)
    recorder.add(status(0, "PENDING_ARGS_AVAIL"))
    recorder.add(status(1, "RUNNING"))  # evicts task 0's event: attempt (0, 0) is lost
    recorder.add(status(0, "FINISHED"))  # dropped on arrival, the ring keeps task 1
    recorder.add(status(0, "FINISHED", attempt=1))  # another attempt of task 0 is unaffected
    assert recorder.statistics().dropped_by_reason == {"buffer_full": 2, "dropped_attempt": 1}
    assert await recorder.flush()
    (request,) = client.acked
    assert dropped_attempts(request) == [(task(0), 0), (task(1), 0)]
    lifecycle = [e.task_lifecycle_event for e in request.events_data.events]
    assert [(e.task_id, e.task_attempt) for e in lifecycle] == [(task(0), 1)]
    assert_balanced(recorder)


async def test_all_or_none_skips_buffered_event_for_dropped_attempt() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_status_events=2)
    recorder.add(RayTaskDefinitionEvent(task_id=task(0), task_attempt=0, task_name="f"))
    recorder.add(status(0, "RUNNING"))  # task 0 now has two buffered events
    recorder.add(status(1, "RUNNING"))  # evicts task 0's definition: attempt (0, 0) is lost
    assert await recorder.flush()
    (request,) = client.acked
    # Task 0's surviving RUNNING event is not sent: the attempt is reported whole as dropped.
    assert exported_tasks(client) == [task(1)]
    assert dropped_attempts(request) == [(task(0), 0)]
    assert recorder.statistics().dropped_by_reason == {"buffer_full": 1, "dropped_attempt": 1}
    assert_balanced(recorder)


async def test_metadata_only_send_for_fully_dropped_attempt() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_status_events=1)
    recorder.add(status(0))
    recorder.add(status(1))  # evicts task 0
    recorder.add(status(1, "FINISHED"))  # evicts task 1's RUNNING: attempt (1, 0) lost too
    # Only task 1's FINISHED is buffered, and its attempt is lost: nothing to send but metadata.
    assert await recorder.flush()
    (request,) = client.acked
    assert list(request.events_data.events) == []
    assert dropped_attempts(request) == [(task(0), 0), (task(1), 0)]
    assert recorder.statistics().buffered == 0
    # With nothing left, the next flush sends nothing at all.
    assert await recorder.flush()
    assert len(client.attempts) == 1
    assert_balanced(recorder)


async def test_profile_per_task_cap() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_profile_events_per_task=2)
    for n in range(5):
        recorder.add(profile(0, f"event-{n}"))
    assert recorder.statistics().dropped_by_reason == {"profile_task_cap": 3}
    assert await recorder.flush()
    (request,) = client.acked
    (event,) = request.events_data.events  # the two kept are merged into one event
    names = [p.event_name for p in event.task_profile_events.profile_events.events]
    assert names == ["event-0", "event-1"]
    assert dropped_attempts(request) == []  # profile drops are never reported as attempts
    assert recorder.task_statistics().attempts_marked_dropped == 0
    # Once exported, the attempt has room again (the cap counts what is buffered).
    recorder.add(profile(0, "event-5"))
    assert recorder.statistics().buffered == 1
    assert_balanced(recorder)


async def test_profile_global_cap() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_profile_events=3, max_profile_events_per_task=-1)
    for i in range(5):
        recorder.add(profile(i))
    assert recorder.statistics().dropped_by_reason == {"profile_global_cap": 2}
    assert await recorder.flush()
    (request,) = client.acked
    assert [e.task_profile_events.task_id for e in request.events_data.events] == [
        task(0),
        task(1),
        task(2),
    ]
    assert dropped_attempts(request) == []
    assert_balanced(recorder)


async def test_disabled() -> None:
    client = FakeClient()
    recorder, _ = make(client, enabled=False)
    recorder.add(status(0))
    recorder.add(profile(0))
    assert recorder.statistics().added == 0
    assert await recorder.flush()
    assert client.attempts == []


# --- beyond Ray: what our recorder promises on top of the policy ---------------------------


async def test_dropped_attempts_of_a_failed_export_are_reported_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeClient()
    client.script = ["unavailable"]
    recorder, _ = make(client, max_status_events=1)
    recorder.add(status(0))
    recorder.add(status(1))
    async with recorder:
        await trio.sleep(10)
    first, second = (request for _, request in client.attempts)
    assert dropped_attempts(first) == dropped_attempts(second) == [(task(0), 0)]
    assert exported_tasks(client) == [task(1)]
    assert recorder.task_statistics().attempts_reported == 1
    assert_balanced(recorder)


async def test_batches_are_bounded_by_send_batch_size_and_attempt_batch_size() -> None:
    client = FakeClient()
    recorder, _ = make(client, max_status_events=2, send_batch_size=1, dropped_attempt_batch_size=1)
    for i in range(4):
        recorder.add(status(i))  # tasks 0 and 1 are evicted
    assert await recorder.flush()
    sizes = [(len(r.events_data.events), len(dropped_attempts(r))) for r in client.acked]
    assert sizes == [(1, 1), (1, 1)]
    assert exported_tasks(client) == [task(2), task(3)]
    assert recorder.task_statistics().attempts_reported == 2
    assert_balanced(recorder)


async def test_only_task_events_are_accepted() -> None:
    recorder, _ = make(FakeClient())
    with pytest.raises(TypeError, match=r"^A task-event recorder takes task events only .*"):
        recorder.add(RayDriverJobLifecycleEvent(job_id=b"\x01\x00\x00\x00", state="CREATED"))
    assert recorder.statistics().added == 0


def test_policy_errors_are_sentences() -> None:
    with pytest.raises(
        ValueError,
        match=r"^TaskEventPolicy\.max_profile_events_per_task must be -1 \(unlimited\) or an "
        r"integer >= 1, got 0\.$",
    ):
        TaskEventPolicy(max_profile_events_per_task=0)


# --- the synchronous core under random operations ---------------------------------------------

_OPS = st.one_of(
    st.tuples(st.just("status"), st.integers(0, 3), st.integers(0, 1)),
    st.tuples(st.just("profile"), st.integers(0, 3), st.integers(0, 1)),
    st.tuples(st.sampled_from(["ok", "retry", "reject"]), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_OPS, max_size=60), capacity=st.integers(1, 4), per_task=st.integers(1, 3))
def test_every_event_is_accounted_for_and_attempts_are_all_or_none(
    ops: list[tuple[str, int, int]], capacity: int, per_task: int
) -> None:
    ring = TaskEventRing(
        TaskEventPolicy(
            max_status_events=capacity,
            max_profile_events=5,
            max_profile_events_per_task=per_task,
            send_batch_size=3,
            dropped_attempt_batch_size=2,
        ),
        source="core_worker",
        metrics=Metrics(),
    )
    reported: set[tuple[bytes, int]] = set()
    for op, i, attempt in ops:
        if op == "status":
            ring.add(status(i, attempt=attempt))
        elif op == "profile":
            ring.add(profile(i, attempt=attempt))
        else:
            batch = ring.take()
            dropped = set(batch.dropped_task_attempts)
            sent = {
                task_attempt_of(e)
                for e in batch.events
                if e.EVENT_TYPE != pb.RayEvent.TASK_PROFILE_EVENT
            }
            assert not dropped & sent  # an attempt is sent whole or reported lost, never both
            if op == "ok":
                ring.exported(batch)
                reported |= dropped
            elif op == "retry":
                ring.failed(batch, RetryableExportError("down.", reason="unavailable"))
            else:
                ring.failed(batch, ExportError("no.", reason="rejected"))
        s = ring.statistics()
        assert s.added == s.exported + s.dropped + s.buffered + s.in_flight, s
        assert s.in_flight == 0
        t = ring.task_statistics()
        assert t.attempts_reported >= len(reported)  # an attempt lost again is reported again
        assert t.attempts_reported + t.attempts_pending <= t.attempts_marked_dropped
