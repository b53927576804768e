"""The seam between a publisher and its destination: what one delivery attempt came to.

A destination is anything with ``publish(body) -> PublishOutcome`` and ``aclose()``: the HTTP
client (:class:`~trio_events.agent.HttpPublisherClient`), the local store, or a test fake. It
reports outcomes instead of raising, classified once (see ``_retry.py`` for HTTP's table).
"""

from __future__ import annotations

import enum
from typing import Final, Protocol, final

import attrs

__all__ = ["DETAIL_LIMIT", "BatchEncoder", "Outcome", "PublishClient", "PublishOutcome"]

#: Longest detail (server body snippet or exception text) kept for logs.
DETAIL_LIMIT: Final = 200


class Outcome(enum.Enum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


def _shorten(text: str) -> str:
    # One line, bounded: a 5xx page can be megabytes of HTML.
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."


@final
@attrs.frozen
class PublishOutcome:
    """What one publish attempt came to, as a publisher client reports it.

    ``reason`` is short and stable enough for logs and metric labels: ``http_<status>`` when
    the server answered, else ``timeout``, ``connect_error``, ``tls_certificate``... ``detail``
    is a snippet of the server's answer or the exception's message, at most ``DETAIL_LIMIT``
    characters (never request headers, so never a token).
    """

    outcome: Outcome
    reason: str
    status: int | None = None
    retry_after: float | None = None
    detail: str = attrs.field(default="", converter=_shorten)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    @property
    def retryable(self) -> bool:
        return self.outcome is Outcome.RETRYABLE


class PublishClient(Protocol):
    """What a publisher needs from its destination (HttpPublisherClient, or a test fake)."""

    async def publish(self, body: bytes) -> PublishOutcome:
        """Send one JSON array body once; report the outcome instead of raising."""
        ...

    async def aclose(self) -> None: ...


class BatchEncoder(Protocol):
    """Builds a publisher's request body instead of the JSON array (the GCS and dashboard head
    take a serialized ``AddEventsRequest``)."""

    def encode(self, blobs: list[bytes]) -> bytes | None:
        """The body for these serialized, already filtered RayEvents (maybe none); None when
        there is nothing to send. Synchronous and cheap: it runs on the event loop."""
        ...
