from __future__ import annotations

import gzip
import re

import httpx
import orjson
import pytest
import trio
import zstandard

from tests import ray_event_samples as s
from trio_events._cli._collect import run_collect
from trio_events._cli._main import parse
from trio_events._cli._settings import ArgumentError
from trio_events.store._collector import Collector, CollectorConfig, CollectorStatistics
from trio_events.store._query import counts, failed_tasks, timeline

DEADLINE = 10
TS = "2025-09-03T18:52:14.467290Z"


def sample_events():
    return [
        s.task_definition(1, s.TASK_ID, 0, "test_task", TS),
        s.task_lifecycle(2, s.TASK_ID, 0, [("PENDING_ARGS_AVAIL", TS), ("RUNNING", TS)]),
        s.actor_definition(3, TS),
    ]


async def start_collector(nursery, tmp_path, **config):
    collector = Collector(CollectorConfig(tmp_path / "events.db", "127.0.0.1", 0, **config))
    port = await nursery.start(collector.run)
    return collector, f"http://127.0.0.1:{port}"


def stored(tmp_path) -> int:
    return counts(tmp_path / "events.db").total


async def test_duplicates_across_posts_are_stored_once(nursery, tmp_path):
    with trio.fail_after(DEADLINE):
        collector, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post("/", json=sample_events())
            again = await client.post("/v1/events", json=sample_events()[1:])
        assert (first.status_code, first.json()) == (200, {"inserted": 3, "duplicates": 0})
        assert (again.status_code, again.json()) == (200, {"inserted": 0, "duplicates": 2})
        assert first.headers["content-type"] == "application/json"
        assert stored(tmp_path) == 3
        assert collector.statistics() == CollectorStatistics(
            accepted=3, duplicates=2, rejected_requests=0, accepted_requests=2
        )


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("zstd", zstandard.ZstdCompressor().compress),
        ("gzip, zstd", lambda b: zstandard.ZstdCompressor().compress(gzip.compress(b))),
        ("identity", bytes),
    ],
)
async def test_compressed_bodies(nursery, tmp_path, encoding, compress):
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        body = compress(orjson.dumps(sample_events()))
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/",
                content=body,
                headers={"content-encoding": encoding, "content-type": "application/json"},
            )
        assert (response.status_code, response.json()) == (200, {"inserted": 3, "duplicates": 0})


def _element(n, **changes):
    event = s.task_lifecycle(n, s.TASK_ID, 0, [("RUNNING", TS)])
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


ZSTD = zstandard.ZstdCompressor().compress(orjson.dumps(sample_events()))
BAD_BODIES = {
    "not json": (b"[{", {}, r"^The body is not valid JSON: .*\.$"),
    "empty body": (b"", {}, r"^The body is not valid JSON: .*\.$"),
    "not an array": (b'{"eventId": "AQ=="}', {}, r"^The body must be a JSON array of events, not a JSON object\.$"),
    "element not an object": (
        orjson.dumps([_element(1), 7]), {}, r"^Event 1 is not a JSON object\.$"
    ),
    "missing eventId": (
        orjson.dumps([_element(1), _element(2, eventId=None)]), {}, r"^Event 1 has no eventId \(or event_id\)\.$"
    ),
    "eventId not base64": (
        orjson.dumps([_element(1, eventId="not base64!")]), {},
        r"^Event 0 has an eventId that is not non-empty base64\.$",
    ),
    "missing eventType": (
        orjson.dumps([_element(1), _element(2, eventType=None)]), {}, r"^Event 1 has no eventType \(or event_type\)\.$"
    ),
    "corrupt gzip": (b"this is not gzip", {"content-encoding": "gzip"}, r"^The gzip body is corrupt: .*\.$"),
    "truncated gzip": (gzip.compress(b"[]" * 100)[:-10], {"content-encoding": "gzip"}, r"^The gzip body is truncated\.$"),
    "truncated zstd": (ZSTD[:-4], {"content-encoding": "zstd"}, r"^The zstd body is truncated\.$"),
    "corrupt zstd": (b"garbage!", {"content-encoding": "zstd"}, r"^The zstd body is corrupt: .*\.$"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "reason"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_bodies_get_400_and_nothing_is_stored(nursery, tmp_path, body, headers, reason):
    with trio.fail_after(DEADLINE):
        collector, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/", content=body, headers=headers)
        assert response.status_code == 400
        assert re.match(reason, response.text.removesuffix("\n")), response.text
        assert response.text.count("\n") == 1  # one line
        assert stored(tmp_path) == 0
        assert collector.statistics().rejected_requests == 1


async def test_unsupported_encoding_gets_415(nursery, tmp_path):
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/", content=b"[]", headers={"content-encoding": "br"})
        assert response.status_code == 415
        assert response.text == "Content-Encoding 'br' is not supported; use gzip, zstd or none.\n"


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_decompression_bombs_get_413(nursery, tmp_path, encoding):
    bomb = b"[" + b" " * 5_000_000 + b"]"
    compress = gzip.compress if encoding == "gzip" else zstandard.ZstdCompressor().compress
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path, max_body_bytes=100_000)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/", content=compress(bomb), headers={"content-encoding": encoding}
            )
        assert response.status_code == 413
        assert response.text == "The decompressed body exceeds the limit of 100000 bytes.\n"


