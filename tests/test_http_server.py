from __future__ import annotations

import logging
import re
from functools import partial

import h11
import httpx
import pytest
import trio
import trio.testing

from trio_events._http_server import Request, Response, serve_http

DEADLINE = 10


class Recorder:
    """An echo handler that remembers what it saw and fails on /boom."""

    def __init__(self):
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        text = f"{request.method} {request.path} q={request.query} body={len(request.body)}"
        return Response.text(200, text)


async def start(nursery, handler, **kwargs):
    return await nursery.start(partial(serve_http, handler, "127.0.0.1", 0, **kwargs))


async def read_until_closed(stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


class RawClient:
    """An h11 client on a raw stream, to see exactly what happens on one connection."""

    def __init__(self, stream):
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method, target, body=b"", headers=()):
        all_headers = [("host", "test"), ("content-length", str(len(body))), *headers]
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        return await self.response()

    async def response(self):
        head, body = None, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return head.status_code, dict(head.headers), body


async def test_get_and_post_on_port_zero(nursery):
    with trio.fail_after(DEADLINE):
        handler = Recorder()
        port = await start(nursery, handler)
        assert port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            got = await client.get("/a/b?x=1", headers={"X-Thing": "yes"})
            posted = await client.post("/events", content=b"[1, 2]")
        assert (got.status_code, got.text) == (200, "GET /a/b q=x=1 body=0\n")
        assert (posted.status_code, posted.text) == (200, "POST /events q= body=6\n")
        assert posted.headers["content-type"] == "text/plain; charset=utf-8"
        assert handler.requests[0].header("x-thing") == "yes"
        assert handler.requests[0].header("X-THING") == "yes"
        assert handler.requests[1].body == b"[1, 2]"


async def test_keep_alive_serves_several_requests_on_one_connection(nursery):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder())
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            client = RawClient(stream)
            for i in range(3):
                status, _, body = await client.request("POST", f"/{i}", body=b"x" * i)
                assert (status, body) == (200, f"POST /{i} q= body={i}\n".encode())


async def test_pipelined_requests_are_answered_in_order(nursery):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder())
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            data = await read_until_closed(stream)
        assert data.count(b"HTTP/1.1 200 OK") == 2
        assert data.index(b"GET /one") < data.index(b"GET /two")


async def test_head_gets_headers_without_body(nursery):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.head("/x")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == str(len("HEAD /x q= body=0\n"))


async def test_body_over_the_limit_by_content_length_gets_413(nursery):
    with trio.fail_after(DEADLINE):
        handler = Recorder()
        port = await start(nursery, handler, max_body_bytes=1000)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.post("/", content=b"x" * 1000)
            too_big = await client.post("/", content=b"x" * 200_000)
        assert ok.status_code == 200
        assert too_big.status_code == 413
        assert too_big.text == "The request body exceeds the limit of 1000 bytes.\n"
        assert too_big.headers["connection"] == "close"
        assert len(handler.requests) == 1


async def test_chunked_body_over_the_limit_gets_413(nursery):
    async def chunks():
        for _ in range(5):
            yield b"y" * 300

    with trio.fail_after(DEADLINE):
        handler = Recorder()
        port = await start(nursery, handler, max_body_bytes=1000)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.post("/", content=chunks())
        assert response.status_code == 413
        assert handler.requests == []


async def test_expect_100_continue(nursery):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder())
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            data = await read_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert data.endswith(b"POST /up q= body=5\n")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 requires Host
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", 431),
    ],
)
async def test_malformed_requests_get_4xx_and_a_close(nursery, raw, status):
    with trio.fail_after(DEADLINE):
        handler = Recorder()
        port = await start(nursery, handler)
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(raw)
            data = await read_until_closed(stream)
        assert data.startswith(f"HTTP/1.1 {status} ".encode())
        assert b"Malformed HTTP request" in data
        assert handler.requests == []


async def test_handler_exception_gets_500_and_the_server_keeps_serving(nursery, caplog):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder())
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            client = RawClient(stream)
            status, _, body = await client.request("GET", "/boom")
            assert (status, body) == (500, b"Internal server error.\n")
            status, _, _ = await client.request("GET", "/fine")  # same connection
            assert status == 200
        [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert record.getMessage() == "The HTTP handler failed on GET /boom."
        assert record.exc_info is not None
        assert record.exc_info[0] is RuntimeError


async def test_invalid_response_from_handler_gets_500(nursery, caplog):
    async def bad(request):
        return Response(99)  # not a final status

    with trio.fail_after(DEADLINE):
        port = await start(nursery, bad)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.get("/")
        assert response.status_code == 500
        assert "The HTTP handler failed on GET /." in caplog.text


async def test_slow_request_gets_408(nursery):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder(), request_timeout=0.2)
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            data = await read_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert data.endswith(b"The request did not arrive in time.\n")


async def test_idle_keep_alive_connection_is_closed(nursery):
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder(), idle_timeout=0.2)
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            client = RawClient(stream)
            assert (await client.request("GET", "/"))[0] == 200
            assert await stream.receive_some(100) == b""  # closed silently, no 408


async def test_connections_beyond_the_limit_wait_for_a_busy_slot(nursery):
    with trio.fail_after(DEADLINE):
        handler = Recorder()
        port = await start(nursery, handler, max_connections=1)
        first = await trio.open_tcp_stream("127.0.0.1", port)
        # A request under way is not idle: its connection keeps its slot.
        await first.send_all(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        async with await trio.open_tcp_stream("127.0.0.1", port) as second:
            async with first:
                await second.send_all(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert handler.requests == []
                await first.send_all(b"abc")
                status, _, body = await RawClient(first).response()
                assert (status, body) == (200, b"POST /first q= body=3\n")
                # Now the first is idle and the second waits: the idle one makes room.
                assert await read_until_closed(first) == b""
            status, _, _ = await RawClient(second).response()
            assert status == 200
            assert [r.path for r in handler.requests] == ["/first", "/second"]


async def test_idle_connections_never_lock_out_a_health_probe(nursery):
    """64 connections that connect and say nothing take every slot; a probe is still served."""
    with trio.fail_after(DEADLINE):
        port = await start(nursery, Recorder(), max_connections=64)
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(64)]
        try:
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            for _ in range(3):
                async with httpx.AsyncClient(timeout=2) as client:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz")
                assert response.status_code == 200
        finally:
            for stream in idle:
                await stream.aclose()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_body_bytes": -1}, "max_body_bytes must be >= 0, not -1."),
        ({"max_connections": 0}, "max_connections must be >= 1, not 0."),
        (
            {"idle_timeout": 0},
            "request_timeout and idle_timeout must be positive numbers of seconds.",
        ),
    ],
)
async def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        await serve_http(Recorder(), "127.0.0.1", 0, **kwargs)


async def test_cancellation_closes_listener_and_connections():
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await start(nursery, Recorder())
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            assert (await RawClient(stream).request("GET", "/"))[0] == 200
            nursery.cancel_scope.cancel()
        async with stream:
            assert await stream.receive_some(100) == b""
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("127.0.0.1", port)
