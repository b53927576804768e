from __future__ import annotations

import base64
import contextlib
import re
import sqlite3

import pytest
import trio

from tests import ray_event_samples as s
from trio_events.store._ray_json import entity_of, id_candidates, timestamp_ns
from trio_events.store._sqlite import EventStore, InsertResult, connect_read_only

TS = "2025-06-30T16:50:30.130457542Z"


def _rows(path, sql):
    with contextlib.closing(connect_read_only(path)) as conn:
        return conn.execute(sql).fetchall()


def test_insert_batch_dedups_within_and_across_batches(tmp_path):
    db = tmp_path / "e.db"
    event = s.task_lifecycle(1, s.TASK_ID, 2, [("RUNNING", TS), ("FINISHED", TS)])
    with EventStore(db) as store:
        assert store.insert_batch_sync([event, event]) == InsertResult(1, 1)
        # The same id in URL-safe base64 is the same event.
        same = dict(event, eventId=event["eventId"].replace("+", "-").replace("/", "_"))
        assert store.insert_batch_sync([same, s.to_snake(event)]) == InsertResult(0, 2)
        assert store.count_sync() == 1
    [row] = _rows(db, "SELECT event_type, source_type, timestamp, timestamp_ns, session_name, "
                      "node_id, entity_kind, entity_id, entity_attempt FROM events")  # fmt: skip
    assert row == (
        "TASK_LIFECYCLE_EVENT", "CORE_WORKER", TS, 1751302230130457542, s.SESSION,
        s.NODE_ID.hex(), "task", s.TASK_ID.hex(), 2,
    )  # fmt: skip
    assert _rows(db, "SELECT seq, state FROM transitions ORDER BY seq") == [
        (0, "RUNNING"),
        (1, "FINISHED"),
    ]


def test_an_invalid_element_is_refused_alone(tmp_path):
    good = s.task_lifecycle(1, s.TASK_ID, 0, [("RUNNING", TS)])
    late = s.task_lifecycle(3, s.TASK_ID, 0, [("RUNNING", TS)])
    late["timestamp"] = "2300-01-01T00:00:00Z"  # valid protobuf and RFC 3339, past int64 ns
    with EventStore(tmp_path / "e.db") as store:
        result = store.insert_batch_sync([good, {"eventId": s.event_id(2)}, late, "x"])
        assert (result.inserted, result.duplicates) == (1, 0)
        assert [(r.index, r.reason) for r in result.refused] == [
            (1, "missing_event_type"),
            (2, "timestamp_out_of_range"),
            (3, "not_an_object"),
        ]
        assert result.refused[0].message == "Event 1 has no eventType (or event_type)."
        assert result.refused[1].event_id == late["eventId"]
        assert result.refused_by_reason() == {
            "missing_event_type": 1,
            "timestamp_out_of_range": 1,
            "not_an_object": 1,
        }
        assert store.count_sync() == 1


def test_every_refusal_reason_never_raises(tmp_path):
    """Whatever JSON values arrive, the store answers with a result, never an exception."""
    odd: list[object] = [None, 1, [], {"eventId": 7}, {"eventId": "AQ==", "eventType": 7},
           {"eventId": "AQ", "eventType": "X", "timestamp": "9999-12-31T23:59:59.999999999Z"},
           {"eventId": "QUFB" * 100, "eventType": "X"},
           {"eventId": "AQ==", "eventType": "X", "timestamp": "0001-01-01T00:00:00Z"}]  # fmt: skip
    with EventStore(tmp_path / "e.db") as store:
        result = store.insert_batch_sync(odd)
    assert result.inserted == 0
    assert len(result.refused) == len(odd)
    assert {r.reason for r in result.refused} == {
        "not_an_object", "missing_event_id", "missing_event_type", "timestamp_out_of_range",
        "invalid_event_id",
    }  # fmt: skip


