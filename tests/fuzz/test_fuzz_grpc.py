"""Hostile AddEvents input to a real agent: random bytes, mutated requests, crafted protobuf wire
data (bad enums, timestamps out of range, invalid UTF-8, deep groups), oversized messages, raw
HTTP/2 frames with hostile gRPC framing and headers, and bytes that are not HTTP/2 at all.

The agent must answer every refusal with INVALID_ARGUMENT or RESOURCE_EXHAUSTED and a message,
must stay up, and must go on accepting valid requests; what it accepts flows on to the collector
and ends delivered or counted (checked when the session's pipeline is torn down).
"""

from __future__ import annotations

import re
import socket
import struct

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    ADD_EVENTS,
    CHECK_EVERY,
    FUZZ,
    FUZZ_FEW,
    MAX_MESSAGE_BYTES,
    Pipeline,
    Tally,
    valid_request,
)
from tests.harness import scrape_sync

REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
BASES = [valid_request(seed, count).SerializeToString() for seed, count in ((1, 3), (2, 8), (3, 1))]


def attack(pipeline: Pipeline, tally: Tally, target: str, payload: bytes) -> str:
    """Send one hostile request: accepted, or refused clearly; the agent keeps serving."""
    try:
        pipeline.add_events(payload)
        outcome = "OK"
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
        assert code in REFUSALS, (code, details, payload[:200])
        assert details, f"{code} came without a message"
        outcome = code.name
    tally.add(target, outcome)
    if tally.tried[target] % CHECK_EVERY == 0:
        pipeline.assert_serving()
    return outcome


# --- protobuf wire encoding, to say what protobuf's own classes would refuse to build -------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers are ten-byte two's complement, as protobuf writes
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def vi(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def request_of(events: list[bytes], extra: bytes = b"") -> bytes:
    """AddEventsRequest{events_data: RayEventsData{events: ...}} from serialized RayEvents."""
    return ld(1, b"".join(ld(1, e) for e in events) + extra)


int64s = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 253402300800, -62135596801]),
)
utf8_or_not = st.one_of(
    st.text(max_size=64).map(str.encode),
    st.binary(max_size=64),  # often invalid UTF-8 in a string field: a parse error
    st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x00b"]),
)


@st.composite
def hostile_event(draw: st.DrawFn) -> bytes:
    parts = [ld(1, draw(st.binary(max_size=40)))]  # event_id, any length, maybe empty
    parts.append(vi(2, draw(int64s)))  # source_type: any enum number
    parts.append(vi(3, draw(st.one_of(st.integers(0, 30), int64s))))  # event_type
    if draw(st.booleans()):
        parts.append(ld(4, vi(1, draw(int64s)) + vi(2, draw(int64s))))  # timestamp, any range
    parts.append(vi(5, draw(int64s)))  # severity
    parts.append(ld(6, draw(utf8_or_not)))  # message
    parts.append(ld(7, draw(utf8_or_not)))  # session_name
    if draw(st.booleans()):
        # A payload sub-message of any of the 2.60 types, with random content.
        parts.append(ld(draw(st.integers(8, 25)), draw(st.binary(max_size=120))))
    if draw(st.booleans()):
        # Unknown fields of every wire type (a newer Ray's; they must pass through).
        field = draw(st.integers(26, 2**29 - 1))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        value = {
            0: varint(draw(int64s)),
            1: draw(st.binary(min_size=8, max_size=8)),
            2: varint(3) + b"abc",
            5: draw(st.binary(min_size=4, max_size=4)),
        }[wire]
        parts.append(key(field, wire) + value)
    if draw(st.booleans()):
        parts.append(ld(18, draw(st.binary(max_size=40))))  # node_id
    order = draw(st.permutations(parts))
    return b"".join(order)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        else:
            other = draw(st.sampled_from(BASES))
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


# --- the attacks ----------------------------------------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=2048))
def test_random_bytes(pipeline: Pipeline, tally: Tally, payload: bytes) -> None:
    attack(pipeline, tally, "grpc: random bytes", payload)


