"""Ray 2.60's state API (``/api/v0/...``) answered from the history, for Ray's own CLI and SDK.

Query parameters and the response envelope are Ray's (``ray/dashboard/state_api_utils.py``,
``ray/dashboard/routes.py:rest_response``)::

    {"result": true, "msg": "", "data": {"result": <asdict(ListApiResponse)>}}

``limit`` (default 100, at most 10000), ``detail``, ``exclude_driver`` (default true),
``filter_keys``/``filter_predicates``/``filter_values`` (``=`` and ``!=``, strings compared
case-insensitively, the same filterable columns as Ray) and ``summary_by``. Results are sorted by
id and cut at ``limit`` as Ray does; a bad parameter is a 400 with ``result: false`` and the
reason in ``msg``, which Ray's client raises as ``RayStateApiException``.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Final, final

import attrs
import orjson

from trio_events.store._history_index import HistoryIndex, func_or_class_name, task_name
from trio_events.store._history_rows import (
    TASK_COLUMNS,
    TASK_DETAIL_COLUMNS,
    Row,
    actor_row,
    job_rows,
    node_row,
    placement_group_row,
    task_row,
    worker_row,
)
from trio_events.store._ray_json import field, id_hex, text

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trio_events.store._history_state import Entity, TaskAttempt

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000  # Ray's RAY_MAX_LIMIT_FROM_API_SERVER default
RAY_VERSION: Final = "2.60.0"

Filter = tuple[str, str, str]


@final
class BadRequestError(ValueError):
    """A state API request Ray would refuse; the message is one sentence."""


@final
@attrs.frozen
class ListOptions:
    limit: int = DEFAULT_LIMIT
    detail: bool = False
    exclude_driver: bool = True
    filters: tuple[Filter, ...] = ()
    summary_by: str | None = None


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequestError(f"{name}={value!r} is not a boolean; use true, false, 1 or 0.")


def parse_options(query: str) -> ListOptions:
    """Ray's ``options_from_req`` for a raw query string."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    single = dict(pairs)
    limit_text = single.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(limit_text)
    except ValueError:
        raise BadRequestError(f"limit={limit_text!r} is not a whole number.") from None
    if limit > MAX_LIMIT:
        raise BadRequestError(
            f"Given limit {limit} exceeds the supported limit {MAX_LIMIT}. Use a lower limit."
        )
    keys = [v for k, v in pairs if k == "filter_keys"]
    predicates = [v for k, v in pairs if k == "filter_predicates"]
    values = [v for k, v in pairs if k == "filter_values"]
    if not len(keys) == len(predicates) == len(values):
        raise BadRequestError(
            "filter_keys, filter_predicates and filter_values must be given the same number "
            "of times."
        )
    for predicate in predicates:
        if predicate not in ("=", "!="):
            raise BadRequestError(
                f"Unsupported filter predicate {predicate} is given. Available predicates: =, !=."
            )
    return ListOptions(
        limit=max(limit, 0),
        detail=_bool("detail", single.get("detail", "false")),
        exclude_driver=_bool("exclude_driver", single.get("exclude_driver", "true")),
        filters=tuple((k.lower(), p, v) for k, p, v in zip(keys, predicates, values, strict=True)),
        summary_by=single.get("summary_by"),
    )


def _matches(actual: object, predicate: str, wanted: str) -> bool:
    """Ray's ``do_filter`` comparison of one column value with a filter's text."""
    if isinstance(actual, str):
        equal = actual.lower() == wanted.lower()
    elif isinstance(actual, bool):
        equal = actual == _bool("filter value", wanted)
    elif isinstance(actual, int):
        try:
            equal = actual == int(wanted)
        except ValueError:
            raise BadRequestError(
                f"Invalid filter value {wanted!r} for an integer column; give a whole number."
            ) from None
    else:
        equal = actual == wanted
    return equal if predicate == "=" else not equal


