"""The PostgreSQL store on a real server: several collectors, an unreachable database, schema
versions, retention, and the history reader following concurrent writers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import trio

from tests import ray_event_samples as s
from tests.pg import Cluster
from trio_events._cli._collect import run_collect
from trio_events._cli._history import run_history
from trio_events._cli._main import parse
from trio_events._cli._values import duration as parse_duration
from trio_events.store import Collector, CollectorConfig
from trio_events.store._backend import StoreUnavailableError, describe, open_reader
from trio_events.store._pg_schema import SCHEMA_VERSION, NewerSchemaError, migrate
from trio_events.store._postgres import PostgresOptions, PostgresReader, PostgresStore, redact

T = "2025-10-24T21:12:{:02d}Z"


def batch(first: int, size: int, session: str = "session_a") -> list[dict[str, Any]]:
    events = []
    for n in range(first, first + size):
        task_id = n.to_bytes(4, "big") + bytes(20)
        event = s.task_lifecycle(n, task_id, 0, [("RUNNING", T.format(n % 60))])
        event["sessionName"] = session
        events.append(event)
    return events


async def post(client: httpx.AsyncClient, port: int, events: list[dict[str, Any]]) -> Any:
    return await client.post(f"http://127.0.0.1:{port}/", content=orjson.dumps(events))


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


async def test_collectors_share_one_database_and_dedup_across_them(pg_url: str, nursery) -> None:
    ports = [
        await nursery.start(Collector(CollectorConfig(pg_url, "127.0.0.1", 0)).run)
        for _ in range(2)
    ]
    batches = [batch(i * 200, 200) for i in range(10)]
    replies: list[dict[str, int]] = []

    async def send(port: int, events: list[dict[str, Any]]) -> None:
        async with httpx.AsyncClient() as client:
            response = await post(client, port, events)
        assert response.status_code == 200
        replies.append(response.json())

    with trio.fail_after(60):
        async with trio.open_nursery() as senders:
            # Every batch to both collectors at once: a sender retrying on the other one.
            for events in batches:
                for port in ports:
                    senders.start_soon(send, port, events)
    assert sum(r["inserted"] for r in replies) == 2000
    assert sum(r["duplicates"] for r in replies) == 2000
    assert count(pg_url) == 2000


async def test_unreachable_database_is_503_with_retry_after_and_recovers(nursery) -> None:
    cluster = Cluster(crash_safe=True)  # its own server, to crash and start again
    try:
        url = cluster.new_database()
        options = CollectorConfig(url, "127.0.0.1", 0)
        collector = Collector(options)
        port = await nursery.start(collector.run)
        history_args = parse(
            ["history", "--store", url, "--listen", "127.0.0.1:0", "--refresh", "0"], {}
        )
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await post(client, port, batch(0, 10))).status_code == 200
            history = await nursery.start(run_history, history_args)
            tasks_url = f"http://127.0.0.1:{history}/api/v0/tasks"
            assert (await client.get(tasks_url)).json()["data"]["result"]["total"] == 10
            await trio.to_thread.run_sync(cluster.stop)
            refused = await post(client, port, batch(10, 10))
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "2"
            assert "is unavailable" in refused.text
            assert "127.0.0.1" in refused.text
            # The history server answers from what it has read while the database is down.
            assert (await client.get(tasks_url)).json()["data"]["result"]["total"] == 10
            await trio.to_thread.run_sync(cluster.start)
            # The sender's retry of the refused batch is stored once the server is back.
            again = await post(client, port, batch(10, 10))
            assert again.status_code == 200, again.text
            assert again.json() == {"inserted": 10, "duplicates": 0, "refused": []}
            # ... and the history server reconnects and follows.
            assert (await client.get(tasks_url)).json()["data"]["result"]["total"] == 20
        assert count(url) == 20
        stats = collector.statistics()
        assert (stats.accepted, stats.unavailable_requests) == (20, 1)
    finally:
        cluster.destroy()


def test_open_fails_in_one_sentence_when_nothing_listens(pg_cluster: Cluster) -> None:
    url = f"postgresql://trio:secret@127.0.0.1:{pg_cluster.port + 1}/nowhere"
    options = PostgresOptions(connect_timeout=1)
    with pytest.raises(StoreUnavailableError, match=r"at postgresql://trio:\*\*\*@127") as raised:
        PostgresStore.open_sync(url, options)
    assert "secret" not in str(raised.value)
    with pytest.raises(StoreUnavailableError):
        open_reader(url)


def test_an_older_schema_is_upgraded_in_place(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert migrate(conn, "here", target=1) == 0
        conn.execute(
            "INSERT INTO events (event_id, event_type, source_type, severity, timestamp, "
            "session_name, node_id, entity_name, error_type, error_message, received_ns, json) "
            "VALUES ('\\x01', 'T', 'S', 'INFO', '', 'old_session', '', '', '', '', 42, '{}')"
        )
        conn.commit()
    store = PostgresStore.open_sync(pg_url, PostgresOptions(pool_size=1))
    try:
        result = store.insert_batch_sync(batch(0, 3))
        assert (result.inserted, result.duplicates) == (3, 0)
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SELECT version FROM trio_events_schema").fetchall()
        sessions = conn.execute("SELECT session_name, last_received_ns FROM sessions").fetchall()
    assert version == [(SCHEMA_VERSION,)]
    assert ("old_session", 42) in sessions  # the migration filled the new table
    assert count(pg_url) == 4


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresStore.open_sync(pg_url, PostgresOptions(pool_size=1)).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE trio_events_schema SET version = 99")
    sentence = f"has schema version 99, newer than this trio-events understands \\({SCHEMA_VERSION}"
    with pytest.raises(NewerSchemaError, match=sentence):
        PostgresStore.open_sync(pg_url, PostgresOptions(pool_size=1))
    with pytest.raises(ValueError, match=sentence):
        open_reader(pg_url)


def test_reader_refuses_a_database_without_a_store(pg_url: str) -> None:
    with pytest.raises(ValueError, match="has no trio-events event store yet"):
        open_reader(pg_url)


def test_history_reader_picks_up_a_write_that_commits_late(pg_url: str) -> None:
    store = PostgresStore.open_sync(pg_url, PostgresOptions(pool_size=2))
    try:
        store.insert_batch_sync(batch(0, 2))
        reader = PostgresReader(pg_url)
        assert len(reader.read_new(100)) == 2
        with psycopg.connect(pg_url) as slow:
            # A writer takes the next sequence number and has not committed yet...
            slow.execute(
                "INSERT INTO events (event_id, event_type, source_type, severity, timestamp, "
                "session_name, node_id, entity_name, error_type, error_message, received_ns, "
                "json) VALUES ('\\x01', 'LATE', '', '', '', '', '', '', '', '', 1, '{}')"
            )
            store.insert_batch_sync(batch(2, 1))  # ... while a later one commits.
            assert [row[0] for row in reader.read_new(100)] == ["TASK_LIFECYCLE_EVENT"]
            assert reader.read_new(100) == []
            slow.commit()
        assert [row[0] for row in reader.read_new(100)] == ["LATE"]  # found on the next look
        assert reader.read_new(100) == []
        assert reader.read_new(100) == []
        reader.close()
    finally:
        store.close()


async def test_collector_retention_deletes_old_sessions(pg_url: str, nursery) -> None:
    store = PostgresStore.open_sync(pg_url, PostgresOptions(pool_size=1))
    store.insert_batch_sync(batch(0, 5, session="old"))
    store.insert_batch_sync(batch(5, 5, session="new"))
    store.close()
    day_ago = time.time_ns() - 86400 * 10**9
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "UPDATE sessions SET last_received_ns = %s WHERE session_name = 'old'", (day_ago,)
        )
    collector = Collector(CollectorConfig(pg_url, "127.0.0.1", 0, retention=3600))
    await nursery.start(collector.run)
    with trio.fail_after(30):
        while not collector.pruned_sessions:  # noqa: ASYNC110 (set by a thread-backed task)
            await trio.sleep(0.05)
    with psycopg.connect(pg_url) as conn:
        left = conn.execute("SELECT DISTINCT session_name FROM events").fetchall()
        transitions = conn.execute("SELECT count(*) FROM transitions").fetchall()
    assert left == [("new",)]
    assert transitions == [(5,)]


async def test_collect_command_takes_a_postgres_url(
    pg_cluster: Cluster, pg_url: str, capsys
) -> None:
    secret_url = pg_url.replace("trio@", "trio:hunter2@")
    args = parse(
        ["collect", "--store", secret_url, "--listen", "127.0.0.1:0", "--retention", "7d"], {}
    )
    assert args.retention == 7 * 86400
    async with trio.open_nursery() as nursery:
        port = await nursery.start(run_collect, args)
        async with httpx.AsyncClient() as client:
            assert (await post(client, port, batch(0, 4))).status_code == 200
        nursery.cancel_scope.cancel()
    out = capsys.readouterr().out
    assert f"Storing events in {redact(secret_url)};" in out
    assert "hunter2" not in out
    assert "4 events stored" in out


def test_durations_and_names() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("2w") == 14 * 86400
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="at least 1m"):
        parse_duration("5s")
    assert describe("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert describe("/tmp/e.db") == "/tmp/e.db"