@FUZZ
@given(payload=mutated())
def test_mutated_valid_requests(pipeline: Pipeline, tally: Tally, payload: bytes) -> None:
    attack(pipeline, tally, "grpc: mutated valid requests", payload)


@FUZZ
@given(events=st.lists(hostile_event(), min_size=1, max_size=20), extra=st.binary(max_size=30))
def test_crafted_wire_events(
    pipeline: Pipeline, tally: Tally, events: list[bytes], extra: bytes
) -> None:
    """Events protobuf's classes would refuse to build: they are parsed, refused, or converted
    (with unknown enum numbers and out-of-range timestamps) and published or counted."""
    attack(pipeline, tally, "grpc: crafted protobuf wire data", request_of(events, extra))


@FUZZ_FEW
@given(depth=st.integers(50, 20_000), field=st.integers(26, 1000))
def test_deeply_nested_groups(pipeline: Pipeline, tally: Tally, depth: int, field: int) -> None:
    """Unknown fields of nested groups (parsed recursively): refused past the recursion limit."""
    nested = key(field, 3) * depth + key(field, 4) * depth
    valid = valid_request(7, 1).events_data.events[0].SerializeToString()
    outcome = attack(pipeline, tally, "grpc: deeply nested groups", request_of([valid + nested]))
    if depth > 200:
        assert outcome == "INVALID_ARGUMENT"


