"""HttpPublisherClient against a real HTTP/1.1 server on 127.0.0.1 (h11 on trio, optional TLS)."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import ssl
from typing import TYPE_CHECKING, Any

import attrs
import h11
import pytest
import trio
import trustme
import zstandard

from trio_events.agent._http_sink import (
    COMPRESS_IN_THREAD_BYTES,
    HttpPublisherClient,
    HttpPublisherConfig,
)
from trio_events.agent._sink import Outcome

if TYPE_CHECKING:
    from collections.abc import Iterator

DEADLINE = 10.0  # every test's absolute bound on real time
BODY = json.dumps(
    [{"eventId": "AQID", "eventType": "TASK_DEFINITION_EVENT", "n": n} for n in range(20)]
)


@attrs.frozen
class Received:
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# An action for one request: (status, headers, body), or "close" to hang up without answering.
Action = tuple[int, list[tuple[str, str]], bytes] | str


class Server:
    """A minimal keep-alive HTTP/1.1 server recording requests and playing scripted answers."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.received: list[Received] = []
        self.script: list[Action] = []
        self.connections = 0
        self._ids = itertools.count()
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1/events"

    async def start(self, nursery: trio.Nursery) -> None:
        listeners: list[Any] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        if self.ssl_context is not None:
            listeners = [
                trio.SSLListener(listener, self.ssl_context, https_compatible=True)
                for listener in listeners
            ]
        await nursery.start(trio.serve_listeners, self._handle, listeners)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        connection = next(self._ids)
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._next(conn, stream)
                if not isinstance(request, h11.Request):
                    return
                body = b""
                while isinstance(event := await self._next(conn, stream), h11.Data):
                    body += event.data
                self.received.append(
                    Received(
                        connection,
                        request.method.decode(),
                        request.target.decode(),
                        {k.decode(): v.decode() for k, v in request.headers},
                        body,
                    )
                )
                action = self.script.pop(0) if self.script else (200, [], b"ok")
                if action == "close":
                    return
                assert not isinstance(action, str)
                status, headers, payload = action
                headers = [("content-length", str(len(payload))), *headers]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return  # the client went away (or refused our certificate)
        finally:
            await trio.aclose_forcefully(stream)

    async def _next(self, conn: h11.Connection, stream: trio.abc.Stream) -> Any:
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        return event


@pytest.fixture
async def server(nursery) -> Server:
    server = Server()
    await server.start(nursery)
    return server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(nursery, ca) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = Server(context)
    await server.start(nursery)
    return server


async def post(config: HttpPublisherConfig, *bodies: bytes) -> list[Any]:
    async with HttpPublisherClient(config) as client:
        return [await client.publish(body) for body in bodies]


async def test_posts_the_json_body(server) -> None:
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(server.url), BODY.encode())
    assert outcome.outcome is Outcome.SUCCESS
    assert outcome.status == 200
    assert outcome.reason == "http_200"
    assert outcome.detail == "ok"
    [got] = server.received
    assert got.method == "POST"
    assert got.target == "/v1/events"
    assert got.headers["content-type"] == "application/json"
    assert "content-encoding" not in got.headers
    assert "authorization" not in got.headers
    assert got.body == BODY.encode()


def _decompress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    return zstandard.ZstdDecompressor().decompress(data)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
@pytest.mark.parametrize("size", ["small", "large"])
async def test_compressed_bodies_decode_to_the_same_json(server, encoding, size) -> None:
    body = BODY.encode()
    if size == "large":  # compressed in a worker thread
        body = json.dumps([json.loads(BODY)] * 1500).encode()
        assert len(body) > COMPRESS_IN_THREAD_BYTES[encoding]
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(server.url, compression=encoding), body)
    assert outcome.ok
    [got] = server.received
    assert got.headers["content-encoding"] == encoding
    assert got.headers["content-type"] == "application/json"
    assert int(got.headers["content-length"]) == len(got.body) < len(body)
    assert json.loads(_decompress(encoding, got.body)) == json.loads(body)


async def test_extra_headers_and_bearer_token_arrive(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    config = HttpPublisherConfig(
        server.url,
        headers=(("X-Scope-OrgID", "tenant-7"), ("X-Api-Key", "k3y-s3cret")),
        bearer_token="t0ken-s3cret",
    )
    with trio.fail_after(DEADLINE):
        await post(config, b"[]")
    [got] = server.received
    assert got.headers["authorization"] == "Bearer t0ken-s3cret"
    assert got.headers["x-scope-orgid"] == "tenant-7"
    assert got.headers["x-api-key"] == "k3y-s3cret"
    client = HttpPublisherClient(config)
    for text in (repr(config), repr(client), caplog.text):
        assert "s3cret" not in text
    assert "X-Scope-OrgID" in repr(config)
    await client.aclose()


async def test_one_connection_is_reused_for_several_posts(server) -> None:
    with trio.fail_after(DEADLINE):
        outcomes = await post(HttpPublisherConfig(server.url), *[b"[]"] * 5)
    assert all(o.ok for o in outcomes)
    assert len(server.received) == 5
    assert {r.connection for r in server.received} == {0}
    assert server.connections == 1


async def test_the_connection_survives_error_answers(server) -> None:
    server.script = [(503, [("retry-after", "7")], b"overloaded, try later"), (400, [], b"bad")]
    with trio.fail_after(DEADLINE):
        unavailable, bad, ok = await post(HttpPublisherConfig(server.url), b"[]", b"[]", b"[]")
    assert unavailable.outcome is Outcome.RETRYABLE
    assert unavailable.reason == "http_503"
    assert unavailable.retry_after == 7.0
    assert unavailable.detail == "overloaded, try later"
    assert bad.outcome is Outcome.PERMANENT
    assert bad.status == 400
    assert bad.detail == "bad"
    assert ok.ok
    assert server.connections == 1


async def test_a_huge_error_page_is_cut_short(server) -> None:
    server.script = [(500, [], b"<html>" + b"x" * 1_000_000)]
    with trio.fail_after(DEADLINE):
        error, ok = await post(HttpPublisherConfig(server.url), b"[]", b"[]")
    assert error.reason == "http_500"
    assert len(error.detail) <= 200
    assert ok.ok  # on a new connection: the rest of the page was not read
    assert server.connections == 2


async def test_a_server_hanging_up_is_retryable(server) -> None:
    server.script = ["close"]
    with trio.fail_after(DEADLINE):
        closed, ok = await post(HttpPublisherConfig(server.url), b"[]", b"[]")
    assert closed.outcome is Outcome.RETRYABLE
    assert closed.reason == "remote_protocol_error"
    assert closed.status is None
    assert ok.ok


async def test_connection_refused_is_retryable() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(f"http://127.0.0.1:{port}/"), b"[]")
    assert outcome.outcome is Outcome.RETRYABLE
    assert outcome.reason == "connect_error"
    assert outcome.detail


