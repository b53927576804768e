"""Rows in the shape of Ray 2.60's state API (``ray.util.state.common``), from the history.

Each function returns the dict Ray's dashboard puts in ``ListApiResponse.result`` for one
resource, with every column of the resource's schema (``TaskState``, ``ActorState``,
``NodeState``, ``WorkerState``, ``PlacementGroupState``, ``JobState``). Columns our events
cannot know are ``None`` (or Ray's "not set" value where its schema wants a value); the list
is in docs/history.md.
"""

from __future__ import annotations

from typing import Final

from trio_events.store._history_index import HistoryIndex, func_or_class_name, task_name
from trio_events.store._history_state import TASK_STATE_RANK, Entity, TaskAttempt, task_ms
from trio_events.store._ray_json import JsonObject, child, children, field, id_hex, integer, text

Row = dict[str, object]

TASK_COLUMNS: Final = (
    "task_id",
    "attempt_number",
    "name",
    "state",
    "job_id",
    "actor_id",
    "type",
    "func_or_class_name",
    "parent_task_id",
    "node_id",
    "worker_id",
    "worker_pid",
    "error_type",
)
TASK_DETAIL_COLUMNS: Final = (
    "language",
    "required_resources",
    "runtime_env_info",
    "placement_group_id",
    "events",
    "profiling_data",
    "creation_time_ms",
    "start_time_ms",
    "end_time_ms",
    "task_log_info",
    "error_message",
    "is_debugger_paused",
    "call_site",
    "label_selector",
    "fallback_strategy",
)


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000


def _nonempty(value: str) -> str | None:
    return value or None


def _map(obj: JsonObject, name: str) -> dict[str, object]:
    value = field(obj, name)
    return dict(value) if isinstance(value, dict) else {}


