"""Hostile HTTP to a real collector: random and mutated bodies, wrong JSON shapes, deep nesting,
bad or lying Content-Encoding, and raw bytes that are barely HTTP.

Every answer must be 200 (the body was stored whole) or a 4xx with a one-line reason; never a
5xx, never a hang, never a traceback in the collector's log; it goes on serving in between and
stops cleanly at the end with exactly the events it said it inserted.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from tests import ray_event_samples as s
from tests.fuzz.conftest import CHECK_EVERY, FUZZ, FUZZ_FEW, Tally
from tests.harness import SyncProc, record_result, sync_spawn, tracebacks

if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_BODY = 256 * 1024
TS = "2025-09-03T18:52:14.467290Z"
SAMPLE = [
    s.task_definition(1, s.TASK_ID, 0, "f", TS),
    s.task_lifecycle(2, s.TASK_ID, 0, [("RUNNING", TS), ("FINISHED", TS)]),
    s.actor_definition(3, TS),
    s.node_definition(4, TS),
]
SAMPLE_BODY = orjson.dumps(SAMPLE)


@attrs.define
class Collector:
    proc: SyncProc
    client: httpx.Client
    inserted: int = 0

    def post(self, tally: Tally, target: str, body: bytes, headers: dict[str, str]) -> int:
        response = self.client.post("/v1/events", content=body, headers=headers)
        status = response.status_code
        if status == 200:
            self.inserted += response.json()["inserted"]
        else:
            assert 400 <= status < 500, (status, response.text, body[:200], headers)
            reason = response.text
            assert reason.endswith("\n"), reason  # one line: a sentence saying why
            assert reason.count("\n") == 1, reason
            assert len(reason) > 5, reason
        tally.add(target, str(status))
        if tally.tried[target] % CHECK_EVERY == 0:
            self.assert_serving()
        return status

    def assert_serving(self) -> None:
        assert self.proc.alive(), self.proc.describe()
        assert self.client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    cwd = tmp_path_factory.mktemp("fuzz-collector")
    argv = ("collect", "--listen", "127.0.0.1:0", "--db", str(cwd / "events.db"))
    with sync_spawn("collector", *argv, "--max-body-bytes", str(MAX_BODY), cwd=cwd) as proc:
        port = int(proc.wait_for(r"Listening on http://127\.0\.0\.1:(\d+)/", within=30).group(1))
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=20, trust_env=False
        ) as client:
            found = Collector(proc, client)
            yield found
            found.assert_serving()
        assert proc.stop() == 0, proc.describe()
    assert not tracebacks(proc.stderr()), proc.describe()
    stopped = re.search(r"Stopped: (\d+) events stored", proc.stdout())
    assert stopped is not None, proc.describe()
    assert int(stopped.group(1)) == found.inserted
    record_result("fuzz", "collector-books", {"events_stored": found.inserted})


# --- strategies -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def tampered_events(draw: st.DrawFn) -> list[Any]:
    """The sample events with some fields replaced, removed or added (ids kept unique-ish)."""
    events = [dict(e) for e in draw(st.lists(st.sampled_from(SAMPLE), min_size=1, max_size=6))]
    for event in events:
        event["eventId"] = s.event_id(draw(st.integers(10, 2**64)))
        for _ in range(draw(st.integers(0, 3))):
            field = draw(st.sampled_from(sorted(event)))
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                event[field] = draw(json_values)
            elif action == "delete":
                del event[field]
            else:
                event[draw(st.text(max_size=12))] = draw(json_values)
    return events


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(SAMPLE_BODY)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from([b"[", b"]", b"{", b'"', b",", b"\\", b"\xff", b"\x00"])
            )
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif len(data) > 1:
            del data[at:]
    return bytes(data)


ENCODINGS = ["gzip", "zstd", "x-gzip", "identity", "br", "deflate", "gzip, zstd", "zstd, gzip",
             "gzip,gzip", "GZIP", "", ",", "compress", "zstd;q=1"]  # fmt: skip


def encode(body: bytes, encoding: str) -> bytes:
    for name in [e.strip().lower() for e in encoding.split(",") if e.strip()]:
        if name in ("gzip", "x-gzip"):
            body = gzip.compress(body)
        elif name == "zstd":
            body = zstandard.ZstdCompressor().compress(body)
    return body


# --- the attacks ------------------------------------------------------------------------------


@FUZZ
@given(
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(["application/json", "text/plain", "x"]),
)
def test_random_bodies(collector: Collector, tally: Tally, body: bytes, content_type: str) -> None:
    collector.post(tally, "http: random bodies", body, {"content-type": content_type})


@FUZZ
@given(body=mutated_bytes())
def test_mutated_json_bodies(collector: Collector, tally: Tally, body: bytes) -> None:
    collector.post(tally, "http: mutated valid bodies", body, {})


@FUZZ
@given(value=st.one_of(json_values, tampered_events()))
def test_wrong_json_shapes_and_tampered_events(
    collector: Collector, tally: Tally, value: Any
) -> None:
    """Any JSON at all: 400 unless it is an array; then 200, each element stored or refused."""
    collector.post(
        tally, "http: wrong JSON shapes, tampered events", json.dumps(value).encode(), {}
    )


@FUZZ_FEW
@given(depth=st.integers(100, 200_000), kind=st.sampled_from(["[]", "{}", "mixed"]))
def test_deep_nesting(collector: Collector, tally: Tally, depth: int, kind: str) -> None:
    if kind == "[]":
        body = b"[" * depth + b"]" * depth
    elif kind == "{}":
        body = b"[" + b'{"a":' * depth + b"1" + b"}" * depth + b"]"
    else:
        body = b'[{"eventId":"AQ==","eventType":"X","x":' + b"[" * depth + b"]" * depth + b"}]"
    status = collector.post(tally, "http: deep nesting", body[: MAX_BODY - 1], {})
    assert status in (200, 400)


@FUZZ
@given(
    encoding=st.one_of(
        st.sampled_from(ENCODINGS),
        st.text(alphabet="abcdefgxz-, ;=0123", max_size=12).map(str.strip),
    ),
    apply=st.sampled_from(["declared", "none", "garbage", "truncated"]),
    body=st.sampled_from([SAMPLE_BODY, b"[]", b"not json"]),
)
def test_content_encodings(
    collector: Collector, tally: Tally, encoding: str, apply: str, body: bytes
) -> None:
    encoded = {
        "declared": encode(body, encoding),
        "none": body,
        "garbage": b"\x1f\x8b\x08\x00garbage\x28\xb5\x2f\xfd",
        "truncated": encode(body, encoding)[:-3],
    }[apply]
    collector.post(tally, "http: content encodings", encoded, {"content-encoding": encoding})


@FUZZ_FEW
@given(size=st.integers(MAX_BODY - 100, MAX_BODY * 4), encoding=st.sampled_from(["gzip", "zstd"]))
def test_oversized_and_bomb_bodies(
    collector: Collector, tally: Tally, size: int, encoding: str
) -> None:
    bomb = encode(b"[" + b" " * size + b"]", encoding)
    status = collector.post(
        tally, "http: oversized and bomb bodies", bomb, {"content-encoding": encoding}
    )
    assert status in (200, 413)


# --- barely HTTP ------------------------------------------------------------------------------

token = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    min_size=1,
    max_size=12,
)
header_value = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=40)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["POST", "GET", "PUT", "HEAD", "OPTIONS", "BREW", "post", ""]))
    target = draw(
        st.sampled_from(["/", "/v1/events", "/healthz", "*", "http://x/", "/%zz", "//" * 50])
    )
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "http/1.1"]))
    lines = [f"{method} {target} {version}".encode()]
    body = draw(st.sampled_from([b"", SAMPLE_BODY, b"[]", b"5\r\n[1,2]\r\n0\r\n\r\n", b"zz\r\n"]))
    if draw(st.booleans()):
        lines.append(b"Host: 127.0.0.1")
    length = draw(
        st.sampled_from(["ok", "missing", "lies", "twice", "negative", "chunked", "both"])
    )
    framing = {
        "ok": [f"Content-Length: {len(body)}"],
        "missing": [],
        "lies": [f"Content-Length: {len(body) + draw(st.integers(1, 100))}"],
        "twice": [f"Content-Length: {len(body)}", "Content-Length: 3"],
        "negative": ["Content-Length: -1"],
        "chunked": ["Transfer-Encoding: chunked"],
        "both": ["Transfer-Encoding: chunked", f"Content-Length: {len(body)}"],
    }[length]
    lines += [f.encode() for f in framing]
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(token).encode() + b": " + draw(header_value).encode("latin-1"))
    if draw(st.booleans()):
        lines.append(b"X-Big: " + b"a" * draw(st.integers(1, 100_000)))
    separator = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    return separator.join(lines) + separator + separator + body


def raw_exchange(port: int, data: bytes) -> tuple[str, int]:
    """Send ``data``, half-close, read the answer: how it ended (it must end, within 20 s) and
    how many events the answers say were inserted."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            return "reset", 0
    if not answer:
        return "closed", 0
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert status is not None, answer[:200]
    code = int(status.group(1))
    assert code < 500 or code == 505, answer[:500]
    return str(code), sum(int(n) for n in re.findall(rb'"inserted":(\d+)', answer))