async def test_a_307_redirect_reposts_the_body(server) -> None:
    server.script = [(307, [("location", "/v2/events")], b"")]
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(server.url), b"[1]")
    assert outcome.ok
    assert [(r.method, r.target, r.body) for r in server.received] == [
        ("POST", "/v1/events", b"[1]"),
        ("POST", "/v2/events", b"[1]"),
    ]


async def test_a_302_redirect_that_would_lose_the_body_is_permanent(server) -> None:
    server.script = [(302, [("location", "/elsewhere")], b"")]
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(server.url), b"[1]")
    assert outcome.outcome is Outcome.PERMANENT
    assert outcome.reason == "redirected_to_get"
    assert "configure the final URL" in outcome.detail


# --- TLS ----------------------------------------------------------------------------------------


async def test_tls_verifies_with_the_ca_bundle(tls_server, ca, tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with trio.fail_after(DEADLINE):
        outcomes = await post(
            HttpPublisherConfig(tls_server.url, ca_bundle=str(bundle)), b"[]", b"[]"
        )
    assert all(o.ok for o in outcomes)
    assert tls_server.connections == 1
    assert [r.body for r in tls_server.received] == [b"[]", b"[]"]


async def test_tls_without_the_ca_fails_verification_as_retryable(tls_server) -> None:
    # The default trust store (certifi's) does not know the test CA.
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(tls_server.url), b"[]")
    assert outcome.outcome is Outcome.RETRYABLE
    assert outcome.reason == "tls_certificate"
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert tls_server.received == []


async def test_tls_with_a_different_ca_fails_verification(tls_server, tmp_path) -> None:
    bundle = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(tls_server.url, ca_bundle=str(bundle)), b"[]")
    assert outcome.reason == "tls_certificate"


async def test_tls_verification_can_be_turned_off(tls_server) -> None:
    with trio.fail_after(DEADLINE):
        [outcome] = await post(HttpPublisherConfig(tls_server.url, verify=False), b"[]")
    assert outcome.ok


def test_an_unreadable_ca_bundle_is_a_configuration_error(tmp_path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=r"^The CA bundle '.*missing\.pem' cannot be loaded \("):
        HttpPublisherClient(HttpPublisherConfig("https://sink.test/", ca_bundle=str(missing)))


# --- configuration ------------------------------------------------------------------------------


def _config_errors() -> Iterator[tuple[dict[str, Any], str]]:
    yield (
        {"url": "ftp://sink/"},
        r"^The export address must be an http:// or https:// URL with a host, got 'ftp://sink/'\.$",
    )
    yield (
        {"url": "localhost:8080"},
        r"^The export address must be an http:// or https:// URL with a host, got",
    )
    yield (
        {"url": "https://user:secret@sink.test/"},
        r"^The export address must not contain credentials; give a bearer token or an "
        r"Authorization header instead\.$",
    )
    yield (
        {"timeout": 0},
        r"^The publisher timeout must be a positive number of seconds, got 0\.$",
    )
    yield (
        {"compression": "br"},
        r"^compression must be one of none, gzip, zstd, got 'br'\.$",
    )
    yield ({"headers": (("Bad Name", "x"),)}, r"^'Bad Name' is not a valid HTTP header name\.$")
    yield (
        {"headers": (("X-A", "a\r\nInjected: 1"),)},
        r"^The value of header 'X-A' must not contain CR, LF or NUL\.$",
    )
    yield (
        {"headers": (("Content-Type", "text/plain"),)},
        r"^Header 'Content-Type' is set by the publisher and cannot be configured\.$",
    )
    yield (
        {"headers": (("Authorization", "Basic eDp5"),), "bearer_token": "t"},
        r"^Give either a bearer token or an Authorization header, not both\.$",
    )
    yield (
        {"bearer_token": "two words"},
        r"^The bearer token must be non-empty and contain no whitespace\.$",
    )
    yield (
        {"ca_bundle": "ca.pem", "verify": False},
        r"^A CA bundle was given but TLS verification is off; drop one of them\.$",
    )


@pytest.mark.parametrize(("kwargs", "message"), list(_config_errors()))
def test_config_is_validated(kwargs, message) -> None:
    kwargs = {"url": "http://sink.test/", **kwargs}
    with pytest.raises(ValueError, match=message):
        HttpPublisherConfig(**kwargs)


def test_config_defaults_are_rays() -> None:
    config = HttpPublisherConfig("http://sink.test/")
    assert config.timeout == 3.0
    assert config.compression == "none"
    assert config.verify
    assert config.headers == ()
    assert config.bearer_token is None
