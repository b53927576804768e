"""The dashboard-head publisher: task events POSTed to the dashboard head, as Ray 2.60's agent.

Ray's ``AsyncDashboardHeadPublisherClient`` (on with ``RAY_enable_task_events_to_dashboard_head``)
sends the same serialized ``AddEventsRequest`` as the GCS publisher (task event types, dropped
attempts from its own metadata buffer) as the body of ``POST <dashboard>/api/task_events``. The
dashboard's address is read lazily from the GCS's internal KV (key ``dashboard``, namespace
``dashboard``), prefixed with ``http://`` when it has no scheme, and cached; a connection error
or timeout forgets it so the next attempt looks it up again (the head may have moved). An
address not registered yet, a KV error or any HTTP failure is retried by the publisher.
"""

from __future__ import annotations

import logging
from typing import Final, final

import attrs
import httpx
import trio
from grpclib.client import Channel

from trio_events import pb
from trio_events._bridge import run_asyncio
from trio_events.agent._gcs_publisher import GRPC_ERRORS, grpc_failure
from trio_events.agent._sink import Outcome, PublishOutcome
from trio_events.producer._client import parse_target

__all__ = ["DashboardHeadClient", "DashboardHeadConfig"]

logger = logging.getLogger("trio_events.publisher")

DASHBOARD_KV_KEY: Final = b"dashboard"  # ray_constants.DASHBOARD_ADDRESS
DASHBOARD_KV_NAMESPACE: Final = b"dashboard"  # ray_constants.KV_NAMESPACE_DASHBOARD
_KV_TIMEOUT: Final = 60.0  # ray.dashboard.consts.GCS_RPC_TIMEOUT_SECONDS
_OK = PublishOutcome(Outcome.SUCCESS, "ok")


@final
@attrs.frozen
class DashboardHeadConfig:
    """The GCS that knows the dashboard's address, the path, and the per-request timeout."""

    gcs_address: str
    endpoint_path: str = "/api/task_events"
    timeout: float = 3.0  # RAY_DASHBOARD_AGGREGATOR_AGENT_PUBLISHER_TIMEOUT_SECONDS

    def __attrs_post_init__(self) -> None:
        parse_target(self.gcs_address)
        if not self.endpoint_path.startswith("/"):
            raise ValueError(
                f"DashboardHeadConfig.endpoint_path must start with '/', got "
                f"{self.endpoint_path!r}."
            )
        if not self.timeout > 0:
            raise ValueError(
                f"DashboardHeadConfig.timeout must be > 0 seconds, got {self.timeout}."
            )


@final
class DashboardHeadClient:
    """A PublishClient POSTing serialized ``AddEventsRequest`` bodies to the dashboard head.

    ``transport`` replaces httpx's network transport (tests pass ``httpx.MockTransport``).
    Use it inside the agent's ``asyncio_loop()``: the KV lookup is a grpclib call.
    """

    def __init__(
        self, config: DashboardHeadConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._config = config
        self._gcs_host, self._gcs_port = parse_target(config.gcs_address)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout), transport=transport, follow_redirects=True
        )
        self._channel: Channel | None = None
        self._endpoint: str | None = None
        self.lookups = 0  #: KV lookups of the dashboard's address

    def __repr__(self) -> str:
        return f"DashboardHeadClient(gcs={self._config.gcs_address!r})"

    @property
    def endpoint(self) -> str | None:
        """The cached URL, or None until the next publish looks it up."""
        return self._endpoint

    async def publish(self, body: bytes) -> PublishOutcome:
        if self._endpoint is None:
            failure = await self._resolve()
            if failure is not None:
                return failure
        assert self._endpoint is not None
        try:
            response = await self._http.post(
                self._endpoint,
                content=body,
                headers={"content-type": "application/octet-stream"},
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            endpoint, self._endpoint = self._endpoint, None  # look it up again next time
            reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connect_error"
            return PublishOutcome(
                Outcome.RETRYABLE, reason, detail=f"POST {endpoint}: {type(exc).__name__}: {exc}"
            )
        if response.status_code >= 400:
            return PublishOutcome(
                Outcome.RETRYABLE,
                f"http_{response.status_code}",
                status=response.status_code,
                detail=response.text,
            )
        return _OK

    async def _resolve(self) -> PublishOutcome | None:
        self.lookups += 1
        try:
            with trio.fail_after(_KV_TIMEOUT + 1.0):
                reply = await run_asyncio(self._kv_get)
        except (*GRPC_ERRORS, trio.TooSlowError) as exc:
            await self._close_channel()
            return grpc_failure(f"GCS InternalKVGet at {self._config.gcs_address}", exc)
        if not reply.value:
            logger.warning("Dashboard head address not yet in the GCS's KV; will retry.")
            return PublishOutcome(
                Outcome.RETRYABLE,
                "dashboard_unknown",
                detail="the dashboard head has not registered its address in the GCS yet",
            )
        address = reply.value.decode()
        if not address.startswith(("http://", "https://")):
            address = f"http://{address}"
        self._endpoint = f"{address}{self._config.endpoint_path}"
        return None

    async def _kv_get(self) -> pb.InternalKVGetReply:
        if self._channel is None:
            self._channel = Channel(self._gcs_host, self._gcs_port)
        stub = pb.InternalKVGcsServiceStub(self._channel)
        request = pb.InternalKVGetRequest(key=DASHBOARD_KV_KEY, namespace=DASHBOARD_KV_NAMESPACE)
        return await stub.InternalKVGet(request, timeout=_KV_TIMEOUT)

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await run_asyncio(_close, channel)

    async def aclose(self) -> None:
        await self._close_channel()
        await self._http.aclose()


async def _close(channel: Channel) -> None:
    channel.close()