@FUZZ
@given(data=st.one_of(raw_requests(), st.binary(min_size=1, max_size=1024)))
def test_raw_requests(collector: Collector, tally: Tally, data: bytes) -> None:
    port = collector.client.base_url.port
    assert port is not None
    outcome, inserted = raw_exchange(port, data)
    collector.inserted += inserted
    tally.add("http: raw requests and bytes", outcome)
    if tally.tried["http: raw requests and bytes"] % CHECK_EVERY == 0:
        collector.assert_serving()


@pytest.mark.parametrize("depth", [253, 254, 1022])
def test_event_nested_deeper_than_orjson_writes_is_refused_alone(
    collector: Collector, tally: Tally, depth: int
) -> None:
    """Regression: orjson reads 1024 levels but writes only 255, so such an event parsed, then
    failed in the store with TypeError: a 500 and a traceback in the collector's log. Since
    issue 14 such an event is refused alone, named in a 200's ``refused``."""
    body = b'[{"eventId":"AQ==","eventType":"X","x":' + b"[" * depth + b"]" * depth + b"}]"
    response = collector.client.post("/v1/events", content=body)
    assert response.status_code == 200
    collector.inserted += response.json()["inserted"]
    refused = response.json()["refused"]
    if depth <= 253:  # the deepest array orjson writes inside an event
        assert refused == []
    else:
        assert [(r["reason"], r["message"]) for r in refused] == [
            ("unencodable", "Event 0 cannot be stored: Recursion limit reached.")
        ]
    tally.add("http: deep nesting", str(response.status_code))
