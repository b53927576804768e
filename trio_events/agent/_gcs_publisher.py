"""The GCS publisher: task events and dropped task attempts to Ray's GCS, as Ray 2.60's agent.

Ray's ``AsyncGCSTaskEventsPublisherClient`` (``ray/dashboard/modules/aggregator/publisher``)
keeps the four task event types, attaches the dropped attempts its own metadata buffer holds
(one entry per batch), and sends one ``AddEventsRequest`` to the GCS's
``/ray.rpc.RayEventExportGcsService/AddEvents``; the GCS turns the events into its task table
(``GcsRayEventConverter``, C++), which ``ray list tasks`` and the dashboard read. Nothing is
converted on the agent's side. A batch whose events are all filtered out is still sent when it
carries dropped attempts, and not at all otherwise. Every failure is retried by the publisher
(Ray retries them all; ``RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_*`` set the policy).

Here the request is assembled from the buffered events' bytes (no parse, no re-serialization)
and sent with grpclib on the trio-asyncio loop, one crossing per request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Self, final

import attrs
import trio
from grpclib.client import Channel, UnaryUnaryMethod
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from trio_events import pb
from trio_events._bridge import run_asyncio
from trio_events._protowire import length_delimited
from trio_events.agent._sink import Outcome, PublishOutcome
from trio_events.producer._client import parse_target

if TYPE_CHECKING:
    from trio_events.agent._task_metadata import TaskMetadataStore

__all__ = [
    "TASK_EVENT_TYPES",
    "AddEventsRequestEncoder",
    "GcsPublisherConfig",
    "GcsTaskEventsClient",
]

logger = logging.getLogger("trio_events.agent.gcs_publisher")

#: Ray 2.60's ``TASK_EVENT_TYPES``: what the GCS and dashboard-head publishers expose (fixed).
TASK_EVENT_TYPES: Final = frozenset(
    (
        pb.RayEvent.TASK_DEFINITION_EVENT,
        pb.RayEvent.TASK_LIFECYCLE_EVENT,
        pb.RayEvent.TASK_PROFILE_EVENT,
        pb.RayEvent.ACTOR_TASK_DEFINITION_EVENT,
    )
)
GCS_ADD_EVENTS: Final = "/ray.rpc.RayEventExportGcsService/AddEvents"
_OK = PublishOutcome(Outcome.SUCCESS, "ok")


@final
class AddEventsRequestEncoder:
    """Builds the serialized ``AddEventsRequest`` a GCS or dashboard-head publisher sends.

    The body is byte for byte what Ray's client serializes: the events in order
    (``RayEventsData.events``, field 1), then the ``task_events_metadata`` taken from
    ``metadata`` (field 2, present even when empty, as Ray always sets it). None when there is
    neither an event nor a dropped attempt.
    """

    def __init__(self, metadata: TaskMetadataStore) -> None:
        self._metadata = metadata

    def encode(self, blobs: list[bytes]) -> bytes | None:
        metadata = self._metadata.take()
        if not blobs and not metadata.dropped_task_attempts:
            return None
        events_data = b"".join([*(length_delimited(1, blob) for blob in blobs)])
        events_data += length_delimited(2, metadata.SerializeToString())
        return length_delimited(1, events_data)


class _Serialized:
    """An already serialized request, for grpclib's ProtoCodec (``SerializeToString``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> Self:
        return cls(data)


@final
@attrs.frozen
class GcsPublisherConfig:
    """Where the GCS is (``HOST:PORT``, Ray's ``--gcs-address``) and the per-call timeout
    (``RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_TIMEOUT_SECONDS``, 3)."""

    address: str
    timeout: float = 3.0

    def __attrs_post_init__(self) -> None:
        parse_target(self.address)
        if not self.timeout > 0:
            raise ValueError(f"GcsPublisherConfig.timeout must be > 0 seconds, got {self.timeout}.")


def grpc_failure(what: str, exc: BaseException) -> PublishOutcome:
    """A retryable outcome for a failed gRPC call to the GCS (Ray retries every failure)."""
    if isinstance(exc, GRPCError):
        detail = f"{what} failed with {exc.status.name}: {exc.message or 'no message'}"
        return PublishOutcome(Outcome.RETRYABLE, f"grpc_{exc.status.name.lower()}", detail=detail)
    if isinstance(exc, TimeoutError | trio.TooSlowError):
        return PublishOutcome(Outcome.RETRYABLE, "timeout", detail=f"{what} timed out")
    return PublishOutcome(
        Outcome.RETRYABLE, "connect_error", detail=f"{what}: {type(exc).__name__}: {exc}"
    )


GRPC_ERRORS: Final = (GRPCError, TimeoutError, OSError, StreamTerminatedError, ProtocolError)


@final
class GcsTaskEventsClient:
    """A PublishClient that sends serialized ``AddEventsRequest`` bodies to the GCS.

    Success is the GCS's OK with ``status.code == 0`` in its reply; anything else is retryable.
    Use it inside the agent's ``asyncio_loop()`` (the service runs publishers there).
    """

    def __init__(self, config: GcsPublisherConfig) -> None:
        self._config = config
        self._host, self._port = parse_target(config.address)
        self._channel: Channel | None = None
        self._method: UnaryUnaryMethod[_Serialized, pb.AddEventsReply] | None = None
        self.requests = 0  #: requests the GCS acknowledged

    def __repr__(self) -> str:
        return f"GcsTaskEventsClient({self._config.address!r})"

    async def publish(self, body: bytes) -> PublishOutcome:
        timeout = self._config.timeout
        try:
            # Our own bound as well: grpclib's deadline does not cover connecting.
            with trio.fail_after(timeout + 1.0):
                reply = await run_asyncio(self._call, body, timeout)
        except (*GRPC_ERRORS, trio.TooSlowError) as exc:
            await self.aclose()  # the next call reconnects
            return grpc_failure(f"GCS AddEvents at {self._config.address}", exc)
        if reply.status.code != 0:
            return PublishOutcome(
                Outcome.RETRYABLE,
                f"gcs_status_{reply.status.code}",
                detail=f"GCS AddEvents answered status {reply.status.code}: {reply.status.message}",
            )
        self.requests += 1
        return _OK

    async def _call(self, body: bytes, timeout: float) -> pb.AddEventsReply:  # noqa: ASYNC109
        if self._method is None:
            self._channel = Channel(self._host, self._port)
            self._method = UnaryUnaryMethod(
                self._channel, GCS_ADD_EVENTS, _Serialized, pb.AddEventsReply
            )
        return await self._method(_Serialized(body), timeout=timeout)

    async def aclose(self) -> None:
        channel, self._channel, self._method = self._channel, None, None
        if channel is not None:
            await run_asyncio(_close_channel, channel)


async def _close_channel(channel: Channel) -> None:
    channel.close()