# Filterable task columns (TaskState's filterable=True) read straight off an attempt, so a filter
# over many attempts never builds their rows.
_TASK_GETTERS: Final[dict[str, Callable[[TaskAttempt], object]]] = {
    "task_id": lambda a: a.task_id,
    "attempt_number": lambda a: a.attempt,
    "name": task_name,
    "state": lambda a: a.state,
    "job_id": lambda a: a.job_id,
    "actor_id": lambda a: id_hex(field(a.definition or {}, "actor_id")) or None,
    "type": lambda a: a.task_type or "NORMAL_TASK",
    "func_or_class_name": func_or_class_name,
    "parent_task_id": lambda a: id_hex(field(a.definition or {}, "parent_task_id")),
    "node_id": lambda a: a.node_id or None,
    "worker_id": lambda a: a.worker_id or None,
    "worker_pid": lambda a: a.worker_pid or None,
    "error_type": lambda a: a.error_type or None,
    "language": lambda a: text(a.definition or {}, "language") or None,
    "placement_group_id": lambda a: id_hex(field(a.definition or {}, "placement_group_id")) or None,
    "is_debugger_paused": lambda a: a.lifecycle_extra.get("is_debugger_paused"),
}
FILTERABLE: Final[dict[str, frozenset[str]]] = {
    "tasks": frozenset(_TASK_GETTERS),
    "actors": frozenset(
        (
            "actor_id",
            "class_name",
            "state",
            "job_id",
            "name",
            "node_id",
            "pid",
            "ray_namespace",
            "placement_group_id",
            "repr_name",
        )
    ),
    "nodes": frozenset(("node_id", "node_ip", "is_head_node", "state", "node_name")),
    "workers": frozenset(
        (
            "worker_id",
            "is_alive",
            "worker_type",
            "exit_type",
            "node_id",
            "ip",
            "pid",
            "debugger_port",
            "num_paused_threads",
        )
    ),
    "placement_groups": frozenset(
        ("placement_group_id", "name", "creator_job_id", "state", "is_detached")
    ),
    "jobs": frozenset(("job_id", "type", "status", "submission_id")),
}


def _check_columns(resource: str, filters: Sequence[Filter]) -> None:
    allowed = FILTERABLE[resource]
    for column, _, _ in filters:
        if column not in allowed:
            raise BadRequestError(
                f"The given filter column {column} is not supported. "
                f"Supported filter columns: {sorted(allowed)}"
            )


def _envelope(result: object) -> bytes:
    return orjson.dumps({"result": True, "msg": "", "data": {"result": result}})


def error_body(message: str) -> bytes:
    return orjson.dumps({"result": False, "msg": message, "data": {"result": None}})


def _list_response(result: list[Row], total: int, num_filtered: int) -> dict[str, object]:
    return {
        "total": total,
        "num_after_truncation": total,
        "num_filtered": num_filtered,
        "result": result,
        "partial_failure_warning": "",
        "warnings": None,
    }


def select_tasks(
    index: HistoryIndex, session: str | None, options: ListOptions
) -> tuple[list[TaskAttempt], int, int]:
    """(first ``limit`` matching attempts in task-id order, total, number matching)."""
    _check_columns("tasks", options.filters)
    drivers = not options.exclude_driver
    candidates, settled = index.narrow(session, options.filters, drivers=drivers)
    total = index.task_count(session, options.exclude_driver)
    checks = [
        (_TASK_GETTERS[c], p, v) for i, (c, p, v) in enumerate(options.filters) if i != settled
    ]
    limit = options.limit
    if not checks:  # the index answered: no attempt to look at beyond the first `limit`
        return list(candidates[:limit]), total, len(candidates)
    selected: list[TaskAttempt] = []
    matched = 0
    for attempt in candidates:
        if all(_matches(get(attempt), p, v) for get, p, v in checks):
            matched += 1
            if len(selected) < limit:
                selected.append(attempt)
    return selected, total, matched


def list_tasks(index: HistoryIndex, session: str | None, options: ListOptions) -> dict[str, object]:
    selected, total, matched = select_tasks(index, session, options)
    columns = TASK_COLUMNS + TASK_DETAIL_COLUMNS if options.detail else TASK_COLUMNS
    rows = []
    for attempt in selected:
        row = task_row(index, attempt, options.detail)
        rows.append({column: row.get(column) for column in columns})
    return _list_response(rows, total, matched)


_ENTITY_ROWS: Final = {
    "actors": ("actor", actor_row),
    "nodes": ("node", node_row),
    "workers": ("worker", worker_row),
    "placement_groups": ("placement_group", placement_group_row),
}


def _rows(index: HistoryIndex, resource: str, session: str | None, detail: bool) -> list[Row]:
    if resource == "jobs":
        return job_rows(index, session)
    kind, build = _ENTITY_ROWS[resource]
    entities: list[Entity] = index.entities(kind, session)
    return [build(index, entity, detail) for entity in entities]


