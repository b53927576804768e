"""The HTTP publisher client: POSTs JSON array bodies to one sink over one ``httpx.AsyncClient``.

Compared with Ray's ``AsyncHttpPublisherClient`` (aiohttp, total timeout 3 s, no headers, no
compression, certifi trust store): the same body and ``Content-Type: application/json``, plus
optional gzip or zstd ``Content-Encoding``, extra headers, a bearer token (never logged, never in
a repr) and TLS verification against a CA bundle. Every attempt ends in a classified
:class:`~trio_events.agent._retry.PublishOutcome`; exceptions from httpx are mapped in exactly one
place, :meth:`HttpPublisherClient.publish`. Retrying is the publisher's job, not the client's.

httpx runs on trio through its trio backend; this module uses trio's APIs directly. The
environment is never consulted (``trust_env=False``: no proxy variables, no ``SSL_CERT_FILE``,
no netrc); everything comes from :class:`HttpPublisherConfig`.
"""

from __future__ import annotations

import math
import re
import ssl
import time
import zlib
from typing import TYPE_CHECKING, Final, Literal, Self, final

import attrs
import httpx
import trio
import zstandard

from trio_events.agent._retry import (
    http_date_timestamp,
    outcome_of_exception,
    outcome_of_response,
)
from trio_events.agent._sink import Outcome, PublishOutcome

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["HttpPublisherClient", "HttpPublisherConfig"]

#: Bodies at least this large are compressed in a worker thread, per encoding. Measured on the
#: 2-core reference machine with 1000-event batches (about 570 KiB of JSON): gzip level 6 costs
#: 5-12 us per KiB (3-7 ms a batch, depending on load) and zstd level 3 about 0.75 us (0.4 ms),
#: while a trio.to_thread round trip costs about 90 us. The thresholds keep the event loop from
#: being held for more than about 0.7 ms (so a 1000-event batch is gzipped in a thread but
#: zstd-compressed inline). Both compressors release the GIL, so the loop really runs meanwhile.
COMPRESS_IN_THREAD_BYTES: Final = {"gzip": 64 * 1024, "zstd": 1024 * 1024}
GZIP_LEVEL: Final = 6  # zlib's default: 4.4x on event JSON
ZSTD_LEVEL: Final = 3  # zstd's default: 4.5x, five times faster than gzip
#: Response body read to keep the connection reusable; a longer one closes the connection.
_MAX_RESPONSE_BYTES: Final = 64 * 1024
_SNIPPET_BYTES: Final = 512
_MAX_REDIRECTS: Final = 3
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers this client sets itself: a configured value would contradict the real body.
_RESERVED_HEADERS: Final = frozenset(
    {"content-type", "content-encoding", "content-length", "transfer-encoding", "host"}
)
_COMPRESSIONS: Final = ("none", "gzip", "zstd")


def _mask_headers(headers: tuple[tuple[str, str], ...]) -> str:
    # Header values may be credentials (API keys, basic auth): reprs show names only.
    return repr(tuple((name, "***") for name, _ in headers))


def _check(config: HttpPublisherConfig) -> None:
    try:
        url = httpx.URL(config.url)
    except httpx.InvalidURL as exc:  # not a ValueError: it would escape as a traceback
        raise ValueError(f"The export address {config.url!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"The export address must be an http:// or https:// URL with a host, got "
            f"{config.url!r}."
        )
    if url.userinfo:
        # The URL appears in reprs and logs; credentials must not.
        raise ValueError(
            "The export address must not contain credentials; give a bearer token or an "
            "Authorization header instead."
        )
    if not (config.timeout > 0 and math.isfinite(config.timeout)):
        raise ValueError(
            f"The publisher timeout must be a positive number of seconds, got {config.timeout!r}."
        )
    if config.compression not in _COMPRESSIONS:
        raise ValueError(
            f"compression must be one of none, gzip, zstd, got {config.compression!r}."
        )
    for name, value in config.headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name.")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"The value of header {name!r} must not contain CR, LF or NUL.")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"Header {name!r} is set by the publisher and cannot be configured.")
        if name.lower() == "authorization" and config.bearer_token is not None:
            raise ValueError("Give either a bearer token or an Authorization header, not both.")
    token = config.bearer_token
    if token is not None and (not token or any(c.isspace() or c == "\0" for c in token)):
        raise ValueError("The bearer token must be non-empty and contain no whitespace.")
    if config.ca_bundle is not None and not config.verify:
        raise ValueError("A CA bundle was given but TLS verification is off; drop one of them.")


@final
@attrs.frozen
class HttpPublisherConfig:
    """Where and how one HTTP publisher sends its batches.

    ``timeout`` bounds a whole attempt (connect, send, answer; Ray's default total of 3 s).
    ``headers`` are added to every request; ``bearer_token`` becomes ``Authorization: Bearer``
    (the CLI reads it from an environment variable or a file: library code never does).
    ``ca_bundle`` is a PEM file of CAs to verify the sink against instead of certifi's store;
    ``verify=False`` turns verification off. Header values and the token never appear in a
    repr or a log.
    """

    url: str
    timeout: float = 3.0
    compression: Literal["none", "gzip", "zstd"] = "none"
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=_mask_headers)
    bearer_token: str | None = attrs.field(default=None, repr=False)
    ca_bundle: str | None = None
    verify: bool = True

    def __attrs_post_init__(self) -> None:
        _check(self)


def _ssl_verify(config: HttpPublisherConfig) -> ssl.SSLContext | bool:
    if not config.verify:
        return False
    if config.ca_bundle is None:
        return True  # httpx's default context: certifi's CA store
    try:
        return ssl.create_default_context(cafile=config.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"The CA bundle {config.ca_bundle!r} cannot be loaded ({exc}); give a readable PEM "
            f"file of CA certificates."
        ) from None


