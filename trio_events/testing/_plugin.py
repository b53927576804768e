"""trio-events' pytest plugin (entry point ``pytest11``): fixtures for pytest-trio tests.

Fixtures only: no hooks, nothing that changes collection or other tests. trio-events and
hypothesis are imported when a fixture is first used, not when pytest loads the plugin.

- ``trio_events_receiver``: a :class:`~trio_events.testing.CapturingReceiver` on 127.0.0.1.
- ``trio_events_agent``: an in-process agent (gRPC AddEvents on a free 127.0.0.1 port) that
  publishes every event type to ``trio_events_receiver`` with quick retries.
- ``trio_events_recorder``: a :class:`~trio_events.producer.RayEventRecorder` exporting to
  ``trio_events_agent`` every 50 ms.

They bind real sockets, so do not combine them with ``autojump_clock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import trio

    from trio_events.producer import RayEventRecorder
    from trio_events.testing._fixtures import TestAgent
    from trio_events.testing._receiver import CapturingReceiver


@pytest.fixture
async def trio_events_receiver(nursery: trio.Nursery) -> CapturingReceiver:
    """A capturing HTTP receiver; script failures with ``fail_next`` or replace ``handler``."""
    from trio_events.testing._receiver import CapturingReceiver

    receiver = CapturingReceiver()
    await nursery.start(receiver.run)
    return receiver


@pytest.fixture
async def trio_events_agent(
    nursery: trio.Nursery, trio_events_receiver: CapturingReceiver
) -> AsyncIterator[TestAgent]:
    """An agent whose one publisher posts to ``trio_events_receiver``; stopped in order."""
    from trio_events.testing._fixtures import start_test_agent

    agent = await start_test_agent(nursery, trio_events_receiver.url)
    yield agent
    await agent.stop()


@pytest.fixture
async def trio_events_recorder(trio_events_agent: TestAgent) -> AsyncIterator[RayEventRecorder]:
    """A recorder exporting to ``trio_events_agent``; flushed and closed after the test."""
    from trio_events.testing._fixtures import open_test_recorder

    async with open_test_recorder(trio_events_agent.target) as recorder:
        yield recorder
