"""What the pytest plugin's fixtures start, usable without pytest too."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, final

import attrs

from trio_events.producer import RecorderConfig, open_recorder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import trio

    from trio_events.agent import AgentService, ServiceAddresses, ShutdownSummary
    from trio_events.producer import RayEventRecorder

#: The node id the test recorder stamps on its events.
TEST_NODE_ID: Final = b"\x01" * 28


@final
@attrs.frozen
class TestAgent:
    """A running :class:`~trio_events.agent.AgentService`: ``target`` is its ``HOST:PORT``."""

    __test__ = False  # not a pytest test class

    service: AgentService
    addresses: ServiceAddresses

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.addresses.grpc_port}"

    async def stop(self) -> ShutdownSummary | None:
        """The ordered shutdown (drain within the grace period); its summary."""
        self.service.request_stop()
        return await self.service.wait_stopped()


async def start_test_agent(
    nursery: trio.Nursery, url: str, *, grace_period: float = 5.0
) -> TestAgent:
    """Start an agent on a free 127.0.0.1 port publishing every event type to ``url`` with
    short linger and backoff (retrying forever, as Ray does)."""
    # Imported here: the pytest plugin imports this module, and most tests need no agent.
    from trio_events.agent import (
        AgentConfig,
        AgentService,
        Destination,
        HttpPublisherConfig,
        PublisherConfig,
        ServiceConfig,
    )

    destination = Destination(
        http=HttpPublisherConfig(url=url, timeout=5.0),
        publisher=PublisherConfig(
            name="test_receiver",
            exposable_event_types=None,
            linger=0.01,
            initial_backoff=0.01,
            max_backoff=0.2,
            attempt_timeout=5.0,
        ),
    )
    config = AgentConfig(host="127.0.0.1", port=0)
    service = AgentService(
        ServiceConfig(agent=config, destinations=(destination,), grace_period=grace_period)
    )
    addresses: ServiceAddresses = await nursery.start(service.run)
    return TestAgent(service, addresses)


@asynccontextmanager
async def open_test_recorder(target: str) -> AsyncIterator[RayEventRecorder]:
    """A recorder exporting to ``target`` every 50 ms with quick retries; flushed on exit."""
    config = RecorderConfig(
        report_interval=0.05, backoff_initial=0.05, backoff_max=0.5, source="test"
    )
    async with open_recorder(config, target=target, node_id=TEST_NODE_ID) as recorder:
        yield recorder