def compress(body: bytes, compression: str) -> bytes:
    """``body`` encoded for ``Content-Encoding: compression`` (gzip or zstd)."""
    if compression == "gzip":
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip framing
        return compressor.compress(body) + compressor.flush()
    if compression == "zstd":
        # A compressor is not thread-safe, so each call (maybe in a worker thread) has its own.
        result: bytes = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
        return result
    raise ValueError(f"compression must be gzip or zstd, got {compression!r}.")


@final
class HttpPublisherClient:
    """Sends publisher batches to one HTTP sink; connections are reused between batches.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); the TLS settings
    then do not apply. Use as an async context manager or call :meth:`aclose`.
    """

    def __init__(
        self,
        config: HttpPublisherConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1,
    ) -> None:
        self._config = config
        headers = {
            "content-type": "application/json",
            # Sinks' answers are only read for a log snippet; keep them readable.
            "accept-encoding": "identity",
            "user-agent": "trio-events",
            **dict(config.headers),
        }
        if config.bearer_token is not None:
            headers["authorization"] = f"Bearer {config.bearer_token}"
        if transport is None:
            # A connection per request the publisher may have in flight (its max_in_flight):
            # with fewer, requests in flight would only queue for a connection.
            transport = httpx.AsyncHTTPTransport(
                verify=_ssl_verify(config),
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
                trust_env=False,
            )
        self._client = httpx.AsyncClient(
            headers=headers,
            # Per-phase limits; publish() adds the overall deadline of config.timeout.
            timeout=httpx.Timeout(config.timeout),
            transport=transport,
            trust_env=False,
            # Like Ray (aiohttp follows them): a 307/308 re-sends the body. A 301/302/303 turns
            # the POST into a GET without a body, which publish() reports as permanent.
            follow_redirects=True,
            max_redirects=_MAX_REDIRECTS,
        )
        self._url = httpx.URL(config.url)

    def __repr__(self) -> str:
        return f"<HttpPublisherClient {self._config!r}>"

    @property
    def config(self) -> HttpPublisherConfig:
        return self._config

    async def publish(self, body: bytes) -> PublishOutcome:
        """POST one JSON array body; never raises for anything the sink or network does.

        The attempt is bounded by ``config.timeout`` as a whole. A response counts by its
        status even if reading its body then fails; only its first bytes are kept, for logs.
        """
        compression = self._config.compression
        headers = {}
        if compression != "none":
            headers["content-encoding"] = compression
            if len(body) >= COMPRESS_IN_THREAD_BYTES[compression]:
                body = await trio.to_thread.run_sync(compress, body, compression)
            else:
                body = compress(body, compression)
        request = self._client.build_request("POST", self._url, content=body, headers=headers)
        # httpx's own stream is an async generator; one cancelled mid-send (the timeout, or a
        # shutdown) is left unfinalized and trio warns when it is collected. Same bytes, same
        # Content-Length, no generator.
        request.stream = _BodyStream(body)
        response: httpx.Response | None = None
        snippet = b""
        read_error: str | None = None
        with trio.move_on_after(self._config.timeout) as deadline:
            try:
                response = await self._client.send(request, stream=True)
                try:
                    snippet = await _read_snippet(response)
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:  # the one place httpx's exceptions are mapped
                if response is None:
                    return outcome_of_exception(exc)
                read_error = f"{type(exc).__name__}: {exc}"
        if response is None:
            return PublishOutcome(
                Outcome.RETRYABLE,
                "timeout",
                detail=f"No response within the publisher timeout of {self._config.timeout} s.",
            )
        if deadline.cancelled_caught:
            read_error = "the body did not arrive within the publisher timeout"
        if response.request.method != "POST":
            return PublishOutcome(
                Outcome.PERMANENT,
                "redirected_to_get",
                status=response.status_code,
                detail=f"The sink redirected the POST to {response.request.url} as a "
                f"{response.request.method} without the body; configure the final URL.",
            )
        outcome = outcome_of_response(
            response.status_code,
            retry_after=response.headers.get("retry-after"),
            body=snippet,
            now=_response_time(response),
        )
        if read_error is not None:
            # The status arrived, so the sink decided; only the rest of the body was lost.
            outcome = attrs.evolve(outcome, detail=f"{outcome.detail} ({read_error})")
        return outcome

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _read_snippet(response: httpx.Response) -> bytes:
    """Read the answer so the connection can be reused; return its start, for logs.

    An answer announcing more than ``_MAX_RESPONSE_BYTES`` is not read at all (closing it costs
    the connection, not memory). One without a length is read to its end, keeping only its
    start, within the attempt's deadline: stopping in the middle would leave httpx's stream
    generators unfinished.
    """
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > _MAX_RESPONSE_BYTES:
        return f"(an answer of {length} bytes, not read)".encode()
    head = bytearray()
    async for chunk in response.aiter_bytes():
        if len(head) < _SNIPPET_BYTES:
            head += chunk[: _SNIPPET_BYTES - len(head)]
    return bytes(head)


def _response_time(response: httpx.Response) -> float:
    """The sink's clock (its Date header) for an HTTP-date Retry-After, else ours."""
    date = response.headers.get("date")
    when = None if date is None else http_date_timestamp(date)
    return time.time() if when is None else when


@final
class _BodyStream(httpx.AsyncByteStream):
    """A request body sent in one piece, re-readable (for redirects), with no async generator."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __aiter__(self) -> _OneChunk:
        return _OneChunk(self._body)


@final
class _OneChunk:
    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def __aiter__(self) -> _OneChunk:
        return self

    async def __anext__(self) -> bytes:
        body, self._body = self._body, None
        if body is None:
            raise StopAsyncIteration
        return body