async def test_async_insert_runs_in_a_thread(tmp_path):
    store = await trio.to_thread.run_sync(EventStore, tmp_path / "e.db")
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for n in range(10):  # concurrent callers are serialized, none is lost
                    batch = [s.actor_definition(n * 100 + i, TS) for i in range(50)]
                    nursery.start_soon(store.insert_batch, batch)
            assert await store.insert_batch([s.actor_definition(0, TS)]) == InsertResult(0, 1)
    finally:
        await store.aclose()
    assert _rows(tmp_path / "e.db", "SELECT count(*) FROM events") == [(500,)]
    with pytest.raises(RuntimeError, match=r"^This EventStore is closed; .*\.$"):
        store.insert_batch_sync([])
    store.close()  # idempotent


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "e.db"
    EventStore(db).close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version=99")
    message = re.escape(f"The event store {str(db)!r} has schema version 99, newer than")
    with pytest.raises(ValueError, match=f"^{message}"):
        EventStore(db)


def test_read_only_connection_needs_an_existing_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        connect_read_only(tmp_path / "missing.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(ValueError, match=r"is not a trio-events event store\.$"):
        connect_read_only(tmp_path / "other.db")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    ("event_type", "payload_key", "payload", "expected"),
    [
        ("TASK_PROFILE_EVENT", "taskProfileEvents",
         {"taskId": s.b64(s.TASK_ID), "attemptNumber": 3, "profileEvents": {"events": []}},
         ("task", s.TASK_ID.hex(), 3)),
        ("ACTOR_TASK_DEFINITION_EVENT", "actorTaskDefinitionEvent",
         {"taskId": s.b64(s.TASK_ID), "taskAttempt": 1, "actorTaskName": "A.f"}, ("task", s.TASK_ID.hex(), 1)),
        ("DRIVER_JOB_DEFINITION_EVENT", "driverJobDefinitionEvent", {"jobId": "AQAAAA==", "driverPid": "59360"},
         ("job", "01000000", None)),
        ("NODE_LIFECYCLE_EVENT", "nodeLifecycleEvent", {"nodeId": s.b64(s.NODE_ID)}, ("node", s.NODE_ID.hex(), None)),
        ("WORKER_DEFINITION_EVENT", "workerDefinitionEvent", {"workerId": s.b64(s.WORKER_ID)},
         ("worker", s.WORKER_ID.hex(), None)),
        ("PLACEMENT_GROUP_LIFECYCLE_EVENT", "placementGroupLifecycleEvent", {"placementGroupId": "AAECAw=="},
         ("placement_group", "00010203", None)),
        ("SUBMISSION_JOB_LIFECYCLE_EVENT", "submissionJobLifecycleEvent", {"submissionId": "raysubmit_XYZ"},
         ("submission_job", "raysubmit_XYZ", None)),
        # An unknown (newer) event type is still attributed by its payload.
        ("SOME_FUTURE_EVENT", "actorLifecycleEvent", {"actorId": s.b64(s.ACTOR_ID)}, ("actor", s.ACTOR_ID.hex(), None)),
    ],
)  # fmt: skip
def test_entity_of_every_kind(event_type, payload_key, payload, expected):
    entity = entity_of({payload_key: payload}, event_type)
    assert entity is not None
    assert (entity.kind, entity.id, entity.attempt) == expected
    snake = entity_of(s.to_snake({payload_key: payload}), event_type)
    assert snake is not None
    assert (snake.kind, snake.id, snake.attempt) == expected


def test_platform_event_has_no_entity():
    assert entity_of({"platformEvent": {"objectKind": "Pod"}}, "PLATFORM_EVENT") is None


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:01Z", 1_000_000_000),
        ("2025-06-30T16:50:30.130457542Z", 1751302230130457542),
        ("2025-06-30T16:50:30.130Z", 1751302230130000000),
        ("2025-06-30T18:50:30.130+02:00", 1751302230130000000),
        ("2025-13-30T16:50:30Z", None),
        ("yesterday", None),
        (12, None),
    ],
)
def test_timestamp_ns(text, ns):
    assert timestamp_ns(text) == ns


def test_id_candidates():
    assert id_candidates("0AFtngcXtEoxwqmJAQAAAA==") == (
        s.ACTOR_ID.hex(),
        "0AFtngcXtEoxwqmJAQAAAA==",
    )
    assert id_candidates("D0016D9E") == ("d0016d9e", base64.b64decode("D0016D9E").hex(), "D0016D9E")
    assert id_candidates("raysubmit_1") == ("raysubmit_1",)
