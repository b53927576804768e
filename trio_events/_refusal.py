"""Why trio-events' agent answered RESOURCE_EXHAUSTED, as trailing metadata both sides read.

RESOURCE_EXHAUSTED means two different things to a sender: "this message is larger than I
accept" (never send it again as it is) and "my buffer is full" (send it again later). The agent
says which with the trailing metadata key :data:`REFUSAL_KEY`; the recorder's client reads it.
Ray's senders ignore unknown trailing metadata, so the wire stays compatible both ways; a
server that does not send the key (Ray's agent) is read by :func:`too_large` with gRPC's own
meaning of the status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Trailing metadata key of a RESOURCE_EXHAUSTED answer from trio-events' agent.
REFUSAL_KEY: Final = "trio-events-refusal"
#: The request message is larger than the agent's ``max_message_bytes``.
TOO_LARGE: Final = "message-too-large"
#: The agent's buffer has no room for the request's events (``on_full="reject"``).
BUFFER_FULL: Final = "buffer-full"

#: gRPC's default limit on a received message. A server that gives no reason refuses a
#: request this large because of its size; Ray's agent accepts up to 20 MiB and sends
#: RESOURCE_EXHAUSTED for nothing else (it never applies backpressure).
GRPC_DEFAULT_MAX_RECEIVE_BYTES: Final = 4 * 1024 * 1024


def too_large(trailing_metadata: Mapping[str, object] | None, request_bytes: int) -> bool:
    """Whether a RESOURCE_EXHAUSTED answer refuses the request for its size."""
    reason = None if trailing_metadata is None else trailing_metadata.get(REFUSAL_KEY)
    if reason is not None:
        return reason == TOO_LARGE
    return request_bytes > GRPC_DEFAULT_MAX_RECEIVE_BYTES