@FUZZ_FEW
@given(extra=st.integers(1, 2 * MAX_MESSAGE_BYTES), events=st.integers(1, 4))
def test_oversized_messages(pipeline: Pipeline, tally: Tally, extra: int, events: int) -> None:
    """A message over --max-message-bytes is refused with RESOURCE_EXHAUSTED before it is read."""
    message = b"x" * (MAX_MESSAGE_BYTES // events + extra)
    event = ld(1, b"e" * 28) + vi(3, 9) + ld(6, message)
    outcome = attack(pipeline, tally, "grpc: oversized messages", request_of([event] * events))
    assert outcome == "RESOURCE_EXHAUSTED"


@FUZZ_FEW
@given(count=st.integers(1_000, 4_000))
def test_many_tiny_events(pipeline: Pipeline, tally: Tally, count: int) -> None:
    """Many events in one request (under the size limit): accepted whole, buffered, published."""
    event = ld(1, b"t" * 28) + vi(3, 9)
    attack(pipeline, tally, "grpc: many tiny events", request_of([event] * count))


# --- below gRPC: raw HTTP/2 and raw TCP -------------------------------------------------------

BASE_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", ADD_EVENTS),
    (":authority", "127.0.0.1"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


@st.composite
def hostile_headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    headers = dict(BASE_HEADERS)
    if draw(st.booleans()):
        headers["content-type"] = draw(
            st.sampled_from(["application/grpc+proto", "application/json", "text/plain", "x"])
        )
    if draw(st.booleans()):
        del headers["te"]
    if draw(st.booleans()):
        headers["grpc-encoding"] = draw(st.sampled_from(["gzip", "identity", "deflate", "snappy"]))
    if draw(st.booleans()):
        headers["grpc-timeout"] = draw(st.sampled_from(["1S", "0n", "abc", "99999999H", "-1m"]))
    if draw(st.booleans()):
        headers["authorization"] = draw(st.sampled_from(["Bearer x", "", "Basic Zm9vOmJhcg=="]))
    if draw(st.booleans()):
        headers[":path"] = draw(
            st.sampled_from([ADD_EVENTS + "x", "/ray.rpc.ReporterService/HealthCheck", "/", "//"])
        )
    return list(headers.items())


@st.composite
def grpc_frames(draw: st.DrawFn) -> list[bytes]:
    """DATA payloads whose 5-byte gRPC prefix may lie about the flag or the length."""
    frames = []
    for _ in range(draw(st.integers(0, 3))):
        body = draw(st.one_of(st.binary(max_size=200), mutated()))
        flag = draw(st.sampled_from([0, 0, 1, 2, 255]))
        length = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
        frames.append(struct.pack(">BI", flag, length) + body)
    if draw(st.booleans()):
        frames.append(draw(st.binary(max_size=4)))  # a prefix cut short
    return frames


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def h2_exchange(port: int, headers: list[tuple[str, str]], frames: list[bytes]) -> str:
    """One request over a fresh HTTP/2 connection; how it ended (it must end, within 20 s)."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, headers)
        for frame in frames:
            conn.send_data(stream, frame)
        conn.end_stream(stream)
        sock.sendall(conn.data_to_send())
        status = grpc_status = message = None
        while True:
            data = sock.recv(65536)
            if not data:
                return f"closed (http {status}, grpc-status {grpc_status})"
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return "protocol error"
            for event in events:
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    found = {_text(k): _text(v) for k, v in event.headers or []}
                    status = found.get(":status", status)
                    grpc_status = found.get("grpc-status", grpc_status)
                    message = found.get("grpc-message", message)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    kind = "reset" if isinstance(event, h2.events.StreamReset) else "ended"
                    return f"{kind} (http {status}, grpc-status {grpc_status}: {message})"
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return "goaway"
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)


@FUZZ
@given(headers=hostile_headers(), frames=grpc_frames())
def test_raw_http2_framing_and_headers(
    pipeline: Pipeline, tally: Tally, headers: list[tuple[str, str]], frames: list[bytes]
) -> None:
    outcome = h2_exchange(pipeline.grpc_port, headers, frames)
    if headers == BASE_HEADERS:
        # Well-formed gRPC headers: whatever the framing, a gRPC status with a message.
        assert re.fullmatch(r"ended \(http 200, grpc-status (0: None|(3|8|12): .+)\)", outcome), (
            outcome,
            frames,
        )
    tally.add("http/2: hostile gRPC framing and headers", outcome)
    if tally.tried["http/2: hostile gRPC framing and headers"] % CHECK_EVERY == 0:
        pipeline.assert_serving()


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=512))
def test_bytes_that_are_not_http2(pipeline: Pipeline, tally: Tally, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", pipeline.grpc_port), timeout=20) as sock:
        try:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass  # whatever it answers, it must close the connection
            outcome = "closed"
        except ConnectionResetError:
            outcome = "reset"
    tally.add("tcp: bytes that are not HTTP/2", outcome)
    if tally.tried["tcp: bytes that are not HTTP/2"] % CHECK_EVERY == 0:
        pipeline.assert_serving()


@pytest.mark.parametrize("payload", [b"", request_of([]), valid_request(99, 0).SerializeToString()])
def test_empty_requests_are_fine(pipeline: Pipeline, tally: Tally, payload: bytes) -> None:
    assert attack(pipeline, tally, "grpc: empty requests", payload) == "OK"


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([b"\x00\x00"], "The request ended before its 5-byte message prefix had arrived."),
        (
            [struct.pack(">BI", 0, 1000) + b"\x0a\x00"],
            "The request ended before the 1000 bytes its prefix announces had arrived.",
        ),
        ([], "The request carried no message."),
    ],
    ids=["prefix-cut-short", "body-shorter-than-its-prefix", "no-message"],
)
def test_truncated_message_is_invalid_argument(
    pipeline: Pipeline, tally: Tally, frames: list[bytes], message: str
) -> None:
    """Regression: a request cut short used to reach grpclib's buffer assertion, answered as
    UNKNOWN "Internal Server Error" and logged as an application error with a traceback."""
    before = scrape_sync(pipeline.metrics_port).invalid.get("malformed", 0)
    outcome = h2_exchange(pipeline.grpc_port, BASE_HEADERS, frames)
    assert outcome == f"ended (http 200, grpc-status 3: {message})"
    assert scrape_sync(pipeline.metrics_port).invalid.get("malformed", 0) == before + 1
    tally.add("http/2: truncated messages", outcome)
    pipeline.assert_serving()