def list_entities(
    index: HistoryIndex, resource: str, session: str | None, options: ListOptions
) -> dict[str, object]:
    _check_columns(resource, options.filters)
    rows = _rows(index, resource, session, options.detail)
    matched = [
        row
        for row in rows
        if all(c in row and _matches(row[c], p, v) for c, p, v in options.filters)
    ]
    return _list_response(matched[: options.limit], len(rows), len(matched))


def summarize_tasks(
    index: HistoryIndex, session: str | None, options: ListOptions
) -> dict[str, object]:
    """Ray's ``TaskSummaries.to_summary_by_func_name`` over every matching attempt."""
    summary_by = options.summary_by or "func_name"
    if summary_by not in ("func_name", "task_name"):
        raise BadRequestError(
            f"summary_by={summary_by!r} is not supported here; use func_name or task_name "
            "(lineage needs Ray's object references, which events do not carry)."
        )
    everything = attrs.evolve(options, limit=MAX_LIMIT * 1000)
    selected, total, matched = select_tasks(index, session, everything)
    summary: dict[str, dict[str, object]] = {}
    totals = {"NORMAL_TASK": 0, "ACTOR_CREATION_TASK": 0, "ACTOR_TASK": 0}
    for attempt in selected:
        key = task_name(attempt) or func_or_class_name(attempt)
        kind = attempt.task_type or "NORMAL_TASK"
        entry = summary.setdefault(
            key, {"func_or_class_name": key, "type": kind, "state_counts": {}}
        )
        counts = entry["state_counts"]
        assert isinstance(counts, dict)
        counts[attempt.state] = counts.get(attempt.state, 0) + 1
        if kind in totals:
            totals[kind] += 1
    result = {
        "node_id_to_summary": {
            "cluster": {
                "summary": summary,
                "total_tasks": totals["NORMAL_TASK"],
                "total_actor_tasks": totals["ACTOR_TASK"],
                "total_actor_scheduled": totals["ACTOR_CREATION_TASK"],
                "summary_by": "func_name",
            }
        }
    }
    return {
        "total": total,
        "num_after_truncation": total,
        "num_filtered": matched,
        "result": result,
        "partial_failure_warning": "",
        "warnings": None,
    }


def summarize_actors(
    index: HistoryIndex, session: str | None, options: ListOptions
) -> dict[str, object]:
    rows = _rows(index, "actors", session, False)
    summary: dict[str, dict[str, object]] = {}
    for row in rows:
        name = str(row["class_name"])
        entry = summary.setdefault(name, {"class_name": name, "state_counts": {}})
        counts = entry["state_counts"]
        assert isinstance(counts, dict)
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    result = {
        "node_id_to_summary": {
            "cluster": {"summary": summary, "total_actors": len(rows), "summary_by": "class"}
        }
    }
    return {
        "total": len(rows),
        "num_after_truncation": len(rows),
        "num_filtered": len(rows),
        "result": result,
        "partial_failure_warning": "",
        "warnings": None,
    }


RESOURCES: Final = ("tasks", "actors", "nodes", "workers", "placement_groups", "jobs")


def answer(index: HistoryIndex, session: str | None, path: str, query: str) -> tuple[int, bytes]:
    """(HTTP status, body) for a state API ``path`` under ``/api/v0/``, or 404."""
    resource = path.removeprefix("/api/v0/").strip("/")
    try:
        options = parse_options(query)
        if resource == "tasks":
            return 200, _envelope(list_tasks(index, session, options))
        if resource in RESOURCES:
            return 200, _envelope(list_entities(index, resource, session, options))
        if resource == "tasks/summarize":  # a scan of every attempt: kept until the next fold
            key = ("summarize_tasks", session, options)
            body = index.memo.get(key)
            if not isinstance(body, bytes):
                body = index.remember(key, _envelope(summarize_tasks(index, session, options)))
            return 200, body
        if resource == "actors/summarize":
            return 200, _envelope(summarize_actors(index, session, options))
    except BadRequestError as exc:
        return 400, error_body(str(exc))
    return 404, error_body(
        f"{path} is not served by trio-events history; it answers /api/v0/ "
        + ", ".join(RESOURCES)
        + ", tasks/summarize, actors/summarize and tasks/timeline."
    )