async def test_both_key_styles(nursery, tmp_path):
    failed = s.task_lifecycle(
        5, s.TASK_ID, 0, [("FAILED", "2025-09-03T18:52:15Z")], error=("WORKER_DIED", "Worker died.")
    )
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            camel = await client.post("/", json=sample_events())
            snake = await client.post("/", json=[s.to_snake(failed)])
            again = await client.post("/", json=[s.to_snake(e) for e in sample_events()])
        assert camel.json() == {"inserted": 3, "duplicates": 0}
        assert snake.json() == {"inserted": 1, "duplicates": 0}
        assert again.json() == {"inserted": 0, "duplicates": 3}  # same ids, other spelling
    db = tmp_path / "events.db"
    states = [t.state for t in timeline(db, "task", s.TASK_ID.hex()).transitions]
    assert states == ["PENDING_ARGS_AVAIL", "RUNNING", "FAILED"]
    [failure] = failed_tasks(db)
    assert (failure.name, failure.error_message) == ("test_task", "Worker died.")


async def test_health_and_other_methods(nursery, tmp_path):
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            health = await client.get("/healthz")
            other = await client.get("/")
        assert (health.status_code, health.text) == (200, "ok\n")
        assert (other.status_code, other.headers["allow"]) == (405, "POST")
        assert other.headers["content-type"] == "text/plain; charset=utf-8"


async def test_keep_alive_several_posts_on_one_connection(nursery, tmp_path):
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        client_addresses = set()
        async with httpx.AsyncClient(base_url=url) as client:
            for i, event in enumerate(sample_events()):
                response = await client.post("/v1/events", json=[event])
                assert response.json() == {"inserted": 1, "duplicates": 0}, i
                stream = response.extensions["network_stream"]
                client_addresses.add(stream.get_extra_info("client_addr"))
            assert (await client.get("/healthz")).status_code == 200
        assert len(client_addresses) == 1
        assert stored(tmp_path) == 3


async def test_empty_array_is_accepted(nursery, tmp_path):
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/", content=b"[]")
        assert (response.status_code, response.json()) == (200, {"inserted": 0, "duplicates": 0})


def test_config_is_validated(tmp_path):
    with pytest.raises(ValueError, match=r"^port must be between 0 and 65535, not 70000\.$"):
        CollectorConfig(tmp_path / "x.db", port=70000)
    with pytest.raises(ValueError, match=r"^max_body_bytes must be at least 1, not 0\.$"):
        CollectorConfig(tmp_path / "x.db", max_body_bytes=0)


def _collect_args(*argv):
    return parse(["collect", *argv], {})


async def test_collect_command_reports_address_and_final_counts(tmp_path, capsys):
    db = tmp_path / "cli.db"
    args = _collect_args("--listen", "127.0.0.1:0", "--db", str(db))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(run_collect, args)
            async with httpx.AsyncClient() as client:
                response = await client.post(f"http://127.0.0.1:{port}/", json=sample_events())
                assert response.status_code == 200
            nursery.cancel_scope.cancel()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"Listening on http://127.0.0.1:{port}/ (POST to any path).",
        f"Storing events in {db}; press Ctrl+C to stop.",
        "Stopped: 3 events stored, 0 duplicates ignored, 0 requests rejected.",
    ]


async def test_collect_command_fails_in_one_sentence(tmp_path, capsys):
    with trio.fail_after(DEADLINE):
        args = _collect_args("--listen", "127.0.0.1:0", "--db", str(tmp_path / "no" / "dir.db"))
        with pytest.raises(OSError, match=r"^cannot start on") as info:
            await run_collect(args)
    assert str(info.value) == (
        f"cannot start on 127.0.0.1:0 with the store {tmp_path / 'no' / 'dir.db'}: "
        "unable to open database file"
    )


def test_listen_syntax():
    assert _collect_args("--listen", "[::1]:9000").listen == ("::1", 9000)
    assert _collect_args("--listen", ":9000").listen == (None, 9000)
    assert _collect_args().listen == ("127.0.0.1", 8084)
    with pytest.raises(ArgumentError, match=r"^argument --listen: expected HOST:PORT"):
        _collect_args("--listen", "localhost")
