"""The pytest plugin's fixtures and the capturing receiver, shown as an app's tests would use them."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.lowlevel

from trio_events.producer import RayEventRecorder, RayTaskLifecycleEvent
from trio_events.testing import CapturingReceiver, Reply, TestAgent

TASK_ID = bytes(range(24))


async def run_my_app(recorder: RayEventRecorder) -> None:
    """A stand-in for an instrumented trio service: one task attempt that runs and finishes."""
    # No checkpoint between the two: they are in the same export, so the recorder merges them.
    recorder.add(RayTaskLifecycleEvent(task_id=TASK_ID, task_attempt=0, state="RUNNING"))
    recorder.add(RayTaskLifecycleEvent(task_id=TASK_ID, task_attempt=0, state="FINISHED"))
    await trio.lowlevel.checkpoint()


async def test_an_app_test_end_to_end(
    trio_events_recorder: RayEventRecorder, trio_events_receiver: CapturingReceiver
) -> None:
    # The whole of an app's test: run the app, then look at what Ray's pipeline delivered.
    await run_my_app(trio_events_recorder)
    events = await trio_events_receiver.wait_for_events(1)
    states = [t["state"] for e in events for t in e["taskLifecycleEvent"]["stateTransitions"]]
    assert states == ["RUNNING", "FINISHED"]  # merged by the recorder into one event
    assert events[0]["eventType"] == "TASK_LIFECYCLE_EVENT"
    assert trio_events_receiver.requests[0].header("content-type") == "application/json"


async def test_failures_are_retried_until_the_receiver_accepts(
    trio_events_recorder: RayEventRecorder, trio_events_receiver: CapturingReceiver
) -> None:
    trio_events_receiver.fail_next(2, Reply(503))
    trio_events_receiver.fail_next(1, Reply(reset=True))
    await run_my_app(trio_events_recorder)
    events = await trio_events_receiver.wait_for_events(1)
    answers = [r.answer for r in trio_events_receiver.requests]
    assert [a.status if a and not a.reset else "reset" for a in answers] == [503, 503, "reset", 200]
    assert len(events) == 1


async def test_the_agent_fixture_counts_what_it_delivered(
    trio_events_agent: TestAgent,
    trio_events_recorder: RayEventRecorder,
    trio_events_receiver: CapturingReceiver,
) -> None:
    await run_my_app(trio_events_recorder)
    await trio_events_receiver.wait_for_events(1)
    assert trio_events_agent.target.startswith("127.0.0.1:")
    await trio_events_recorder.flush()
    summary = await trio_events_agent.stop()
    assert summary is not None
    assert (summary.delivered, summary.dropped, summary.abandoned) == (1, 0, 0)


async def test_a_handler_scripts_each_answer_with_delay(nursery: trio.Nursery) -> None:
    def handler(request):
        return (
            Reply(429, headers=(("Retry-After", "1"),), body=b"slow down", delay=0.05)
            if request.number == 0
            else Reply(204)
        )

    receiver = CapturingReceiver(handler)
    await nursery.start(receiver.run)
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await client.post(receiver.url, content=b'[{"a": 1}]')
        second = await client.post(receiver.url, content=b"not json")
    assert (first.status_code, first.headers["retry-after"], first.content) == (
        429,
        "1",
        b"slow down",
    )
    assert second.status_code == 204
    assert receiver.events == []  # the 429's events were not accepted; "not json" has none
    assert receiver.requests[0].events == [{"a": 1}]
    assert receiver.requests[1].events is None


async def test_async_handlers_and_resets(nursery: trio.Nursery) -> None:
    async def handler(request):
        await trio.lowlevel.checkpoint()
        return Reply(reset=True)

    receiver = CapturingReceiver(handler)
    await nursery.start(receiver.run)
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post(receiver.url, content=b"[]")


def test_port_before_running_is_an_error() -> None:
    with pytest.raises(
        RuntimeError, match=r"^The receiver is not running; start it with nursery.start\(run\)\.$"
    ):
        _ = CapturingReceiver().port
