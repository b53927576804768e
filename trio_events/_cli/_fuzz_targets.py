"""What ``fuzz-sink`` and ``fuzz-agent`` send and how they judge each answer.

A sender raises :class:`Finding` for an answer that would cost Ray's pipeline events or wedge
it: a 5xx or a gRPC server error, a timeout, a reset connection, an answer that is not HTTP or
not an ``AddEventsReply``, or a valid batch refused. Backpressure (HTTP 408/429, gRPC
RESOURCE_EXHAUSTED) is an acceptable answer.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import urlsplit

import httpx
from google.protobuf.message import DecodeError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from trio_events import pb

if TYPE_CHECKING:
    from trio_events.testing.strategies import PublisherPost

#: Every kind of finding, in report order.
KINDS: Final = (
    "5xx",
    "grpc_error",
    "timeout",
    "reset",
    "malformed_answer",
    "refused",
    "connection_refused",
)
_BACKPRESSURE_HTTP: Final = frozenset({408, 429})
_SERVER_ERRORS: Final = frozenset(
    {Status.INTERNAL, Status.UNKNOWN, Status.UNAVAILABLE, Status.DATA_LOSS, Status.UNIMPLEMENTED}
)


class Finding(Exception):
    """An answer that loses or delays events; ``kind`` is one of :data:`KINDS`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def check_reachable(host: str, port: int, timeout: float) -> None:
    """Raise ``ValueError`` (one sentence) if nothing listens at ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"Nothing answers at {host}:{port} ({exc.strerror or exc}).") from None


@final
class HttpTarget:
    """POSTs bodies to one URL exactly as Ray's publisher does, and contacts nothing else."""

    def __init__(self, url: str, *, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL must be an http:// or https:// address, got {url!r}.")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        # trust_env=False: no proxy from the environment, so only `url` is contacted.
        self._client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def send(self, body: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        try:
            response = self._client.post(self.url, content=body, headers=list(headers))
        except httpx.TimeoutException as exc:
            raise Finding(
                "timeout", f"no answer within the timeout ({type(exc).__name__})"
            ) from None
        except httpx.ConnectError as exc:
            raise Finding("connection_refused", f"could not connect ({exc})") from None
        except httpx.RemoteProtocolError as exc:
            text = str(exc)
            kind = "reset" if "without sending a response" in text else "malformed_answer"
            raise Finding(kind, text) from None
        except (httpx.ReadError, httpx.WriteError) as exc:
            raise Finding("reset", f"the connection broke ({exc or type(exc).__name__})") from None
        status = response.status_code
        if 200 <= status < 300 or status in _BACKPRESSURE_HTTP:
            return
        reason = response.text[:200].strip()
        if status >= 500:
            raise Finding("5xx", f"HTTP {status} {reason!r}")
        if 400 <= status < 500:
            raise Finding("refused", f"HTTP {status} for a batch Ray would send {reason!r}")
        raise Finding("malformed_answer", f"HTTP {status} is not an answer to a POST")

    def post(self, post: PublisherPost) -> None:
        self.send(post.body, post.headers)

    @staticmethod
    def saved(post: PublisherPost) -> dict[str, Any]:
        return {"headers": [list(h) for h in post.headers], "body": post.body.decode()}

    def replay(self, saved: dict[str, Any]) -> None:
        headers = tuple((str(k), str(v)) for k, v in saved["headers"])
        self.send(saved["body"].encode(), headers)


@final
class GrpcTarget:
    """Calls ``AddEvents`` on one aggregator (ours or Ray's) with a deadline per call."""

    def __init__(self, target: str, *, timeout: float) -> None:
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"The aggregator address must be HOST:PORT, got {target!r}.")
        self.host, self.port, self._timeout = host.strip("[]"), int(port), timeout
        self._loop = asyncio.new_event_loop()
        self._channel: Channel = self._loop.run_until_complete(self._open())

    async def _open(self) -> Channel:
        return Channel(self.host, self.port)

    def close(self) -> None:
        self._channel.close()
        self._loop.close()

    def send(self, request: pb.AddEventsRequest) -> None:
        try:
            reply = self._loop.run_until_complete(self._call(request))
        except GRPCError as exc:
            detail = f"{exc.status.name} {exc.message!r}"
            if exc.status is Status.DEADLINE_EXCEEDED:
                raise Finding("timeout", detail) from None
            if exc.status in _SERVER_ERRORS:
                raise Finding("grpc_error", detail) from None
            if exc.status is Status.RESOURCE_EXHAUSTED:
                return  # backpressure: the sender keeps the events and retries
            raise Finding("refused", f"{detail} for a request Ray would send") from None
        except TimeoutError:
            raise Finding("timeout", "no reply within the deadline") from None
        except (StreamTerminatedError, ConnectionError) as exc:
            raise Finding("reset", f"the stream or connection broke ({exc})") from None
        except (ProtocolError, DecodeError) as exc:
            raise Finding("malformed_answer", f"not an AddEventsReply ({exc})") from None
        except OSError as exc:
            raise Finding("connection_refused", f"could not connect ({exc})") from None
        if reply is None:
            raise Finding("malformed_answer", "the call ended without a reply")
        if reply.status.code != 0:
            raise Finding("refused", f"AddEventsReply status {reply.status.code}")

    async def _call(self, request: pb.AddEventsRequest) -> pb.AddEventsReply | None:
        stub = pb.EventAggregatorServiceStub(self._channel)
        return await stub.AddEvents(request, timeout=self._timeout)

    @staticmethod
    def saved(request: pb.AddEventsRequest) -> dict[str, Any]:
        return {"request_base64": base64.b64encode(request.SerializeToString()).decode()}

    def replay(self, saved: dict[str, Any]) -> None:
        self.send(pb.AddEventsRequest.FromString(base64.b64decode(saved["request_base64"])))


def describe_request(request: pb.AddEventsRequest) -> str:
    counts: dict[str, int] = {}
    for event in request.events_data.events:
        name = pb.EVENT_TYPE_NAMES.get(event.event_type, f"event type {event.event_type}")
        counts[name] = counts.get(name, 0) + 1
    kinds = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    dropped = len(request.events_data.task_events_metadata.dropped_task_attempts)
    from trio_events.testing.strategies import make_post

    traits = "".join(f"; {t}" for t in make_post(list(request.events_data.events)).traits())
    return (
        f"{len(request.events_data.events)} event(s) ({kinds}), {dropped} dropped attempt(s), "
        f"{request.ByteSize()} bytes{traits}"
    )
