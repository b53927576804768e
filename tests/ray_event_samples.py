"""Hand-written Ray events shaped like MessageToJson output (Ray 2.60, camelCase by default).

IDs have Ray's sizes (task 24 bytes, job 4, actor 16, node/worker/event 28) so hex and base64
forms look like the real thing.
"""

from __future__ import annotations

import base64
import re
from typing import Any

Event = dict[str, Any]

SESSION = "session_2025-10-24_14-12-05_804800_55420"
JOB_ID = bytes.fromhex("01000000")
NODE_ID = bytes.fromhex("d327d15f57b1f95b5c0be4c55e35dc81eb1da6713033bebea44013ad")
WORKER_ID = bytes.fromhex("84cc9b08d608162fbfc889d862175cfaa1fcc8c17ae63ffcfae0939b")
TASK_ID = bytes.fromhex("c8ef45ccd0112571ffffffffffffffffffffffff01000000")
TASK_ID_2 = bytes.fromhex("16310a0f0a45af5cffffffffffffffffffffffff01000000")
ACTOR_ID = bytes.fromhex("d0016d9e0717b44a31c2a98901000000")

# Map fields keep their keys in both styles; every other key is a field name.
_MAP_FIELDS = frozenset(
    {"requiredResources", "labels", "refIds", "labelSelector", "metadata", "resources"}
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def event_id(n: int) -> str:
    return b64(n.to_bytes(28, "big"))


def base_event(n: int, event_type: str, timestamp: str, source: str = "CORE_WORKER") -> Event:
    return {
        "eventId": event_id(n),
        "sourceType": source,
        "eventType": event_type,
        "timestamp": timestamp,
        "severity": "INFO",
        "sessionName": SESSION,
        "message": "",
        "nodeId": b64(NODE_ID),
    }


def task_definition(n: int, task_id: bytes, attempt: int, name: str, timestamp: str) -> Event:
    event = base_event(n, "TASK_DEFINITION_EVENT", timestamp)
    event["taskDefinitionEvent"] = {
        "taskId": b64(task_id),
        "taskFunc": {
            "pythonFunctionDescriptor": {
                "moduleName": "train",
                "functionName": name,
                "functionHash": "37ddb110c0514b049bd4db5ab934627b",
                "className": "",
            }
        },
        "taskName": name,
        "requiredResources": {"CPU": 1.0},
        "serializedRuntimeEnv": "{}",
        "jobId": b64(JOB_ID),
        "parentTaskId": b64(b"\xff" * 20 + JOB_ID),
        "placementGroupId": "",
        "taskAttempt": attempt,
        "taskType": "NORMAL_TASK",
        "language": "PYTHON",
        "refIds": {},
    }
    return event


def task_lifecycle(
    n: int,
    task_id: bytes,
    attempt: int,
    transitions: list[tuple[str, str]],
    *,
    error: tuple[str, str] | None = None,
) -> Event:
    event = base_event(n, "TASK_LIFECYCLE_EVENT", max(ts for _, ts in transitions))
    payload: Event = {
        "taskId": b64(task_id),
        "taskAttempt": attempt,
        "stateTransitions": [{"state": s, "timestamp": ts} for s, ts in transitions],
        "nodeId": b64(NODE_ID),
        "workerId": b64(WORKER_ID),
        "workerPid": 4242,
        "jobId": b64(JOB_ID),
    }
    if error is not None:
        payload["rayErrorInfo"] = {"errorType": error[0], "errorMessage": error[1]}
    event["taskLifecycleEvent"] = payload
    return event


def actor_lifecycle(n: int, transitions: list[Event]) -> Event:
    event = base_event(n, "ACTOR_LIFECYCLE_EVENT", transitions[-1]["timestamp"], "GCS")
    event["actorLifecycleEvent"] = {"actorId": b64(ACTOR_ID), "stateTransitions": transitions}
    return event


def actor_definition(n: int, timestamp: str) -> Event:
    event = base_event(n, "ACTOR_DEFINITION_EVENT", timestamp, "GCS")
    event["actorDefinitionEvent"] = {
        "actorId": b64(ACTOR_ID),
        "jobId": b64(JOB_ID),
        "name": "actor-test",
        "rayNamespace": "bd2ad7f8-650b-495c-b709-55d4c8a7d09f",
        "serializedRuntimeEnv": "{}",
        "className": "Trainer",
        "isDetached": False,
        "requiredResources": {},
        "placementGroupId": "",
        "labelSelector": {},
    }
    return event


def job_lifecycle(n: int, transitions: list[tuple[str, str]]) -> Event:
    event = base_event(n, "DRIVER_JOB_LIFECYCLE_EVENT", transitions[-1][1], "GCS")
    event["driverJobLifecycleEvent"] = {
        "jobId": b64(JOB_ID),
        "stateTransitions": [{"state": s, "timestamp": ts} for s, ts in transitions],
    }
    return event


def node_definition(n: int, timestamp: str) -> Event:
    event = base_event(n, "NODE_DEFINITION_EVENT", timestamp, "GCS")
    event["nodeDefinitionEvent"] = {
        "nodeId": b64(NODE_ID),
        "nodeIpAddress": "127.0.0.1",
        "labels": {"ray.io/node-id": NODE_ID.hex()},
        "startTimestamp": timestamp,
        "hostname": "head-0",
        "nodeName": "head",
    }
    return event


def worker_lifecycle(n: int, transitions: list[Event]) -> Event:
    event = base_event(n, "WORKER_LIFECYCLE_EVENT", transitions[-1]["timestamp"], "RAYLET")
    event["workerLifecycleEvent"] = {
        "workerId": b64(WORKER_ID),
        "jobId": b64(JOB_ID),
        "stateTransitions": transitions,
    }
    return event


def to_snake(value: Any) -> Any:
    """The same event as ``preserving_proto_field_name=True`` would print it."""
    if isinstance(value, list):
        return [to_snake(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key): (
            item if key in _MAP_FIELDS else to_snake(item)
        )
        for key, item in value.items()
    }
