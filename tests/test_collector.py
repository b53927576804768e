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
        assert (first.status_code, first.json()) == (
            200,
            {"inserted": 3, "duplicates": 0, "refused": []},
        )
        assert (again.status_code, again.json()) == (
            200,
            {"inserted": 0, "duplicates": 2, "refused": []},
        )
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
        assert (response.status_code, response.json()) == (
            200,
            {"inserted": 3, "duplicates": 0, "refused": []},
        )


def _element(n, **changes):
    event = s.task_lifecycle(n, s.TASK_ID, 0, [("RUNNING", TS)])
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


ZSTD = zstandard.ZstdCompressor().compress(orjson.dumps(sample_events()))
BAD_BODIES = {
    "not json": (b"[{", {}, r"^The body is not valid JSON: .*\.$"),
    "empty body": (b"", {}, r"^The body is not valid JSON: .*\.$"),
    "not an array": (b'{"eventId": "AQ=="}', {}, r"^The body must be a JSON array of events, not a JSON object\.$"),
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


BAD_ELEMENTS = {
    "not an object": (7, "not_an_object", r"^Event 1 is not a JSON object\.$"),
    "no eventId": (_element(9, eventId=None), "missing_event_id", r"^Event 1 has no eventId \(or event_id\)\.$"),
    "empty eventId": (_element(9, eventId=""), "missing_event_id", r"^Event 1 has no eventId .*"),
    "eventId not base64": (_element(9, eventId="not base64!"), "invalid_event_id", r"^Event 1 has an eventId that is not non-empty base64\.$"),
    "no eventType": (_element(9, eventType=None), "missing_event_type", r"^Event 1 has no eventType \(or event_type\)\.$"),
    "year 2300": (_element(9, timestamp="2300-01-01T00:00:00Z"), "timestamp_out_of_range", r"^Event 1 has timestamp '2300-01-01T00:00:00Z', outside the range of int64 nanoseconds since 1970 \(years 1677 to 2262\)\.$"),
    "year 1600": (_element(9, timestamp="1600-01-01T00:00:00Z"), "timestamp_out_of_range", r"^Event 1 has timestamp .*"),
    "transition in 2300": (
        dict(s.task_lifecycle(9, s.TASK_ID, 0, [("RUNNING", "2300-01-01T00:00:00Z")]), timestamp=TS),
        "timestamp_out_of_range", r"^Event 1 has a state transition \(0\) at '2300-01-01T00:00:00Z', outside .*",
    ),
    "attempt past int64": (
        _element(9, taskLifecycleEvent=dict(_element(9)["taskLifecycleEvent"], taskAttempt=str(2**70))),
        "integer_out_of_range", r"^Event 1 has an attempt number .*",
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "reason", "message"), BAD_ELEMENTS.values(), ids=BAD_ELEMENTS.keys()
)
async def test_a_bad_event_is_refused_alone(nursery, tmp_path, bad, reason, message):
    """The good events of the batch are stored; the bad one is named in a plain 200."""
    with trio.fail_after(DEADLINE):
        collector, url = await start_collector(nursery, tmp_path)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/", content=orjson.dumps([_element(1), bad, _element(2)]))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["inserted"], body["duplicates"]) == (2, 0)
        [refusal] = body["refused"]
        assert (refusal["index"], refusal["reason"]) == (1, reason)
        assert re.match(message, refusal["message"]), refusal
        assert stored(tmp_path) == 2
        stats = collector.statistics()
        assert (stats.refused_events, stats.refused_by_reason) == (1, {reason: 1})
        assert stats.rejected_requests == 0


async def test_unpadded_base64_ids_are_accepted(nursery, tmp_path):
    """protobuf's JSON parser takes unpadded base64, so the store does too (same event)."""
    with trio.fail_after(DEADLINE):
        _, url = await start_collector(nursery, tmp_path)
        padded = _element(1)
        unpadded = dict(padded, eventId=padded["eventId"].rstrip("="))
        assert unpadded["eventId"] != padded["eventId"]
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post("/", content=orjson.dumps([unpadded]))
            again = await client.post("/", content=orjson.dumps([padded]))
        assert first.json() == {"inserted": 1, "duplicates": 0, "refused": []}
        assert again.json() == {"inserted": 0, "duplicates": 1, "refused": []}


async def test_a_locked_database_gets_503_and_one_log_line(nursery, tmp_path, caplog):
    import sqlite3

    with trio.fail_after(DEADLINE):
        collector, url = await start_collector(nursery, tmp_path)
        blocker = sqlite3.connect(tmp_path / "events.db", isolation_level=None, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            collector._store._conn.execute("PRAGMA busy_timeout=0")
            async with httpx.AsyncClient(base_url=url) as client:
                answers = [
                    await client.post("/", content=orjson.dumps([_element(n)])) for n in (1, 2)
                ]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert [a.status_code for a in answers] == [503, 503]
        assert answers[0].headers["retry-after"] == "1"
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.post("/", content=orjson.dumps([_element(1)]))).status_code == 200
    records = [r for r in caplog.records if r.name == "trio_events.store.collector"]
    assert [r.levelname for r in records] == ["ERROR", "WARNING"], records
    assert not any(r.exc_info for r in caplog.records)
    assert collector.statistics().unavailable_requests == 2


async def test_http_layer_refusals_are_counted(nursery, tmp_path):
    with trio.fail_after(DEADLINE):
        collector, url = await start_collector(nursery, tmp_path, max_body_bytes=100)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/", content=b"[" + b" " * 200 + b"]")
        assert response.status_code == 413
        assert collector.statistics().rejected_by_status == {413: 1}
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
        assert camel.json() == {"inserted": 3, "duplicates": 0, "refused": []}
        assert snake.json() == {"inserted": 1, "duplicates": 0, "refused": []}
        assert again.json() == {
            "inserted": 0,
            "duplicates": 3,
            "refused": [],
        }  # same ids, other spelling
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
                assert response.json() == {"inserted": 1, "duplicates": 0, "refused": []}, i
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
        assert (response.status_code, response.json()) == (
            200,
            {"inserted": 0, "duplicates": 0, "refused": []},
        )


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
        "Stopped: 3 events stored, 0 duplicates ignored, 0 requests rejected, 0 events refused, "
        "0 requests answered 503.",
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