def task_row(index: HistoryIndex, attempt: TaskAttempt, detail: bool) -> Row:
    definition = attempt.definition or {}
    row: Row = {
        "task_id": attempt.task_id,
        "attempt_number": attempt.attempt,
        "name": task_name(attempt),
        "state": attempt.state,
        "job_id": attempt.job_id,
        "actor_id": _nonempty(id_hex(field(definition, "actor_id"))),
        "type": attempt.task_type or "NORMAL_TASK",
        "func_or_class_name": func_or_class_name(attempt),
        "parent_task_id": id_hex(field(definition, "parent_task_id")),
        "node_id": _nonempty(attempt.node_id),
        "worker_id": _nonempty(attempt.worker_id),
        "worker_pid": attempt.worker_pid or None,
        "error_type": _nonempty(attempt.error_type),
    }
    if not detail:
        return row
    creation, start, end = task_ms(attempt)
    runtime_env = text(definition, "serialized_runtime_env")
    row.update(
        {
            "language": text(definition, "language") or None,
            "required_resources": _map(definition, "required_resources"),
            "runtime_env_info": {"serialized_runtime_env": runtime_env} if runtime_env else None,
            "placement_group_id": _nonempty(id_hex(field(definition, "placement_group_id"))),
            "events": [
                {"state": state, "created_ms": ts // 1_000_000}
                for state, ts in sorted(
                    attempt.states.items(), key=lambda item: TASK_STATE_RANK.get(item[0], 99)
                )
            ],
            "profiling_data": profiling_data(attempt),
            "creation_time_ms": creation,
            "start_time_ms": start,
            "end_time_ms": end,
            "task_log_info": _task_log_info(attempt),
            "error_message": _nonempty(attempt.error_message),
            "is_debugger_paused": attempt.lifecycle_extra.get("is_debugger_paused"),
            "call_site": _nonempty(text(definition, "call_site")),
            "label_selector": _map(definition, "label_selector"),
            "fallback_strategy": None,
        }
    )
    return row


def _task_log_info(attempt: TaskAttempt) -> dict[str, object] | None:
    info = attempt.lifecycle_extra.get("task_log_info")
    if not isinstance(info, dict):
        return None
    result: dict[str, object] = {}
    for name in ("stdout_file", "stderr_file"):
        if text(info, name):
            result[name] = text(info, name)
    for name in ("stdout_start", "stdout_end", "stderr_start", "stderr_end"):
        value = integer(info, name)
        if value is not None:
            result[name] = value
    return result


def profiling_data(attempt: TaskAttempt) -> dict[str, object]:
    """Ray's ``profiling_data``: one component with its events, times in milliseconds."""
    if not attempt.profile:
        return {}
    first = attempt.profile[0]
    events = []
    for profile in attempt.profile:
        for entry in children(profile, "events"):
            extra_text = text(entry, "extra_data")
            events.append(
                {
                    "event_name": text(entry, "event_name"),
                    "start_time": (integer(entry, "start_time") or 0) / 1e6,
                    "end_time": (integer(entry, "end_time") or 0) / 1e6,
                    "extra_data": _extra(extra_text),
                }
            )
    return {
        "component_type": text(first, "component_type"),
        "component_id": id_hex(field(first, "component_id")),
        "node_ip_address": text(first, "node_ip_address"),
        "events": events,
    }


def _extra(extra_text: str) -> dict[str, object]:
    import orjson

    if not extra_text:
        return {}
    try:
        value = orjson.loads(extra_text)
    except orjson.JSONDecodeError:
        return {"extra_data": extra_text}
    return value if isinstance(value, dict) else {"extra_data": value}


def _death_cause(details: JsonObject) -> dict[str, object] | None:
    cause = child(details, "death_cause")
    return dict(cause) if cause is not None else None


def actor_row(index: HistoryIndex, actor: Entity, detail: bool) -> Row:
    definition = actor.definition or {}
    history = actor.history()
    last = history[-1].details if history else {}
    alive = next((t.details for t in reversed(history) if t.state == "ALIVE"), last)
    restarts = [t for t in history if t.state == "RESTARTING"]
    death = _death_cause(last) if actor.state == "DEAD" else None
    if actor.reconciled is not None and death is None:
        death = {"actor_died_error_context": {"error_message": actor.reconciled[2]}}
    row: Row = {
        "actor_id": actor.entity_id,
        "class_name": text(definition, "class_name"),
        "state": actor.state or "DEPENDENCIES_UNREADY",
        "job_id": id_hex(field(definition, "job_id")),
        "name": text(definition, "name"),
        "node_id": _nonempty(id_hex(field(alive, "node_id"))),
        "pid": integer(alive, "pid") or 0,
        "ray_namespace": text(definition, "ray_namespace"),
    }
    if detail:
        row.update(
            {
                "serialized_runtime_env": text(definition, "serialized_runtime_env"),
                "required_resources": _map(definition, "required_resources"),
                "death_cause": death,
                "is_detached": field(definition, "is_detached") is True,
                "placement_group_id": _nonempty(id_hex(field(definition, "placement_group_id"))),
                "repr_name": text(alive, "repr_name"),
                "num_restarts": len(restarts),
                "num_restarts_due_to_lineage_reconstruction": sum(
                    text(t.details, "restart_reason") == "LINEAGE_RECONSTRUCTION" for t in restarts
                ),
                "num_restarts_due_to_node_preemption": sum(
                    text(t.details, "restart_reason") == "NODE_PREEMPTION" for t in restarts
                ),
                "call_site": _nonempty(text(definition, "call_site")),
                "label_selector": _map(definition, "label_selector"),
                "fallback_strategy": None,
            }
        )
    return row


def node_row(index: HistoryIndex, node: Entity, detail: bool) -> Row:
    definition = node.definition or {}
    history = node.history()
    last = history[-1].details if history else {}
    resources = next(
        (_map(t.details, "resources") for t in history if field(t.details, "resources")), {}
    )
    death = child(last, "death_info") if node.state == "DEAD" else None
    row: Row = {
        "node_id": node.entity_id,
        "node_ip": text(definition, "node_ip_address"),
        # Ray gives the head node the resource node:__internal_head__ (a convention, not a field).
        "is_head_node": "node:__internal_head__" in resources,
        "state": node.state or "ALIVE",
        "state_message": (text(death, "reason_message") or text(death, "reason"))
        if death
        else None,
        "node_name": text(definition, "node_name") or text(definition, "node_ip_address"),
        "resources_total": resources,
        "labels": _map(definition, "labels"),
    }
    if detail:
        from trio_events.store._ray_json import timestamp_ns

        row["start_time_ms"] = _ms(
            timestamp_ns(field(definition, "start_timestamp")) or node.first_ns("ALIVE")
        )
        row["end_time_ms"] = _ms(node.first_ns("DEAD"))
    return row


def worker_row(index: HistoryIndex, worker: Entity, detail: bool) -> Row:
    definition = worker.definition or {}
    node_id = id_hex(field(definition, "node_id"))
    node = index.entity("node", worker.session, node_id)
    history = worker.history()
    dead = next((t.details for t in history if t.state == "DEAD"), None)
    death = child(dead, "death_info") if dead is not None else None
    times = {
        name: 0
        for name in (
            "worker_launch_time_ms",
            "worker_launched_time_ms",
            "start_time_ms",
            "end_time_ms",
        )
    }
    for transition in history:
        for name in times:
            times[name] = times[name] or (integer(transition.details, name) or 0)
    row: Row = {
        "worker_id": worker.entity_id,
        "is_alive": dead is None,
        "worker_type": text(definition, "worker_type") or "WORKER",
        "exit_type": (text(death, "exit_type") or "SYSTEM_ERROR") if death is not None else None,
        "node_id": node_id,
        "ip": text(node.definition or {}, "node_ip_address") if node is not None else "",
        "pid": integer(definition, "pid") or 0,
    }
    if detail:
        row.update(times)
        row["exit_detail"] = text(death, "exit_detail") if death is not None else None
        row["debugger_port"] = None
        row["num_paused_threads"] = None
    return row


def placement_group_row(index: HistoryIndex, group: Entity, detail: bool) -> Row:
    definition = group.definition or {}
    row: Row = {
        "placement_group_id": group.entity_id,
        "name": text(definition, "name"),
        "creator_job_id": id_hex(field(definition, "creator_job_id")),
        "state": group.state or "PENDING",
    }
    if detail:
        last = group.last()
        placements = {
            integer(p, "bundle_index") or 0: id_hex(field(p, "node_id"))
            for t in group.history()
            for p in children(t.details, "bundle_placements")
        }
        bundles = []
        for bundle in children(definition, "bundles"):
            number = integer(bundle, "bundle_index") or 0
            bundles.append(
                {
                    "bundle_id": number,
                    "node_id": placements.get(number) or None,
                    "unit_resources": _map(bundle, "unit_resources"),
                    "label_selector": _map(bundle, "label_selector"),
                }
            )
        row.update(
            {
                "bundles": bundles,
                "is_detached": field(definition, "is_detached") is True,
                "stats": {
                    "scheduling_state": text(last.details, "scheduling_state") or "QUEUED",
                    "scheduling_attempt": integer(last.details, "scheduling_attempt") or 0,
                }
                if last is not None
                else None,
                "topology_strategy": {},
                "topology_assignments": {},
            }
        )
    return row


_SUBMISSION_STATES: Final = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")


def job_rows(index: HistoryIndex, session: str | None) -> list[Row]:
    """Driver jobs (``type: DRIVER``) and submission jobs (``SUBMISSION``), as Ray lists them."""
    rows: list[Row] = []
    for job in index.entities("job", session):
        definition = job.definition or {}
        node = index.entity("node", job.session, id_hex(field(definition, "driver_node_id")))
        finished = job.first_ns("FINISHED")
        rows.append(
            {
                "type": "DRIVER",
                "job_id": job.entity_id,
                "submission_id": None,
                "driver_info": {
                    "id": job.entity_id,
                    "node_ip_address": text(node.definition or {}, "node_ip_address")
                    if node
                    else "",
                    "pid": str(integer(definition, "driver_pid") or ""),
                },
                "status": "SUCCEEDED" if finished is not None else "RUNNING",
                "entrypoint": text(definition, "entrypoint"),
                "message": None,
                "error_type": None,
                "start_time": _ms(job.first_ns("CREATED")),
                "end_time": _ms(finished),
                "metadata": _map(child(definition, "config") or {}, "metadata"),
                "runtime_env": None,
                "driver_agent_http_address": None,
                "driver_node_id": _nonempty(id_hex(field(definition, "driver_node_id"))),
                "driver_exit_code": None,
            }
        )
    for submission in index.entities("submission_job", session):
        definition = submission.definition or {}
        last = submission.last()
        details = last.details if last is not None else {}
        state = submission.state if submission.state in _SUBMISSION_STATES else "PENDING"
        terminal = state in ("STOPPED", "SUCCEEDED", "FAILED")
        rows.append(
            {
                "type": "SUBMISSION",
                "job_id": None,
                "submission_id": submission.entity_id,
                "driver_info": None,
                "status": state,
                "entrypoint": text(definition, "entrypoint"),
                "message": _nonempty(text(details, "message")),
                "error_type": _nonempty(text(details, "error_type")),
                "start_time": _ms(submission.first_ns("PENDING") or submission.first_ns("RUNNING")),
                "end_time": _ms(last.ts_ns) if terminal and last is not None else None,
                "metadata": _map(child(definition, "config") or {}, "metadata"),
                "runtime_env": None,
                "driver_agent_http_address": _nonempty(text(details, "driver_agent_http_address")),
                "driver_node_id": _nonempty(id_hex(field(details, "driver_node_id"))),
                "driver_exit_code": integer(details, "driver_exit_code"),
            }
        )
    return rows
